"""DeepSeek-R1's two rule-based rewards on r1fast's C++ rewards, for the hosts' reward-function signatures
(r1fast.integrations.verl.compute_score, r1fast.integrations.openrlhf.reward_func)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

from r1fast import rewards


def r1_rewards(
    completions: Sequence[str], golds: Sequence[Any], *, strict_format: bool = True, threads: int = 0
) -> tuple[list[float], list[float]]:
    """(accuracy, format) per completion, each 1.0 or 0.0: r1fast.rewards.accuracy_reward against golds (any value;
    str() of it) and format_reward (the R1 template; strict = open-r1's regex). A gold answer r1fast cannot parse
    scores accuracy 0.0, with a warning. The C++ work runs on ``threads`` threads (0 = all cores), GIL released.
    Raises ValueError when the lengths differ."""
    if len(golds) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    fmt = functools.partial(rewards.format_reward, strict=strict_format, threads=threads)
    acc = functools.partial(rewards.accuracy_reward, threads=threads)
    per_function, _ = rewards.score([acc, fmt], None, list(completions), ground_truth=list(golds))
    if any(row[0] is None for row in per_function):
        warnings.warn("r1fast: a gold answer r1fast cannot parse scores accuracy 0.0", stacklevel=3)
    return [row[0] or 0.0 for row in per_function], [row[1] for row in per_function]
