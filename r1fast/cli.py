"""Command line: ``python -m r1fast demo`` (the embedded demo) and ``python -m r1fast train`` (GRPO on a local
Hugging Face model and a JSONL dataset)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DTYPES = {"auto": None, "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _parse_value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, true/false/null, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_config(config_file: str | None, overrides: list[str], **defaults: Any):
    """A GRPOConfig from defaults, then a JSON file, then KEY=VALUE overrides (later wins). ValueError on a
    malformed override, TypeError on an unknown key (from GRPOConfig.from_dict)."""
    from r1fast.trainer import GRPOConfig

    values: dict[str, Any] = dict(defaults)
    if config_file:
        values.update(json.loads(Path(config_file).read_text()))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.strip()] = _parse_value(value)
    return GRPOConfig.from_dict(values)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The rows of a JSONL file (blank lines skipped); ValueError naming the line of a bad row."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
            if not isinstance(row, dict) or "prompt" not in row:
                raise ValueError(f"{path}:{number}: each row must be an object with a 'prompt'")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return rows


def _demo(args: argparse.Namespace) -> int:
    from r1fast.demo import run_demo

    if args.sft_steps < 0 or args.grpo_steps < 0:
        print("error: --sft-steps and --grpo-steps must be >= 0", file=sys.stderr)
        return 2
    try:
        run_demo(sft_steps=args.sft_steps, grpo_steps=args.grpo_steps, seed=args.seed, output_dir=args.output_dir,
                 logging_steps=args.logging_steps, learning_rate=args.learning_rate,
                 temperature=args.temperature)  # fmt: skip
    except ValueError as e:  # a meaningless setting, rejected by GRPOConfig before any training
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch
    import transformers
    from packaging.version import Version
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1fast import rewards
    from r1fast.trainer import GRPOTrainer

    try:  # the user's input: a bad value ends here with one line, not a traceback
        config = build_config(args.config, args.set, output_dir=args.output_dir)
        dataset = read_jsonl(args.dataset)
        for name in args.reward:
            rewards.get(name)
    except (ValueError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rank_device = _init_distributed()  # joins the process group under torchrun, whatever --device says
    device = args.device or rank_device
    dtype = getattr(torch, DTYPES[args.dtype] or ("bfloat16" if device.startswith("cuda") else "float32"))
    dtype_kwarg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    model = AutoModelForCausalLM.from_pretrained(args.model, **{dtype_kwarg: dtype}).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        GRPOTrainer(model, tokenizer, args.reward, dataset, config).train(resume_from=args.resume)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def _init_distributed() -> str:
    """Under torchrun (WORLD_SIZE > 1) joins the process group (NCCL on CUDA, gloo on CPU) and returns this rank's
    device; otherwise returns "cuda" when available, else "cpu"."""
    import torch

    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return "cuda" if cuda else "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return f"cuda:{local_rank}" if cuda else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r1fast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="cold-start SFT then GRPO on an embedded task (CPU, no downloads)")
    demo.add_argument("--sft-steps", type=int, default=150)
    demo.add_argument("--grpo-steps", type=int, default=300)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--learning-rate", type=float, default=3e-4)
    demo.add_argument("--temperature", type=float, default=1.0)
    demo.add_argument("--logging-steps", type=int, default=25)
    demo.add_argument("--output-dir", default=None, help="write metrics.jsonl and the final checkpoint here")
    demo.set_defaults(run=_demo)

    train = commands.add_parser("train", help="GRPO on a local Hugging Face model and a JSONL dataset (several "
                                "GPUs: torchrun --nproc_per_node N -m r1fast train ...)")
    train.add_argument("--model", required=True, help="a local model directory (from_pretrained)")
    train.add_argument("--dataset", required=True, help="JSONL rows with 'prompt' and the columns rewards read")
    train.add_argument("--reward", action="append", required=True,
                       help="a registered reward (repeat for several): " + ", ".join(_reward_names()))
    train.add_argument("--output-dir", required=True)
    train.add_argument("--config", help="a JSON file of GRPOConfig fields")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a GRPOConfig field (JSON value), e.g. --set learning_rate=1e-6")
    train.add_argument("--resume", default=None, help="'latest' or a checkpoint directory")
    train.add_argument("--device", default=None, help="default: cuda (this rank's GPU under torchrun) when available")
    train.add_argument("--dtype", choices=list(DTYPES), default="auto", help="auto: bfloat16 on CUDA, else float32")
    train.set_defaults(run=_train)

    args = parser.parse_args(argv)
    return args.run(args)


def _reward_names() -> list[str]:
    from r1fast import rewards

    return rewards.names()
