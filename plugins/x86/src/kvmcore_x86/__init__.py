"""kvmcore-x86: the x86 architecture plugin for kvmcore."""
