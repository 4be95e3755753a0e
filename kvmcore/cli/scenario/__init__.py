"""Scenario files for ``kvmcore run``: ``schema`` (TOML in, validated dataclasses out),
``runner`` (each step applied to each arch's VM) and ``render`` (the side-by-side text)."""
