"""The exceptions kvmcore raises.

Every error names the input it refused and what was expected instead.
"""

from __future__ import annotations

import errno as _errno

#: errno names, including Linux's EHWPOISON (133), which Python's errno module lacks.
ERRNO_NAMES: dict[int, str] = {**_errno.errorcode, 133: "EHWPOISON"}


class KvmcoreError(Exception):
    """Base class of kvmcore's own errors (not raised directly)."""


class DecodeError(KvmcoreError, ValueError):
    """A raw syndrome is malformed or does not describe a guest memory fault.

    The message names the register and its value, e.g.
    ``esr=0x5a000000: EC 0x16 (HVC64) is not an abort``.
    """


class FaultContractError(KvmcoreError, TypeError):
    """An arch's fault type lacks a common field or has it with the wrong type.

    kvmcore's counterpart of the kernel's ``KVM_ASSERT_TYPE_IS`` build failure.
    The message names the plugin, the field, the expected type and the found type.
    """

    def __init__(self, plugin: str, field: str, expected: str, found: str) -> None:
        self.plugin = plugin
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(
            f"arch plugin {plugin!r} breaks the fault contract: field {field!r} "
            f"must be {expected}, found {found}"
        )


class PluginLoadError(KvmcoreError, RuntimeError):
    """An arch plugin could not be found, imported or registered."""


class PluginError(KvmcoreError, RuntimeError):
    """A plugin broke a hook call: it raised an exception the hook may not raise, returned
    something of the wrong type, or broke the hook's contract.

    Raised by the facade around every hook call (``kvmcore.Arch``), so one broken plugin
    costs only the calls that reach it: ``kvmcore run`` shows the error in that arch's column,
    ``kvmcore replay`` drops the plugin. ``.plugin`` names the plugin (its registered name, or
    ``kvmcore.defaults`` for the core's own implementations), ``.hook`` the hook and
    ``.problem`` what was wrong; ``__cause__`` is the plugin's own exception, if it raised one.
    """

    def __init__(self, plugin: str, hook: str, problem: str) -> None:
        self.plugin = plugin
        self.hook = hook
        self.problem = problem
        super().__init__(f"plugin {plugin!r}, hook {hook}: {problem}")


class KvmError(KvmcoreError, OSError):
    """A KVM-like call failed the way the kernel's ioctl would.

    ``.errno`` holds the errno the ioctl would set (``errno.EINVAL``, ``errno.EEXIST``...).
    """

    errno: int  # always set (OSError types it as optional)

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, f"{ERRNO_NAMES.get(err, str(err))}: {message}")

    def __str__(self) -> str:  # OSError's default prefixes "[Errno N]"; keep ours readable
        return f"[Errno {self.errno}] {self.strerror}"


class ScenarioError(KvmcoreError, ValueError):
    """A scenario file is malformed: names the file, the key path, the value and what was expected."""


def strerror(err: int) -> str:
    """The errno's symbolic name, as the kernel's headers spell it (``EFAULT``)."""
    return ERRNO_NAMES.get(abs(err), str(err)) if err else "0"


__all__ = [
    "DecodeError",
    "FaultContractError",
    "KvmError",
    "KvmcoreError",
    "PluginError",
    "PluginLoadError",
    "ScenarioError",
    "strerror",
]
