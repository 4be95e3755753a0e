"""kvmcore-arm64: the arm64 architecture plugin for kvmcore.

The hooks are in :mod:`kvmcore_arm64.plugin` (the entry point, loaded by kvmcore on demand);
the decoder is importable from here without loading them::

    from kvmcore_arm64 import decode_esr
    decode_esr(0x93810046).fault_kind   # 'translation'

The decoder (:mod:`kvmcore_arm64.esr`) is imported on first use of these names (PEP 562):
loading the plugin to list it does not need it.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvmcore_arm64.esr import EsrInfo, decode_esr, decode_guest_abort

__all__ = ["EsrInfo", "decode_esr", "decode_guest_abort"]


def __getattr__(name: str) -> Any:
    """A name of ``__all__``, from :mod:`kvmcore_arm64.esr` (then an ordinary attribute)."""
    if name not in __all__:
        raise AttributeError(f"module 'kvmcore_arm64' has no attribute {name!r}")
    from kvmcore_arm64 import esr

    value = getattr(esr, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
