"""Triton kernels of r1fast, installed as the package ``r1fast.kernels``.

Kernels assume inputs validated by the public functions in ``r1fast`` (see r1fast/loss.py, r1fast/sampler/).
"""
