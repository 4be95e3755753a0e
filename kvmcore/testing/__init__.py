"""kvmcore's conformance kit for arch plugins (a pytest plugin, entry point ``pytest11``)."""
