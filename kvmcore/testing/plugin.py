"""pytest plugin of the kvmcore conformance kit (filled in by the conformance work)."""
