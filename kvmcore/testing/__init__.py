"""kvmcore's conformance kit for arch plugins (a pytest plugin, entry point ``pytest11``).

The core ships the tests every arch plugin must pass (SQLAlchemy's compliance-suite idea):

* ``pytest --kvmcore-conformance NAME`` runs :mod:`kvmcore.testing.suite` against the installed
  arch ``NAME``;
* a plugin's own test file runs the same suite with ``from kvmcore.testing.suite import *`` and a
  ``kvmcore_arch_plugin`` fixture naming the arch (or returning the plugin module);
* the fixtures ``kvmcore_arch``, ``kvmcore_vm`` (a fresh VM with :func:`setup_default_layout`'s
  memslots), ``kvmcore_layout`` and ``kvmcore_vcpu`` serve a plugin's other tests too.

The plugin module is :mod:`kvmcore.testing.plugin`; ``docs/writing-an-arch-plugin.md`` lists the
checks and what each accepts.
"""

from kvmcore.testing._kit import (
    KVM_RUN_LAYOUT,
    Layout,
    kvm_run_fields,
    resolve_arch,
    setup_default_layout,
)

__all__ = ["KVM_RUN_LAYOUT", "Layout", "kvm_run_fields", "resolve_arch", "setup_default_layout"]
