"""One sequence being generated: its tokens, its KV block table, its sampling state."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from r1fast.sampler.sampling import SamplingParams


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False, slots=True)  # a sequence is itself: list.remove() and `in` compare identities, not token lists
class Sequence:
    """token_ids = prompt + generated; the first num_cached tokens have their K/V in the blocks of block_table.
    While it decodes, its newest tokens are in the sampler's completion buffer (DecodeRows.tokens) and token_ids
    (with num_cached) catches up where the host reads it: stop strings, preemption, finishing.

    A sequence with fork > 1 is a group parent: once its prompt is prefilled, it splits into `fork` children
    that share its prompt blocks. seed: keys the noise of its draws (r1fast.sampler.sampling.sample).
    block_hashes: prefix-cache names of its first full blocks (see
    block_manager.block_hash); num_named_blocks: how many of its blocks were offered to the prefix cache.
    max_length: the length at which it ends at the latest (prompt + max_tokens, at most max_model_len; set by
    Scheduler.add). logprobs: its completion tokens' log-probs, filled when it finishes.
    """

    seq_id: int
    prompt_index: int
    token_ids: list[int]
    num_prompt_tokens: int
    params: SamplingParams
    seed: int
    child_index: int = 0
    fork: int = 1
    block_table: list[int] = field(default_factory=list)
    num_cached: int = 0
    block_hashes: list[bytes] = field(default_factory=list)
    num_named_blocks: int = 0
    logprobs: list[float] = field(default_factory=list)
    status: Status = Status.WAITING
    finish_reason: str | None = None
    max_length: int = 0

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def completion_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_new_tokens(self) -> int:
        """Tokens whose K/V the next forward computes (the whole context after a preemption)."""
        return len(self.token_ids) - self.num_cached
