"""Rule-based rewards computed in C++ (r1fast._C), with TRL's reward-function signature.

Each reward is callable as ``f(prompts, completions, **dataset_columns) -> list[float | None]``; completions may be
strings or chat-message lists (the last message's content is scored). Batch calls release the GIL and run on a
thread pool (``threads``; 0 = all cores).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from r1fast import _C


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or a chat-message list whose last message holds the content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, bytes):
        return completion.decode("utf-8", errors="replace")
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence) and completion:
        last = completion[-1]
        return str(last.get("content", "")) if isinstance(last, dict) else str(last)
    return "" if completion is None else str(completion)


def _texts(completions: Sequence[Any]) -> list[str]:
    return [completion_text(c) for c in completions]


def format_reward(
    prompts: Sequence[Any] | None, completions: Sequence[Any], *, strict: bool = True, threads: int = 0, **_: Any
) -> list[float]:
    """1.0 where a completion follows the R1 template ``<think>..</think><answer>..</answer>``, else 0.0.

    strict: open-r1's regex semantics (``^<think>\\n.*?\\n</think>\\n<answer>\\n.*?\\n</answer>$``, DOTALL |
    MULTILINE). Lenient: whitespace-tolerant, each tag exactly once, nothing but whitespace after the answer.
    """
    return _C.format_reward_batch(_texts(completions), strict, threads)


def tag_count_reward(
    prompts: Sequence[Any] | None, completions: Sequence[Any], *, threads: int = 0, **_: Any
) -> list[float]:
    """0.25 for each of ``<think>\\n``, ``\\n</think>\\n``, ``\\n<answer>\\n``, ``\\n</answer>`` found exactly once."""
    return _C.tag_count_reward_batch(_texts(completions), threads)
