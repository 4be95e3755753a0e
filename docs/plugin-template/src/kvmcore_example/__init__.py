"""kvmcore-example: the smallest complete arch plugin for kvmcore."""
