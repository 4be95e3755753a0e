"""kvmcore-arm64: the arm64 architecture plugin for kvmcore."""
