"""Evaluation: completions of held-out rows through the sampler, scored by the rewards, as TRL names the metrics
(``reward``, ``rewards/<name>/mean``, ...), with a 95% confidence interval of each reward's mean. GRPOTrainer
evaluates its eval_dataset with it during training; ``r1fast eval`` evaluates a checkpoint alone."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from r1fast import rewards as reward_registry
from r1fast.trainer import validation

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def reward_names(reward_funcs: Sequence[str | Callable[..., list]]) -> list[str]:
    """The metric name of each reward: its registered name, or the callable's __name__ (reward<i> without one)."""
    return [f if isinstance(f, str) else getattr(f, "__name__", f"reward{i}") for i, f in enumerate(reward_funcs)]


def score_completions(reward_funcs: Sequence[Callable[..., list]], rows: Sequence[dict[str, Any]], g: int,
                      texts: list[str], completion_ids: list[list[int]]) -> torch.Tensor:  # fmt: skip
    """Every reward on the g completions of each row (row i's at [i * g, (i + 1) * g)), called as TRL calls them:
    ``f(prompts=, completions=, completion_ids=, **columns)``, each of the rows' columns repeated g times. Returns
    [N, F] float32, NaN where a reward returned None."""
    columns: dict[str, list[Any]] = {"completion_ids": completion_ids}
    for key in dict.fromkeys(k for row in rows for k in row if k != "prompt"):  # every column, in order
        columns[key] = [row.get(key) for row in rows for _ in range(g)]
    prompts = [row["prompt"] for row in rows for _ in range(g)]
    per_function, _ = reward_registry.score(list(reward_funcs), prompts, texts, **columns)
    return torch.tensor([[math.nan if v is None else v for v in row] for row in per_function],
                        dtype=torch.float32).reshape(len(texts), len(reward_funcs))  # fmt: skip


def rollout_metrics(rewards_per_func: torch.Tensor, names: Sequence[str], weights: Sequence[float] | None, g: int,
                    completion_ids: list[list[int]], finish_reasons: list[str]) -> dict[str, float]:  # fmt: skip
    """TRL's reward and completion metrics of N = rows * g completions: rewards_per_func [N, F] float32 (NaN:
    skipped), weights one per reward (None: 1 each), each row's g completions adjacent."""
    weights_t = torch.tensor(list(weights) if weights is not None else [1.0] * rewards_per_func.shape[1])
    total = torch.nansum(rewards_per_func * weights_t, dim=1)
    groups = total.view(-1, g)
    lengths = torch.tensor([len(c) for c in completion_ids], dtype=torch.float32)
    out = {
        "reward": total.mean().item(),
        "reward_std": groups.std(dim=1).mean().item() if g > 1 else 0.0,
        "frac_reward_zero_std": (groups.std(dim=1) == 0).float().mean().item() if g > 1 else 1.0,
        "completions/mean_length": lengths.mean().item(),
        "completions/min_length": lengths.min().item(),
        "completions/max_length": lengths.max().item(),
        "completions/clipped_ratio": sum(r == "length" for r in finish_reasons) / len(lengths),
        "tokens/generated": lengths.sum().item(),
    }
    for name, column in zip(names, rewards_per_func.T, strict=True):
        scored = column[~column.isnan()]
        out[f"rewards/{name}/mean"] = scored.mean().item() if len(scored) else math.nan
        out[f"rewards/{name}/std"] = scored.std().item() if len(scored) > 1 else math.nan
    return out


def confidence_interval(values: torch.Tensor, g: int) -> tuple[float, float]:
    """A 95% interval for the mean of one reward over rows * g completions ([N] float, NaN = skipped; a row's g
    completions adjacent). Rows are the independent draws: with g = 1 and 0/1 values the Wilson score interval
    (right at 0% and 100%), otherwise the normal interval of the per-row means. (nan, nan) when nothing was scored."""
    rows = values.view(-1, g)
    scored = ~rows.isnan()
    per_row = torch.where(scored, rows, 0.0).sum(1) / scored.sum(1).clamp(min=1)
    per_row = per_row[scored.any(1)].double()
    n = len(per_row)
    if n == 0:
        return math.nan, math.nan
    mean = per_row.mean().item()
    if g == 1 and bool(((per_row == 0) | (per_row == 1)).all()):
        z2 = Z_95 * Z_95
        center = (mean + z2 / (2 * n)) / (1 + z2 / n)
        half = Z_95 * math.sqrt(mean * (1 - mean) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return center - half, center + half
    half = Z_95 * per_row.std().item() / math.sqrt(n) if n > 1 else math.inf
    return mean - half, mean + half


@dataclass
class Evaluation:
    """What evaluate returns. metrics: TRL's names (rollout_metrics), plus ``rewards/<name>/ci_low`` and
    ``/ci_high`` (95%, confidence_interval); texts: the N = rows * g completions; rewards_per_func: [N, F] float32."""

    metrics: dict[str, float]
    texts: list[str]
    rewards_per_func: torch.Tensor


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokenizer: Any, rows: Sequence[dict[str, Any]],
             reward_funcs: Sequence[str | Callable[..., list]], config: Any, *, sampler: Any = None,
             names: Sequence[str] | None = None) -> Evaluation:  # fmt: skip
    """Completions of every row through the sampler (config.eval_sampling_params(): greedy and one per row by
    default), each row's prompt encoded as in training (validation.encode_prompt: config.prompt_template,
    max_prompt_length), scored by every reward.

    model: a Hugging Face causal LM the sampler runs; tokenizer as GRPOTrainer's; rows: dicts with "prompt" and
    the columns the rewards read; reward_funcs: registered names or callables; config: a GRPOConfig (its
    reward_weights weigh "reward"). sampler: an r1fast Sampler on `model` (default: a new one); names: the rewards'
    metric names (default: reward_names(reward_funcs)). Raises ValueError
    (a DatasetRowError naming the row) for a row that cannot be encoded."""
    from r1fast.sampler import Sampler

    funcs = [reward_registry.get(f) if isinstance(f, str) else f for f in reward_funcs]
    names = list(names) if names is not None else reward_names(reward_funcs)
    sampler = sampler or Sampler(model, tokenizer=tokenizer, block_size=config.sampler_block_size,
                                 kv_cache_memory=config.sampler_kv_cache_memory, fp32_head=config.fp32_lm_head)
    params = config.eval_sampling_params()
    prompt_ids = []
    for index, row in enumerate(rows):
        try:
            prompt_ids.append(validation.encode_prompt(tokenizer, row, config, sampler.max_model_len)[0])
        except (ValueError, TypeError) as e:
            raise validation.DatasetRowError(index, str(e), dataset="eval_dataset") from None
    groups = sampler.generate(prompt_ids, params)
    if config.free_kv_cache:
        sampler.free()
    completions = [c for group in groups for c in group.completions]
    completion_ids = [list(c.token_ids) for c in completions]
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in completion_ids]
    rewards_per_func = score_completions(funcs, rows, params.n, texts, completion_ids)
    metrics = rollout_metrics(rewards_per_func, names, config.reward_weights, params.n, completion_ids,
                              [c.finish_reason for c in completions])  # fmt: skip
    for name, column in zip(names, rewards_per_func.T, strict=True):
        metrics[f"rewards/{name}/ci_low"], metrics[f"rewards/{name}/ci_high"] = confidence_interval(column, params.n)
    return Evaluation(metrics, texts, rewards_per_func)
