"""One GRPO step end to end: r1fast's GRPOTrainer against TRL 1.16's GRPOTrainer (HF generate), same model, batch
and loss.

    python benchmarks/bench_trainer.py                 # CUDA: Qwen2.5-0.5B shape, random bf16 weights
    python benchmarks/bench_trainer.py --shape 1.5B --prompts 32 --completion-len 512
    python benchmarks/bench_trainer.py --smoke         # any machine: a tiny model, checks the script end to end
    python benchmarks/bench_trainer.py --steps 1 --json out.json   # one warm step each, rows to out.json
    python benchmarks/bench_trainer.py --lora 16 --no-trl          # r1fast full and LoRA r=16 rows
    torchrun --nproc_per_node 8 benchmarks/bench_trainer.py --fsdp --shape 1.5B   # the FSDP row, 8 GPUs
    python benchmarks/bench_trainer.py --memory-model              # the computed memory per rank, no GPU needed

Both trainers take one optimizer step per generation batch of prompts x G completions (TRL: steps_per_generation =
gradient_accumulation_steps, the micro-batches of micro_batch_size completions), dapo loss, beta 0, AdamW, on
copies of the same model. The model has no EOS, so every completion has exactly --completion-len tokens and both
do the same work; the reward is a cheap Python function of the token ids (spread within groups, so gradients are
not zero). Reported per step, median over --steps after one warm-up step: generation and training seconds
(r1fast's own split), the whole step, completion tokens per second of the step, and the peak allocated memory.
A third row runs TRL with r1fast's fused loss swapped in (r1fast.integrations.trl). --lora R adds a row of r1fast
with PEFT LoRA adapters of rank R on every linear layer; --fsdp (under torchrun --nproc_per_node W) runs r1fast with
the model sharded by FSDP2 instead (bf16 gathers of float32 master weights; the peak is the largest over the ranks,
TRL rows skipped). --memory-model prints, without running anything, the peak-memory model per rank from parameter
counts (labelled computed) for the shapes, full / LoRA / FSDP. Prints one table and writes
the rows to benchmarks/out/bench_trainer.json (--json), rewritten after each row so that a run cut short keeps the
rows it finished. A peer that cannot run says why.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
from bench_sampler import SHAPES  # the Qwen2.5 shapes (random weights), defined once for the benchmarks
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

OUT = Path(__file__).resolve().parent / "out"
# Qwen2.5-7B's shape, for the memory model only (the runs use bench_sampler's SHAPES).
MODEL_SHAPES = SHAPES | {"7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                    num_attention_heads=28, num_key_value_heads=4, vocab_size=152_064,
                                    tie_word_embeddings=False)}  # fmt: skip


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over 't0' .. 't<V-1>' (whitespace-separated), so both trainers tokenize and decode
    the same way without a download. Its EOS '</s>' has id V, outside the model's logits: never sampled (TRL needs
    an EOS id; the model's config has none)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(vocab_size)} | {"</s>": vocab_size}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="t0", unk_token="t0", eos_token="</s>")


def id_reward(completions, completion_ids, **_):
    """(sum of the completion's token ids mod 7) / 6: cheap, deterministic, spread within every group."""
    return [(sum(ids) % 7) / 6 for ids in completion_ids]


def build_model(shape: str, max_len: int, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=max_len, eos_token_id=None, bos_token_id=None,
                         pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype).eval()


def prompts(n: int, length: int, vocab: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"prompt": " ".join(f"t{i}" for i in torch.randint(1, vocab, (length,), generator=g).tolist())}
            for _ in range(n)]  # fmt: skip


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def run_r1fast(model, tokenizer, dataset, args, device, **scaling) -> dict:
    """r1fast's GRPOTrainer; scaling: GRPOConfig's fsdp / lora_* keys."""
    from r1fast.trainer import GRPOConfig, GRPOTrainer

    config = GRPOConfig(prompts_per_step=args.prompts, num_generations=args.g, micro_batch_size=args.micro_batch,
                        max_completion_length=args.completion_len, max_prompt_length=None, learning_rate=1e-6,
                        loss_type="dapo", max_steps=args.steps + 1, logging_steps=1, **scaling)  # fmt: skip
    trainer = GRPOTrainer(model, tokenizer, [id_reward], dataset, config, log_stream=None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    history = trainer.train()[1:]  # the first step warms up (allocations, Triton compiles, CUDA graph captures)
    return {
        "generate_s": statistics.median(m["time/generate"] for m in history),
        "train_s": statistics.median(m["time/train"] for m in history),
        "step_s": statistics.median(m["step_time"] for m in history),
        "peak_gib": max_over_ranks(peak_gib(device), device),
    }


def max_over_ranks(value: float | None, device: torch.device) -> float | None:
    """The largest value over the torchrun ranks (the peak memory of the fullest rank); value itself alone."""
    import torch.distributed as dist

    if value is None or not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def parameter_counts(shape: str) -> tuple[int, dict[int, int]]:
    """(parameters of the shape's model, {r: LoRA parameters of rank r on every linear layer of the decoder}),
    counted on the meta device (no memory)."""
    config = Qwen2Config(**MODEL_SHAPES[shape], max_position_embeddings=4096)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    linear = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    per_rank = sum(m.in_features + m.out_features for m in linear)  # A: [r, in], B: [out, r]
    return total, {r: r * per_rank for r in (8, 16, 64)}


def memory_model(shapes: list[str], worlds: tuple[int, ...] = (8,), lora_r: int = 16) -> list[dict]:
    """Bytes per rank before activations and the KV pool, from parameter counts (computed, not measured).

    full: the whole model on every rank in bf16 with bf16 gradients and AdamW moments in the parameters' dtype (what
    r1fast does with a bf16 model: 8 B/param; TRL's fp32 master weights are 16 B/param, the second column).
    LoRA r: the frozen base in bf16 (2 B/param) + float32 adapters, their gradients and two moments (16 B/param).
    FSDP W: float32 master weights, gradients and two moments sharded W ways (16/W B/param) + the rollout's gathered
    bf16 copy of the whole model (2 B/param; during training only the root and about two layers are gathered)."""
    rows = []
    for shape in shapes:
        p, lora = parameter_counts(shape)
        gib = lambda b: b / 2**30  # noqa: E731
        row = {"shape": shape, "params": p, "full_bf16_gib": gib(8 * p), "full_fp32_gib": gib(16 * p),
               f"lora_r{lora_r}_gib": gib(2 * p + 16 * lora[lora_r]), "lora_params": lora[lora_r]}  # fmt: skip
        for w in worlds:
            row[f"fsdp{w}_train_gib"] = gib(16 * p / w)
            row[f"fsdp{w}_rollout_gib"] = gib(16 * p / w + 2 * p)
        rows.append(row)
    return rows


def run_trl(model, tokenizer, dataset, args, device, fused_loss: bool) -> dict:
    """TRL's GRPOTrainer, or (fused_loss) r1fast.integrations.trl.R1FastGRPOTrainer: TRL with r1fast's loss."""
    try:
        import trl
        from datasets import Dataset
        from transformers import TrainerCallback
    except ImportError as e:
        return {"skipped": f"not installed: {e.name}"}
    trainer_class = trl.GRPOTrainer
    if fused_loss:
        from r1fast.integrations.trl import R1FastGRPOTrainer as trainer_class
    gas = args.prompts * args.g // args.micro_batch
    step_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_times.append(time.perf_counter() - self.start)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = trl.GRPOConfig(
            output_dir=str(OUT / "trl-run"), report_to=[], use_cpu=device.type != "cuda",
            bf16=model.dtype == torch.bfloat16, per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=gas, steps_per_generation=gas, num_generations=args.g,
            max_completion_length=args.completion_len, learning_rate=1e-6, loss_type="dapo", beta=0.0,
            max_steps=args.steps + 1, logging_steps=1, save_strategy="no", lr_scheduler_type="constant",
            temperature=1.0,
        )  # fmt: skip
        trainer = trainer_class(model=model, reward_funcs=[id_reward], args=config,
                                  train_dataset=Dataset.from_list(dataset), processing_class=tokenizer,
                                  callbacks=[StepTimer()])  # fmt: skip
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer.train()
    if len(step_times) < 2:
        return {"skipped": f"TRL ran {len(step_times)} steps"}
    return {"generate_s": None, "train_s": None, "step_s": statistics.median(step_times[1:]),
            "peak_gib": peak_gib(device)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="0.5B")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--g", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--completion-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="measured steps after the warm-up one (default 3; "
                        "2 with --smoke)")  # fmt: skip
    parser.add_argument("--no-trl", action="store_true")
    parser.add_argument("--lora", type=int, default=None, metavar="R", help="add a row: r1fast with LoRA adapters of "
                        "rank R on every linear layer (PEFT)")  # fmt: skip
    parser.add_argument("--fsdp", action="store_true", help="under torchrun: r1fast with the model sharded by FSDP2 "
                        "(the full-model and TRL rows are skipped)")  # fmt: skip
    parser.add_argument("--memory-model", action="store_true", help="print the computed memory per rank of full, "
                        "LoRA and FSDP training for 0.5B, 1.5B and 7B (no run)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU (or CUDA if present)")
    parser.add_argument("--json", type=Path, default=OUT / "bench_trainer.json", help="where the rows go")
    args = parser.parse_args()
    if args.memory_model:
        print_memory_model(args.json.with_name("bench_trainer_memory.json"))
        return
    if args.smoke:
        args.shape, args.prompts, args.g, args.prompt_len, args.completion_len = "tiny", 2, 2, 4, 6
        args.micro_batch = 2
    args.steps = args.steps or (2 if args.smoke else 3)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        sys.exit("bench_trainer needs CUDA (or --smoke)")
    rank = 0
    if args.fsdp:  # torchrun's environment: one rank per GPU (gloo on CPU with --smoke)
        import torch.distributed as dist

        if "WORLD_SIZE" not in os.environ:
            sys.exit("--fsdp runs under torchrun (torchrun --nproc_per_node W benchmarks/bench_trainer.py --fsdp)")
        if device.type == "cuda":
            device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank()
        args.no_trl = True
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vocab = SHAPES[args.shape]["vocab_size"]
    tokenizer = word_tokenizer(vocab)
    dataset = prompts(args.prompts * (args.steps + 1), args.prompt_len, vocab)
    max_len = args.prompt_len + args.completion_len + 8
    tokens = args.prompts * args.g * args.completion_len
    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "shape": args.shape, "prompts": args.prompts, "G": args.g, "prompt_len": args.prompt_len,
            "completion_len": args.completion_len, "micro_batch": args.micro_batch, "dtype": str(dtype),
            "measured_steps": args.steps, "world_size": int(os.environ.get("WORLD_SIZE", "1"))}  # fmt: skip
    rows = []

    def add(method: str, run, *run_args, **run_kwargs) -> None:
        try:
            row = {"method": method, **run(*run_args, **run_kwargs)}
        except Exception as err:  # one trainer's failure (a peer's API drift, OOM) must not hide the other rows
            traceback.print_exc()
            row = {"method": method, "error": f"{type(err).__name__}: {err}"[:300]}
        if "step_s" in row:
            row["tokens_per_s"] = tokens / row["step_s"]
        rows.append(row)
        if rank == 0:
            args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
            print(json.dumps(row), file=sys.stderr, flush=True)  # progress: each peer takes a while

    args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.fsdp:  # float32 master weights sharded, bf16 gathers
        model = build_model(args.shape, max_len, device, torch.float32)
        add(f"r1fast FSDP x{meta['world_size']}", run_r1fast, model, tokenizer, dataset, args, device, fsdp=True,
            fsdp_param_dtype="bfloat16" if device.type == "cuda" else "float32")  # fmt: skip
    else:
        model = build_model(args.shape, max_len, device, dtype)
        add("r1fast", run_r1fast, model, tokenizer, dataset, args, device)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if args.lora and not args.fsdp:
        model = build_model(args.shape, max_len, device, dtype)
        add(f"r1fast LoRA r={args.lora}", run_r1fast, model, tokenizer, dataset, args, device, lora_r=args.lora,
            lora_alpha=2.0 * args.lora, lora_dropout=0.0, lora_target_modules="all-linear")  # fmt: skip
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for name, fused in (("TRL 1.16 (HF generate)", False), ("TRL + r1fast loss", True)):
        if args.no_trl:
            add(name, lambda: {"skipped": "--no-trl"})
            continue
        peer_model = build_model(args.shape, max_len, device, dtype)  # the same seed: the same weights
        add(name, run_trl, peer_model, tokenizer, dataset, args, device, fused)
        del peer_model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if rank != 0:
        return
    print(f"GRPO step, {meta}")
    print(f"{'method':<24} {'generate s':>11} {'train s':>9} {'step s':>8} {'tokens/s':>10} {'peak GiB':>9}")
    for row in rows:
        if "skipped" in row or "error" in row:
            print(f"{row['method']:<24} {'skipped: ' + row['skipped'] if 'skipped' in row else row['error']}")
            continue
        cells = [row["generate_s"], row["train_s"], row["step_s"], row["tokens_per_s"], row["peak_gib"]]
        text = ["-" if c is None else f"{c:.3f}" if i < 3 else f"{c:.0f}" if i == 3 else f"{c:.2f}"
                for i, c in enumerate(cells)]  # fmt: skip
        print(f"{row['method']:<24} {text[0]:>11} {text[1]:>9} {text[2]:>8} {text[3]:>10} {text[4]:>9}")
    print(f"wrote {args.json}")


def print_memory_model(path: Path) -> None:
    """memory_model's rows as a table (GiB per rank, computed) and as JSON at path."""
    rows = memory_model(["0.5B", "1.5B", "7B"])
    print("memory per rank before activations and the KV pool, GiB (computed from parameter counts, not measured)")
    print(f"{'shape':<6} {'params':>8} {'full bf16':>10} {'full fp32':>10} {'LoRA r16':>9} {'FSDP x8 train':>14} "
          f"{'FSDP x8 rollout':>16}")  # fmt: skip
    for r in rows:
        print(f"{r['shape']:<6} {r['params'] / 1e9:>7.2f}B {r['full_bf16_gib']:>10.1f} {r['full_fp32_gib']:>10.1f} "
              f"{r['lora_r16_gib']:>9.1f} {r['fsdp8_train_gib']:>14.1f} {r['fsdp8_rollout_gib']:>16.1f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"computed": True, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
