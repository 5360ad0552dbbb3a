"""Everything that can be checked before step 1: every dataset row, the config against the model, the output folder.

A problem is an InputError (a ValueError) with a one-line message naming the key, or for a dataset row a
DatasetRowError naming the row (the CLI turns the row's index into file:line).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1fast.trainer.config import GRPOConfig, apply_template

TRAINABLE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# What the trainer passes every reward anyway: never a dataset column a reward could miss.
GIVEN_TO_REWARDS = ("prompts", "completions", "completion_ids")


class InputError(ValueError):
    """A problem with what the user gave (config, dataset, model, output folder, checkpoint), found before step 1.
    The message is one line."""


class DatasetRowError(InputError):
    """Bad dataset rows: `index` is the first (0-based), `reason` what is wrong with it, `others` the indices of the
    other bad rows, `dataset` the dataset's name ("train_dataset", "eval_dataset")."""

    def __init__(self, index: int, reason: str, others: Sequence[int] = (), dataset: str = "train_dataset") -> None:
        self.index, self.reason, self.others, self.dataset = index, reason, list(others), dataset
        name = lambda i: f"{dataset}[{i}]"  # noqa: E731
        super().__init__(self.describe(name, name))

    def describe(self, where: Callable[[int], str], other: Callable[[int], str]) -> str:
        """The one-line message, the first bad row named by where(index) (e.g. "data.jsonl:138"), the next ones by
        other(index) (e.g. "line 140")."""
        text = f"{where(self.index)}: {self.reason}"
        if self.others:
            shown = ", ".join(other(i) for i in self.others[:3]) + (", ..." if len(self.others) > 3 else "")
            text += f" (and {len(self.others)} more bad row{'s' if len(self.others) > 1 else ''}: {shown})"
        return text

    def __reduce__(self):  # picklable (exceptions travel between ranks)
        return DatasetRowError, (self.index, self.reason, self.others, self.dataset)


def check_row_shape(row: Any) -> None:
    """A row is a dict whose "prompt" is a non-empty string or a list of chat messages (dicts). ValueError for a
    missing or empty prompt, TypeError for one of another type."""
    if not isinstance(row, dict) or "prompt" not in row:
        raise ValueError(f"each row must be an object with a 'prompt' column, got {row!r:.60}")
    prompt = row["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("the prompt is empty")
    elif not (isinstance(prompt, Sequence) and prompt and all(isinstance(m, dict) for m in prompt)):
        raise TypeError(f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__} "
                        f"{prompt!r:.40}")  # fmt: skip


def check_rows_shape(rows: Sequence[Any], name: str = "train_dataset") -> None:
    """check_row_shape on every row (no tokenizer or model needed); DatasetRowError naming the first bad row of the
    dataset called `name`."""
    if len(rows) == 0:
        raise InputError(f"{name} is empty")
    bad = []
    for index in range(len(rows)):
        try:
            check_row_shape(rows[index])
        except (ValueError, TypeError) as e:
            bad.append((index, str(e)))
    _raise_for(bad, name)


def _raise_for(bad: list[tuple[int, str]], name: str = "train_dataset") -> None:
    """DatasetRowError for a list of (row index, reason), naming the first; nothing when the list is empty."""
    if bad:
        raise DatasetRowError(bad[0][0], bad[0][1], [i for i, _ in bad[1:]], name)


def tokenize_prompt(tokenizer: Any, prompt: str | list[dict[str, Any]], completion: Any = None) -> list[int]:
    """Token ids of a prompt as TRL tokenizes it: a string through ``tokenizer.encode`` (special tokens included), a
    chat (a list of {"role", "content"} messages) through the tokenizer's chat template with the generation prompt.
    With a completion (chat messages), the prompt and the completion rendered together, without a generation
    prompt. ValueError when a chat meets a tokenizer without a chat template."""
    if isinstance(prompt, str):
        return list(tokenizer.encode(prompt))
    if not hasattr(tokenizer, "apply_chat_template") or getattr(tokenizer, "chat_template", "") is None:
        raise ValueError("the prompt is a chat (a list of messages) but the tokenizer has no chat template")
    messages = list(prompt) + list(completion or [])
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=completion is None, tokenize=True,
                                        return_dict=True)  # fmt: skip
    return list(out["input_ids"])


def encode_prompt(tokenizer: Any, row: Any, config: GRPOConfig, max_model_len: int) -> tuple[list[int], bool]:
    """A dataset row's prompt as token ids, as TRL tokenizes it, and whether max_prompt_length truncated it.

    The prompt goes into config.prompt_template (a name of PROMPT_TEMPLATES, "r1", or a string with "{prompt}"; for
    a chat a named template's instruction becomes its system message; see apply_template), then through
    tokenize_prompt. Prompts longer than max_prompt_length lose tokens from the left (as TRL truncates).
    Raises TypeError for a prompt of the wrong type, ValueError for a missing or empty prompt or one that does not
    fit max_model_len with max_completion_length.
    """
    check_row_shape(row)
    ids = tokenize_prompt(tokenizer, apply_template(config.prompt_template, row["prompt"]))
    prompt = row["prompt"]
    truncated = config.max_prompt_length is not None and len(ids) > config.max_prompt_length
    if truncated:
        ids = ids[-config.max_prompt_length :]
    if not ids:
        raise ValueError(f"the prompt {prompt!r:.60} tokenizes to nothing")
    room = max_model_len - config.max_completion_length
    if len(ids) > room:
        raise ValueError(f"a prompt of {len(ids)} tokens does not fit max_model_len={max_model_len} with "
                         f"max_completion_length={config.max_completion_length}; set max_prompt_length <= {room}")
    return ids, truncated


def check_config_against_model(config: GRPOConfig, model: torch.nn.Module, max_model_len: int,
                               reward_count: int) -> None:  # fmt: skip
    """The config's keys that depend on the model or the rewards: context length, dtype, device, reward weights."""
    if config.max_completion_length >= max_model_len:
        raise InputError(f"max_completion_length={config.max_completion_length} leaves no room for a prompt in the "
                         f"model's context of {max_model_len} tokens (max_position_embeddings)")  # fmt: skip
    if config.reward_weights is not None and len(config.reward_weights) != reward_count:
        raise InputError(f"reward_weights has {len(config.reward_weights)} entries for {reward_count} rewards")
    check_model(model, config.loss_backend)


def check_model(model: torch.nn.Module, loss_backend: str) -> None:
    """The model's LM head can be trained here: float32/bfloat16/float16 weights on cpu or cuda, and the loss backend
    runs there."""
    weight = model.get_output_embeddings().weight
    if weight.dtype not in TRAINABLE_DTYPES:
        raise InputError(f"the model's weights are {weight.dtype}; r1fast trains float32, bfloat16 or float16 weights")
    if weight.device.type not in ("cpu", "cuda"):
        raise InputError(f"the model is on {weight.device}; r1fast trains on cpu or cuda")
    if loss_backend == "triton" and weight.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise InputError("loss_backend='triton' needs the model on CUDA (or TRITON_INTERPRET=1 on CPU)")


def check_output_dir(output_dir: str | None) -> None:
    """The output folder can be created and written."""
    if output_dir is None:
        return
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise InputError(f"output_dir {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"output_dir {path} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise InputError(f"output_dir {path} is not writable")


@dataclass
class DatasetReport:
    """What check_dataset found: rows, and prompts max_prompt_length truncates."""

    rows: int
    truncated: int


def check_dataset(rows: Sequence[Any], tokenizer: Any, config: GRPOConfig, max_model_len: int, vocab_size: int,
                  reward_funcs: Sequence[Callable[..., list]], reward_names: Sequence[str],
                  name: str = "train_dataset") -> DatasetReport:  # fmt: skip
    """Every row, in one pass: its prompt encodes (encode_prompt), its token ids are in the model's vocabulary, and
    it holds every column each reward needs (required_columns). Raises DatasetRowError naming the first bad row of
    the dataset called `name`."""
    bad: list[tuple[int, str]] = []
    truncated = 0
    probed: dict[frozenset[str], str | None] = {}  # rows with the same non-null columns miss the same ones
    for index in range(len(rows)):
        row = rows[index]
        try:
            ids, cut = encode_prompt(tokenizer, row, config, max_model_len)
        except Exception as e:  # the user's data through the user's tokenizer: any failure names the row
            bad.append((index, _one_line(e)))
            continue
        truncated += cut
        if max(ids) >= vocab_size or min(ids) < 0:
            bad.append((index, f"the prompt has token id {max(ids)}, outside the model's vocabulary of {vocab_size} "
                               "(tokenizer and model do not match)"))  # fmt: skip
            continue
        keys = frozenset(k for k, v in row.items() if v is not None)
        if keys not in probed:
            probed[keys] = _missing_column(row, reward_funcs, reward_names)
        if probed[keys] is not None:
            bad.append((index, probed[keys]))
    _raise_for(bad, name)
    return DatasetReport(len(rows), truncated)


def required_columns(fn: Callable[..., list]) -> list[str]:
    """The dataset columns a user reward names as parameters without a default (TRL passes columns by name)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or an object without a signature: nothing to read
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters
            if p.kind in kinds and p.default is inspect.Parameter.empty and p.name not in GIVEN_TO_REWARDS]  # fmt: skip


def _missing_column(row: dict[str, Any], reward_funcs: Sequence[Callable[..., list]],
                    reward_names: Sequence[str]) -> str | None:  # fmt: skip
    """Why a row with these columns cannot be scored, or None. r1fast's own rewards are asked directly (one call on
    an empty completion: they raise TypeError naming the column they miss, see r1fast.rewards); a user's reward by
    its signature."""
    columns = {k: [v] for k, v in row.items() if k != "prompt" and v is not None}  # a null column is a missing one
    for fn, name in zip(reward_funcs, reward_names, strict=True):
        if getattr(fn, "__module__", None) == "r1fast.rewards":
            try:
                fn(prompts=[row["prompt"]], completions=[""], **{"completion_ids": [[]], **columns})
            except TypeError as e:
                return f"reward '{name}' cannot score this row: {_one_line(e)}"
            continue
        missing = [c for c in required_columns(fn) if row.get(c) is None]
        if missing:
            return f"reward '{name}' needs the column(s) {missing}, which this row lacks"
    return None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if isinstance(e, (ValueError, TypeError)) else f"{type(e).__name__}: {text}"
