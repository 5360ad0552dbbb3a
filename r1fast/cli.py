"""Command line: ``python -m r1fast demo`` (the embedded demo) and ``python -m r1fast train`` (GRPO on a local
Hugging Face model and a JSONL dataset)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

DTYPES = {"auto": None, "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


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


def read_jsonl(path: str) -> tuple[list[Any], list[int]]:
    """The rows of a JSONL file (blank lines skipped) and the line number of each; ValueError naming the line of a
    line that is not UTF-8 JSON. What a row must hold is checked by the trainer (r1fast.trainer.validation)."""
    rows, lines = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}:{number}: not UTF-8") from None
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
            lines.append(number)
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return rows, lines


def check_model_dir(path: str) -> None:
    """A local Hugging Face model folder (config.json and weights); ValueError otherwise, at once (no hub look-up)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"--model {path}: no such folder (a local Hugging Face model folder is expected)")
    if not (folder / "config.json").is_file():
        raise ValueError(f"--model {path}: no config.json, so not a Hugging Face model folder")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ValueError(f"--model {path}: no weights ({', '.join(WEIGHT_FILES)})")


class DeviceError(ValueError):
    """--device or --dtype names what this machine does not have."""


def check_device(device: str, dtype: str) -> None:
    """A device and dtype this machine has; DeviceError otherwise."""
    import torch

    try:
        where = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"--device {device!r} is not a device (cpu, cuda, cuda:N)") from None
    if where.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device {device}: r1fast trains on cpu or cuda")
    if where.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: CUDA is not available on this machine")
        if where.index is not None and where.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            raise DeviceError(f"--dtype bfloat16: {torch.cuda.get_device_name(where)} does not support it")


def _print_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """A warning as one line (e.g. a checkpoint skipped because it does not verify)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


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
    """The train command: every check before any work (a bad input is one line, exit code 2); SIGINT/SIGTERM stop
    after the current step with a checkpoint (exit 0); a second one stops at once (exit 130)."""
    try:  # the user's input: a bad value ends here with one line, not a traceback
        check_model_dir(args.model)
        config = build_config(args.config, args.set, output_dir=args.output_dir)
        dataset, lines = read_jsonl(args.dataset)
        from r1fast import rewards

        for name in args.reward:
            rewards.get(name)
    except (ValueError, TypeError, OSError) as e:
        return _error(str(e))
    import torch
    import transformers
    from packaging.version import Version
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1fast.trainer import DatasetRowError, GRPOTrainer, InputError

    transformers.utils.logging.disable_progress_bar()
    rank_device = _init_distributed()  # joins the process group under torchrun, whatever --device says
    device = args.device or rank_device
    try:
        check_device(device, args.dtype)
        dtype = getattr(torch, DTYPES[args.dtype] or ("bfloat16" if device.startswith("cuda") else "float32"))
        dtype_kwarg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
        try:
            model = AutoModelForCausalLM.from_pretrained(args.model, local_files_only=True, **{dtype_kwarg: dtype})
            tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
        except Exception as e:  # the user's model folder: whatever from_pretrained says about it, in one line
            raise InputError(f"--model {args.model} does not load: {' '.join(str(e).split())[:300]}") from None
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            trainer = GRPOTrainer(model.to(device).eval(), tokenizer, args.reward, dataset, config,
                                  log_stream=sys.stdout)  # fmt: skip
            trainer.train(resume_from=args.resume, overwrite=args.overwrite,
                          allow_config_change=args.allow_config_change, export_dir=args.export)  # fmt: skip
    except DatasetRowError as e:
        return _error(e.describe(lambda index: f"{args.dataset}:{lines[index]}", lambda index: f"line {lines[index]}"))
    except (InputError, DeviceError) as e:
        return _error(str(e))
    except KeyboardInterrupt:
        print("interrupted: stopped at once, without a checkpoint of the current step", file=sys.stderr)
        return 130
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
    demo.add_argument("--output-dir", default=None, help="write metrics.jsonl, checkpoints and the final model here "
                      "(replacing a previous demo run's)")
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
    start = train.add_mutually_exclusive_group()
    start.add_argument("--resume", default=None, help="'latest' (the newest checkpoint that verifies) or a checkpoint "
                       "folder")  # fmt: skip
    start.add_argument("--overwrite", action="store_true", help="replace the run already in --output-dir")
    train.add_argument("--allow-config-change", action="store_true",
                       help="resume even though the config differs from the checkpoint's (beyond the run length)")
    train.add_argument("--export", default=None, metavar="DIR",
                       help="where the final model, config and tokenizer go (default: <output-dir>/final)")
    train.add_argument("--device", default=None, help="default: cuda (this rank's GPU under torchrun) when available")
    train.add_argument("--dtype", choices=list(DTYPES), default="auto", help="auto: bfloat16 on CUDA, else float32")
    train.set_defaults(run=_train)

    args = parser.parse_args(argv)
    return args.run(args)


def _reward_names() -> list[str]:
    from r1fast import rewards

    return rewards.names()
