"""The ``kvmcore`` command and what it runs: ``main`` (argument parsing, ``plugins`` and
``decode``), ``scenario/`` (the TOML schema, the runner, the text rendering of ``run``),
``replay`` (trace input and its summary) and ``format`` (text and JSON forms they share).

Tools use the model and the plugin machinery through the public ``kvmcore`` API; nothing in
the model or the machinery imports them.
"""

from kvmcore.cli.main import main

__all__ = ["main"]
