"""kvmcore's real-KVM backend: the running kernel's ``/dev/kvm`` driven with the calls the model
takes (x86-64 hosts). Only the tools (``kvmcore check-host``) import it; the model and the arch
plugins never do. See ``docs/check-host.md``."""
