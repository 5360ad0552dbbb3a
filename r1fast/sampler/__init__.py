"""The paged KV-cache sampler: G completions per prompt on the trainer's own weights."""

from r1fast.sampler.sampler import Completion, Group, Sampler
from r1fast.sampler.sampling import SamplingParams

__all__ = ["Completion", "Group", "Sampler", "SamplingParams"]
