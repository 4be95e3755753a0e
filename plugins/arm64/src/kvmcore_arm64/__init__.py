"""kvmcore-arm64: the arm64 architecture plugin for kvmcore.

The hooks are in :mod:`kvmcore_arm64.plugin` (the entry point, loaded by kvmcore on demand);
the decoder is importable from here without loading them::

    from kvmcore_arm64 import decode_esr
    decode_esr(0x93810046).fault_kind   # 'translation'
"""

from kvmcore_arm64.esr import EsrInfo, decode_esr, decode_guest_abort

__all__ = ["EsrInfo", "decode_esr", "decode_guest_abort"]
