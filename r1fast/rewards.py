"""Rule-based rewards computed in C++ (r1fast._C), with TRL's reward-function signature.

Each reward is callable as ``f(prompts, completions, **dataset_columns) -> list[float | None]``; completions may be
strings, bytes, or chat-message lists (the last message's content is scored). Batch calls release the GIL and run
on a thread pool (``threads``; 0 = all cores); results do not depend on the thread count.

Any Python string is accepted, lone surrogates included: the C++ side reads str objects as UTF-8 in place,
encodes a str with lone surrogates with ``surrogatepass``, and decodes every invalid byte as U+FFFD. The work per
sample is bounded in C++ (answer length, nesting depth, big-integer size, parse steps), so no input hangs a reward.

Registry: ``names()``, ``get(name)``, ``register(name, fn)``; ``score(funcs, prompts, completions, weights,
**columns)`` runs built-in names and user Python functions side by side and returns per-function rewards and
their weighted sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from r1fast import _C

RewardFunc = Callable[..., list]

GOLD_COLUMNS = ("solution", "answer", "ground_truth", "gold")


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


def _encode(value: Any) -> str | bytes:
    """A completion or column value as str or bytes for r1fast._C (which reads str in place and encodes a str with
    lone surrogates with 'surrogatepass'; invalid UTF-8 decodes as U+FFFD in C++)."""
    if type(value) is str or isinstance(value, bytes):
        return value
    return completion_text(value)


def _texts(completions: Sequence[Any]) -> list[str | bytes]:
    return [c if type(c) is str else _encode(c) for c in completions]


def _check_threads(threads: int) -> int:
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ValueError(f"threads must be an int >= 0 (0 = all cores), got {threads!r}")
    return threads


def _column(name: str, values: Any, n: int) -> list:
    """A per-sample column: a sequence of n values, or one value broadcast to all samples."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        return [values] * n
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} completions")
    return list(values)


def _gold_column(columns: dict[str, Any], n: int) -> list:
    for name in GOLD_COLUMNS:
        if columns.get(name) is not None:
            return _column(name, columns[name], n)
    raise TypeError(f"accuracy needs the gold answers in a dataset column, one of {GOLD_COLUMNS}")


# --------------------------------------------------------------------------------------------------- format


def format_reward(
    prompts: Sequence[Any] | None, completions: Sequence[Any], *, strict: bool = True, threads: int = 0, **_: Any
) -> list[float]:
    """1.0 where a completion follows the R1 template ``<think>..</think><answer>..</answer>``, else 0.0.

    strict: open-r1's regex semantics (``^<think>\\n.*?\\n</think>\\n<answer>\\n.*?\\n</answer>$``, DOTALL |
    MULTILINE). Lenient: whitespace-tolerant, each tag exactly once, nothing but whitespace after the answer.
    """
    return _C.format_reward_batch(_texts(completions), bool(strict), _check_threads(threads))


def tag_count_reward(
    prompts: Sequence[Any] | None, completions: Sequence[Any], *, threads: int = 0, **_: Any
) -> list[float]:
    """0.25 for each of ``<think>\\n``, ``\\n</think>\\n``, ``\\n<answer>\\n``, ``\\n</answer>`` found exactly once."""
    return _C.tag_count_reward_batch(_texts(completions), _check_threads(threads))


# ------------------------------------------------------------------------------------------------- accuracy


def _correctness(completions: Sequence[Any], columns: dict[str, Any], rel_tol: float, threads: int) -> list[float]:
    if not (isinstance(rel_tol, (int, float)) and math.isfinite(rel_tol) and rel_tol >= 0):
        raise ValueError(f"rel_tol must be a finite float >= 0, got {rel_tol!r}")
    golds = [_encode("" if g is None else str(g)) for g in _gold_column(columns, len(completions))]
    return _C.accuracy_batch(_texts(completions), golds, float(rel_tol), _check_threads(threads))


def accuracy_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    *,
    rel_tol: float = 0.0,
    threads: int = 0,
    **columns: Any,
) -> list[float | None]:
    """1.0 where the completion's final answer equals the gold answer, 0.0 where not, None where the gold answer
    cannot be parsed (empty, longer than 2048 bytes, or with unbalanced braces).

    The gold answer comes from the dataset column ``solution`` (open-r1), ``answer``, ``ground_truth`` or ``gold``
    (the first present) and goes through the same extraction as the completion: every ``\\boxed{}`` of the final
    answer (several boxes are a list), ``#### x``, ``... answer is x`` / ``Answer: x``, a concluding sentence, the
    last math span, or a bare answer; inside the last ``<answer>`` block when there is one, never inside
    ``<think>``. Comparison: numbers exactly as rationals (surds and pi multiples too), expressions exactly or at
    random points in complex long double, equations as equations, one-variable inequalities as intervals, lists and
    sets order-free, tuples in order, matrices element-wise; a decimal only as a correct rounding with >= 6
    significant digits of an exact value, or within ``rel_tol`` (relative, default 0: off). When it cannot tell, it
    says 0.0: several candidate answers for one gold answer score 0. See README "Rewards".
    Raises TypeError without a gold column, ValueError on a length mismatch or a bad ``rel_tol``.
    """
    scores = _correctness(completions, columns, rel_tol, threads)
    return [None if s < 0 else s for s in scores]


def extract_answer(text: Any) -> str:
    """The final answer the accuracy reward reads from a completion ('' when there is none)."""
    raw = text if isinstance(text, bytes) else completion_text(text).encode("utf-8", "surrogatepass")
    return _C.extract_answer(raw).decode("utf-8", "replace")


def answers_equal(gold: str, predicted: str, *, rel_tol: float = 0.0) -> bool:
    """Whether two already-extracted answers are equal under the accuracy reward's rules."""
    def raw(s: Any) -> bytes:
        return s if isinstance(s, bytes) else str(s).encode("utf-8", "surrogatepass")

    return _C.answers_equal(raw(gold), raw(predicted), float(rel_tol))


# ----------------------------------------------------------------------------------------- open-r1 family


def reasoning_steps_reward(
    prompts: Sequence[Any] | None, completions: Sequence[Any], *, threads: int = 0, **_: Any
) -> list[float]:
    """open-r1's reasoning-steps reward: min(1, k / 3) for k matches of
    ``(Step \\d+:|^\\d+\\.|\\n-|\\n\\*|First,|Second,|Next,|Finally,)`` (no MULTILINE; ``\\d`` ASCII here)."""
    return _C.reasoning_steps_batch(_texts(completions), _check_threads(threads))


def len_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    *,
    rel_tol: float = 0.0,
    threads: int = 0,
    **columns: Any,
) -> list[float]:
    """Kimi 1.5's length reward as open-r1 computes it, over the whole batch.

    With L the completions' lengths in characters, lambda = 0.5 - (len - min L) / (max L - min L); a correct
    completion gets lambda, a wrong one min(0, lambda); all 0.0 when every length is equal. A sample whose gold
    answer cannot be parsed counts as correct (open-r1 skips it the same way).
    """
    texts = [completion_text(c) for c in completions]
    if not texts:
        return []
    correct = [s != 0.0 for s in _correctness(completions, columns, rel_tol, threads)]
    lengths = [len(t) for t in texts]
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(texts)
    out = []
    for length, ok in zip(lengths, correct, strict=True):
        lam = 0.5 - (length - lo) / (hi - lo)
        out.append(float(lam if ok else min(0.0, lam)))
    return out


def cosine_scaled_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    *,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    max_len: int = 1000,
    rel_tol: float = 0.0,
    threads: int = 0,
    **columns: Any,
) -> list[float]:
    """open-r1's cosine-scaled length reward: with c = cos(pi * len / max_len) (len in characters, not clamped, as
    in open-r1), a correct completion gets min_value_correct + (max_value_correct - min_value_correct)(1 + c)/2
    and a wrong one max_value_wrong + (min_value_wrong - max_value_wrong)(1 + c)/2; 1.0 where the gold answer
    cannot be parsed."""
    if max_len <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    scores = _correctness(completions, columns, rel_tol, threads)
    out = []
    for completion, s in zip(completions, scores, strict=True):
        if s < 0:
            out.append(1.0)
            continue
        cosine = math.cos(len(completion_text(completion)) / max_len * math.pi)
        lo, hi = (min_value_correct, max_value_correct) if s > 0 else (max_value_wrong, min_value_wrong)
        out.append(float(lo + 0.5 * (hi - lo) * (1.0 + cosine)))
    return out


def soft_overlong_punishment_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    *,
    completion_ids: Sequence[Sequence[int]] | None = None,
    max_completion_len: int = 16384,
    soft_punish_cache: int = 4096,
    **_: Any,
) -> list[float]:
    """DAPO's soft overlong punishment (open-r1): with L_max = max_completion_len, L_cache = soft_punish_cache and
    l the completion's length in tokens (TRL passes ``completion_ids``): 0 for l <= L_max - L_cache,
    (L_max - L_cache - l) / L_cache up to L_max, -1 beyond."""
    if completion_ids is None:
        raise TypeError("soft_overlong_punishment_reward needs completion_ids (TRL passes them)")
    if not 0 < soft_punish_cache <= max_completion_len:
        raise ValueError("need 0 < soft_punish_cache <= max_completion_len")
    free = max_completion_len - soft_punish_cache
    out = []
    for ids in completion_ids:
        n = len(ids)
        if n <= free:
            out.append(0.0)
        elif n <= max_completion_len:
            out.append((free - n) / soft_punish_cache)
        else:
            out.append(-1.0)
    return out


def repetition_penalty_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    *,
    ngram_size: int = 3,
    max_penalty: float = -1.0,
    threads: int = 0,
    **_: Any,
) -> list[float]:
    """open-r1's n-gram repetition penalty (English mode): words = ``text.lower().split()``, reward =
    (1 - distinct n-grams / n-grams) * max_penalty; 0.0 for an empty text or fewer than ngram_size words.
    Raises ValueError if max_penalty > 0 or ngram_size is not in [1, 64]."""
    if max_penalty > 0:
        raise ValueError(f"max_penalty {max_penalty} should not be positive")
    if not isinstance(ngram_size, int) or not 1 <= ngram_size <= 64:
        raise ValueError(f"ngram_size must be an int in [1, 64], got {ngram_size!r}")
    lowered = [completion_text(c).lower() for c in completions]
    return _C.repetition_penalty_batch(lowered, ngram_size, float(max_penalty), _check_threads(threads))


# --------------------------------------------------------------------------------------- language, countdown

LANGUAGES = ("en", "es", "de", "fr", "zh", "ja", "ko", "ru", "ar", "el", "he", "hi", "th")


def language_consistency_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    *,
    language: str | Sequence[str] = "en",
    think_only: bool = True,
    threads: int = 0,
    **_: Any,
) -> list[float]:
    """DeepSeek-R1's language-consistency reward: the share of the chain of thought's words in the target language.

    language: one ISO 639-1 code for all samples or one per sample (a dataset column named ``language`` works),
    one of LANGUAGES. think_only: score only the ``<think>`` block when there is one. Words: runs of letters of one
    script (Unicode-aware; digits, punctuation and symbols are not words); Han/Hiragana/Katakana count one word
    per character; en/es/de/fr are separated with embedded word lists and alphabets (see
    csrc/rewards/language.hpp). 0.0 for a text without words. Raises ValueError for an unsupported code.
    """
    langs = _column("language", language, len(completions))
    for lang in langs:
        if lang not in LANGUAGES:
            raise ValueError(f"unsupported language {lang!r}; supported: {LANGUAGES}")
    return _C.language_consistency_batch(_texts(completions), langs, bool(think_only), _check_threads(threads))


def countdown_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    *,
    target: Any = None,
    nums: Any = None,
    format_score: float = 0.1,
    threads: int = 0,
    **columns: Any,
) -> list[float]:
    """TinyZero's Countdown reward: 1.0 when the last ``<answer>`` block is an expression over + - * / ** ( ) that
    uses each of ``nums`` exactly once and equals ``target`` (exact rational arithmetic, our own parser, never
    eval); ``format_score`` when there is an answer block but it is wrong; 0.0 without one.
    Columns: ``target`` (int per sample) and ``nums`` (list of ints per sample; ``numbers`` also accepted)."""
    if nums is None:
        nums = columns.get("numbers")
    if target is None or nums is None:
        raise TypeError("countdown needs the dataset columns target and nums")
    n = len(completions)
    targets = [int(t) for t in _column("target", target, n)]
    if n and isinstance(nums, Sequence) and nums and not isinstance(nums[0], Sequence):
        nums = [nums] * n  # one list of numbers for every sample
    numbers = [[int(x) for x in row] for row in _column("nums", nums, n)]
    return _C.countdown_batch(_texts(completions), numbers, targets, float(format_score), _check_threads(threads))


# --------------------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, RewardFunc] = {
    "format": format_reward,
    "tag_count": tag_count_reward,
    "accuracy": accuracy_reward,
    "reasoning_steps": reasoning_steps_reward,
    "length": len_reward,
    "cosine_scaled": cosine_scaled_reward,
    "soft_overlong": soft_overlong_punishment_reward,
    "repetition_penalty": repetition_penalty_reward,
    "language_consistency": language_consistency_reward,
    "countdown": countdown_reward,
}


def names() -> list[str]:
    """The registered reward names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> RewardFunc:
    """The reward function registered as ``name``; ValueError for an unknown name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; registered: {names()}") from None


def register(name: str, fn: RewardFunc, *, overwrite: bool = False) -> None:
    """Registers a user reward ``fn(prompts=..., completions=..., **columns) -> list[float | None]`` (TRL's
    signature; called with keywords) under ``name``."""
    if not callable(fn):
        raise TypeError(f"reward {name!r} must be callable")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"reward {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = fn


def score(
    funcs: Sequence[str | RewardFunc],
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    weights: Sequence[float] | None = None,
    **columns: Any,
) -> tuple[list[list[float | None]], list[float | None]]:
    """Runs several rewards (registered names or callables) and combines them.

    Each is called as TRL calls a reward function: ``f(prompts=..., completions=..., **columns)``, so a TRL reward
    written as ``def f(completions, **kwargs)`` works unchanged.

    Returns (per_function, total): per_function[i][f] is reward f of completion i (None where it skipped the
    sample), total[i] the weighted sum over the rewards that scored it (None when none did), as TRL sums with
    nansum. Raises ValueError when weights do not match funcs or a reward returns the wrong number of values.
    """
    fns = [get(f) if isinstance(f, str) else f for f in funcs]
    w = [1.0] * len(fns) if weights is None else [float(x) for x in weights]
    if len(w) != len(fns):
        raise ValueError(f"{len(w)} weights for {len(fns)} reward functions")
    n = len(completions)
    columns_out = []
    for fn in fns:
        values = list(fn(prompts=prompts, completions=completions, **columns))  # keywords, as TRL calls them
        if len(values) != n:
            raise ValueError(f"reward {getattr(fn, '__name__', fn)!r} returned {len(values)} values for {n} samples")
        columns_out.append([None if v is None else float(v) for v in values])
    per_function = [[col[i] for col in columns_out] for i in range(n)]
    total: list[float | None] = []
    for row in per_function:
        scored = [wi * v for wi, v in zip(w, row, strict=True) if v is not None]
        total.append(sum(scored) if scored else None)
    return per_function, total
