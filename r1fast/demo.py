"""The embedded demo: the DeepSeek-R1 recipe end to end on a task small enough for a CPU, with nothing downloaded.

Task: add two digits, answering in the R1 template (think block, then answer block). The policy is a 2-layer Qwen2
made here from a fixed seed, with a character tokenizer whose R1 tags are single tokens. A short cold-start SFT
(SFTTrainer: completion-only cross-entropy through the fused LM head, padding-free packing) on formatted solutions
teaches the template and some of the sums; GRPO (GRPOTrainer) then trains with the C++ accuracy and format rewards,
group-relative advantages and the fused LM-head loss, sampling through the paged sampler on the policy's own weights,
and evaluates the greedy accuracy on all 100 problems every eval_steps steps. Greedy accuracy and format over all
100 problems are measured before and after each phase (r1fast.trainer.evaluate).
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from r1fast.trainer import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer, evaluate

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


@dataclass
class Evaluation:
    accuracy: float  # share of problems whose greedy answer is right
    format: float  # share of greedy completions in the strict R1 template


def greedy_evaluation(model: torch.nn.Module, tokenizer: CharTokenizer, rows: list[dict[str, str]],
                      config: GRPOConfig) -> Evaluation:  # fmt: skip
    """Greedy completions of every row through the sampler, scored with the C++ accuracy and format rewards
    (r1fast.trainer.evaluate, as GRPOTrainer evaluates during training)."""
    metrics = evaluate(model, tokenizer, rows, ["accuracy", "format"], config).metrics
    return Evaluation(metrics["rewards/accuracy/mean"], metrics["rewards/format/mean"])


def run_demo(*, sft_steps: int = 125, grpo_steps: int = 300, seed: int = 0, output_dir: str | None = None,
             logging_steps: int = 25, learning_rate: float = 3e-4, temperature: float = 1.0, eval_steps: int = 50,
             stream: TextIO | None = sys.stdout) -> dict[str, Evaluation]:  # fmt: skip
    """Cold-start SFT (32 formatted solutions a step), then GRPO (16 prompts x 8 completions a step, rewards
    accuracy + 0.2 format, dapo loss, the greedy accuracy on all problems every eval_steps steps).

    Prints progress to stream (None: silent); with output_dir, SFT and GRPO write metrics.jsonl, checkpoints, the
    final model and plots to <output_dir>/sft and <output_dir>/grpo (replacing a previous demo run's). Returns the
    greedy evaluations {"initial", "after_sft", "after_grpo"}. Deterministic for a seed on a given machine (CPU)."""
    say = (lambda *a: print(*a, file=stream, flush=True)) if stream is not None else (lambda *a: None)
    out = Path(output_dir) if output_dir else None
    config = GRPOConfig(prompts_per_step=16, num_generations=8, micro_batch_size=64, max_completion_length=24,
                        learning_rate=learning_rate, temperature=temperature, reward_weights=[1.0, 0.2],
                        max_steps=max(grpo_steps, 1), seed=seed, sampler_block_size=8,
                        output_dir=str(out / "grpo") if out else None, logging_steps=logging_steps,
                        lr_scheduler_type="constant", gradient_checkpointing=False, eval_steps=eval_steps,
                        disable_tqdm=True)  # fmt: skip
    sft_config = SFTConfig(rows_per_step=32, padding_free=True, max_steps=max(sft_steps, 1), learning_rate=3e-3,
                           weight_decay=0.01, max_grad_norm=0.0, lr_scheduler_type="constant",
                           gradient_checkpointing=False, seed=seed,
                           output_dir=str(out / "sft") if out else None, logging_steps=logging_steps,
                           save_steps=0, disable_tqdm=True)  # fmt: skip
    tokenizer = CharTokenizer()
    rows = problems()
    model = make_policy(tokenizer, seed)
    results = {"initial": greedy_evaluation(model, tokenizer, rows, config)}
    start = time.perf_counter()
    if sft_steps:
        say(f"cold-start SFT: {sft_steps} steps of {sft_config.rows_per_step} formatted solutions, "
            f"lr {sft_config.learning_rate}")  # fmt: skip
        examples = [{"prompt": r["prompt"], "completion": solution_text(r)} for r in rows]
        history = SFTTrainer(model, tokenizer, examples, sft_config, log_stream=stream).train(overwrite=True)
        say(f"cold-start SFT: loss {history[0]['loss']:.3f} at step {history[0]['step']} -> {history[-1]['loss']:.3f} "
            f"at step {history[-1]['step']} ({time.perf_counter() - start:.1f} s)")  # fmt: skip
    model.eval()
    results["after_sft"] = greedy_evaluation(model, tokenizer, rows, config)
    say(f"GRPO: {grpo_steps} steps of {config.prompts_per_step} prompts x {config.num_generations} completions, "
        f"rewards accuracy + 0.2 format, loss {config.loss_type}, lr {config.learning_rate}, greedy accuracy on all "
        f"{len(rows)} problems every {eval_steps} steps")  # fmt: skip
    start = time.perf_counter()
    if grpo_steps:
        GRPOTrainer(model, tokenizer, ["accuracy", "format"], rows, config, eval_dataset=rows,
                    log_stream=stream).train(overwrite=True)  # fmt: skip
    results["after_grpo"] = greedy_evaluation(model, tokenizer, rows, config)
    say(f"GRPO took {time.perf_counter() - start:.1f} s")
    say(f"greedy completions of all {len(rows)} problems: accuracy (format)")
    for name, result in results.items():
        say(f"  {name:<11} {100 * result.accuracy:5.1f}%  ({100 * result.format:5.1f}%)")
    if out is not None:
        from r1fast.plot import write_run_plots

        for phase, steps in (("sft", sft_steps), ("grpo", grpo_steps)):
            if steps:
                write_run_plots(str(out / phase), stream)
    return results
