"""The model of the kernel: ``virt/kvm`` and the parts of ``mm`` a guest fault touches.

Each module is named after the kernel file (or concept) it mirrors:

=========================  =====================================================================
``kvm_main.py``            ``virt/kvm/kvm_main.c``: the VM and vCPU, ``KVM_SET_USER_MEMORY_REGION2``
                           (``kvm_set_memory_region()``), ``KVM_ENABLE_CAP``, the fault pipeline
``memslot.py``             the memslot set and ``search_memslots()`` (``include/linux/kvm_host.h``)
``guest_memfd.py``         ``virt/kvm/guest_memfd.c``: ``kvm_gmem_create()``, ``kvm_gmem_bind()``
``memory_attributes.py``   ``KVM_SET_MEMORY_ATTRIBUTES`` (``kvm_vm_ioctl_set_mem_attributes()``)
``userfault.py``           KVM Userfault (v3, unmerged): the per-memslot bitmap
``faultin.py``             the generic fault-in helpers: ``__kvm_faultin_pfn()``,
                           ``kvm_prepare_memory_fault_exit()``, ``kvm_gmem_get_pfn()``...
``default_hooks.py``       the generic hook implementations arches override (the kernel's
                           ``__weak kvm_arch_*()`` functions)
``stage2.py``              the stage-2 / EPT / NPT / G-stage page table
``host_mm.py``             the VMM's address space: VMAs, ``mprotect``, ``munmap``,
                           ``memory_failure()`` (``mm/``)
=========================  =====================================================================

The model uses the plugin machinery (``kvmcore.plugin``) to reach the arch's hooks and never
imports the command-line tools. Its public names are re-exported by ``kvmcore``.
"""
