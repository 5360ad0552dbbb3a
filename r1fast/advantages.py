"""Group-relative advantages: a few tensor ops, so the reference is the implementation on every device."""

from r1fast.reference import group_advantages

__all__ = ["group_advantages"]
