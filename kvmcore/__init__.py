"""kvmcore: an executable model of KVM's architecture-neutral guest page-fault path."""

from kvmcore.errors import (
    DecodeError,
    FaultContractError,
    KvmcoreError,
    KvmError,
    PluginLoadError,
    ScenarioError,
)

__all__ = [
    "DecodeError",
    "FaultContractError",
    "KvmError",
    "KvmcoreError",
    "PluginLoadError",
    "ScenarioError",
]
