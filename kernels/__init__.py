"""Triton kernels for batch-1 decode: per file, the kernel, its launcher and a reference."""
