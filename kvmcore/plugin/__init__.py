"""The plugin machinery: how arch plugins are found, checked and called.

``loader.py`` (entry points, the per-arch plugin manager, the typed facade ``Arch``),
``contract.py`` (the fault contract, kvmcore's ``KVM_ASSERT_TYPE_IS``), ``tracing.py`` (hook
tracing), ``raw.py`` (the raw-register checks every decoder shares) and ``status.py`` (a row of
``kvmcore plugins``).

It depends only on the top-level ``abi``, ``hookspecs``, ``errors`` and value types, never on
the model or the tools. Plugin authors import none of it directly: use ``kvmcore``.
"""
