"""The embedded demo: the DeepSeek-R1 recipe end to end on a task small enough for a CPU, with nothing downloaded.

Task: add two digits, answering in the R1 template (think block, then answer block). The policy is a 2-layer Qwen2
made here from a fixed seed, with a character tokenizer whose R1 tags are single tokens. A short cold-start SFT on
formatted solutions teaches the template and some of the sums; GRPO then trains with the C++ accuracy and format
rewards, group-relative advantages and the fused LM-head loss, sampling through the paged sampler on the policy's
own weights. Greedy accuracy and format over all 100 problems are measured after each phase.
"""

from __future__ import annotations

import math
import random
import re
import sys
import time
from dataclasses import dataclass
from typing import TextIO

import torch

from r1fast.sampler import Sampler, SamplingParams
from r1fast.trainer import GRPOConfig, GRPOTrainer

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
EOS = "<eos>"
CHARS = "0123456789+=\n"
OPERAND_LIMIT = 10  # operands in [0, 10): 100 problems


class CharTokenizer:
    """Characters of CHARS plus the R1 tags and <eos> as single tokens. encode raises ValueError on any other
    character; decode(ids, skip_special_tokens=True) drops <eos>."""

    def __init__(self) -> None:
        self.vocab = [EOS, *TAGS, *CHARS]
        self.ids = {piece: i for i, piece in enumerate(self.vocab)}
        self.eos_token_id = self.ids[EOS]
        self._pieces = re.compile("|".join(re.escape(p) for p in (EOS, *TAGS)) + "|.", re.DOTALL)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.ids[piece] for piece in self._pieces.findall(text)]
        except KeyError as e:
            raise ValueError(f"the demo tokenizer has no token for {e.args[0]!r}") from None

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(self.vocab[i] for i in ids if not (skip_special_tokens and i == self.eos_token_id))


def problems() -> list[dict[str, str]]:
    """Every problem as a dataset row: {"prompt": "3+7=", "solution": "10"}."""
    return [{"prompt": f"{a}+{b}=", "solution": str(a + b)} for a in range(OPERAND_LIMIT)
            for b in range(OPERAND_LIMIT)]  # fmt: skip


def solution_text(row: dict[str, str]) -> str:
    """The R1-formatted completion of a row (what cold-start SFT imitates)."""
    return f"<think>\n{row['prompt'][:-1]}\n</think>\n<answer>\n{row['solution']}\n</answer>"


def make_policy(tokenizer: CharTokenizer, seed: int = 0) -> torch.nn.Module:
    """A 2-layer Qwen2 (hidden 64, tied embeddings, ~0.1 M parameters) from a fixed seed."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                         pad_token_id=None)  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def cold_start_sft(model: torch.nn.Module, tokenizer: CharTokenizer, rows: list[dict[str, str]], *, steps: int,
                   batch_size: int = 32, learning_rate: float = 3e-3, seed: int = 0) -> list[float]:  # fmt: skip
    """Cross-entropy on the completion tokens of formatted solutions (prompt tokens are not trained). Returns the
    loss of every step."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    losses = []
    for _ in range(steps):
        batch = [rng.choice(rows) for _ in range(batch_size)]
        prompts = [tokenizer.encode(r["prompt"]) for r in batch]
        full = [tokenizer.encode(r["prompt"] + solution_text(r)) + [tokenizer.eos_token_id] for r in batch]
        length = max(map(len, full))
        ids = torch.zeros(len(full), length, dtype=torch.int64)
        labels = torch.full_like(ids, -100)
        for i, (p, f) in enumerate(zip(prompts, full, strict=True)):
            ids[i, : len(f)] = torch.tensor(f)
            labels[i, len(p) : len(f)] = torch.tensor(f[len(p) :])
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@dataclass
class Evaluation:
    accuracy: float  # share of problems whose greedy answer is right
    format: float  # share of greedy completions in the strict R1 template


def evaluate(model: torch.nn.Module, tokenizer: CharTokenizer, rows: list[dict[str, str]]) -> Evaluation:
    """Greedy completions of every row through the sampler, scored with the C++ accuracy and format rewards."""
    from r1fast import rewards

    sampler = Sampler(model, tokenizer=tokenizer, block_size=8)
    groups = sampler.generate([tokenizer.encode(r["prompt"]) for r in rows],
                              SamplingParams(temperature=0.0, max_tokens=24))  # fmt: skip
    texts = [tokenizer.decode(g.completions[0].token_ids, skip_special_tokens=True) for g in groups]
    accuracy = rewards.get("accuracy")(None, texts, solution=[r["solution"] for r in rows])
    formats = rewards.get("format")(None, texts)
    return Evaluation(sum(a or 0.0 for a in accuracy) / len(rows), sum(formats) / len(rows))


def run_demo(*, sft_steps: int = 150, grpo_steps: int = 300, seed: int = 0, output_dir: str | None = None,
             logging_steps: int = 25, learning_rate: float = 3e-4, temperature: float = 1.0,
             stream: TextIO | None = sys.stdout) -> dict[str, Evaluation]:  # fmt: skip
    """Cold-start SFT, then GRPO (16 prompts x 8 completions a step, rewards accuracy + 0.2 format, dapo loss).

    Prints progress to stream (None: silent); with output_dir, GRPO writes metrics.jsonl, checkpoints and the final
    model there (replacing a previous demo run's). Returns the greedy evaluations {"initial", "after_sft",
    "after_grpo"}. Deterministic for a seed on a given machine (CPU)."""
    say = (lambda *a: print(*a, file=stream, flush=True)) if stream is not None else (lambda *a: None)
    config = GRPOConfig(prompts_per_step=16, num_generations=8, micro_batch_size=64, max_completion_length=24,
                        learning_rate=learning_rate, temperature=temperature, reward_weights=[1.0, 0.2],
                        max_steps=max(grpo_steps, 1), seed=seed, sampler_block_size=8, output_dir=output_dir,
                        logging_steps=logging_steps, lr_scheduler_type="constant",
                        gradient_checkpointing=False)  # fmt: skip
    tokenizer = CharTokenizer()
    rows = problems()
    model = make_policy(tokenizer, seed)
    results = {"initial": evaluate(model, tokenizer, rows)}
    start = time.perf_counter()
    losses = cold_start_sft(model, tokenizer, rows, steps=sft_steps, seed=seed) if sft_steps else [math.nan]
    model.eval()
    results["after_sft"] = evaluate(model, tokenizer, rows)
    say(f"cold-start SFT: {sft_steps} steps of 32 formatted solutions, loss {losses[0]:.3f} -> {losses[-1]:.3f} "
        f"({time.perf_counter() - start:.1f} s)")  # fmt: skip
    say(f"GRPO: {grpo_steps} steps of {config.prompts_per_step} prompts x {config.num_generations} completions, "
        f"rewards accuracy + 0.2 format, loss {config.loss_type}, lr {config.learning_rate}")  # fmt: skip
    start = time.perf_counter()
    if grpo_steps:
        GRPOTrainer(model, tokenizer, ["accuracy", "format"], rows, config, log_stream=stream).train(overwrite=True)
    results["after_grpo"] = evaluate(model, tokenizer, rows)
    say(f"GRPO took {time.perf_counter() - start:.1f} s")
    say(f"greedy completions of all {len(rows)} problems: accuracy (format)")
    for name, result in results.items():
        say(f"  {name:<11} {100 * result.accuracy:5.1f}%  ({100 * result.format:5.1f}%)")
    return results
