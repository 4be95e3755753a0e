"""kvmcore-riscv: the riscv architecture plugin for kvmcore."""
