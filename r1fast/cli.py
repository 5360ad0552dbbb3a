"""Command line (r1fast, or python -m r1fast): demo (the embedded demo); sft (the cold start) and train (GRPO) on a
local Hugging Face model and a JSONL dataset; eval (a checkpoint's accuracy and format rate); plot (PNGs of runs)."""

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


def build_config(config_file: str | None, overrides: list[str], config_class: type | None = None, **defaults: Any):
    """A config (config_class: GRPOConfig by default, or SFTConfig) from defaults, then a JSON file, then KEY=VALUE
    overrides (later wins). ValueError on a malformed override, TypeError on an unknown key (from_dict)."""
    from r1fast.trainer import GRPOConfig

    values: dict[str, Any] = dict(defaults)
    if config_file:
        values.update(json.loads(Path(config_file).read_text()))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.strip()] = _parse_value(value)
    return (config_class or GRPOConfig).from_dict(values)


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
                 logging_steps=args.logging_steps, learning_rate=args.learning_rate, temperature=args.temperature,
                 eval_steps=args.eval_steps)  # fmt: skip
    except ValueError as e:  # a meaningless setting, rejected by GRPOConfig before any training
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _train(args: argparse.Namespace) -> int:
    """The train command (GRPO): see _fit."""
    return _fit(args, sft=False)


def _sft(args: argparse.Namespace) -> int:
    """The sft command (the cold start): see _fit."""
    return _fit(args, sft=True)


def _add_language(rows: list[Any], language: str | None) -> None:
    """--language: the target of the language_consistency reward, as the column it reads ("language"), in every
    row that does not name its own. ValueError for a language the reward does not know."""
    if language is None:
        return
    from r1fast import rewards

    rewards.language_consistency_reward(None, [""], language=language)  # raises for an unknown code
    for row in rows:
        if isinstance(row, dict):
            row.setdefault("language", language)


def _load_model(args: argparse.Namespace, device: str):
    """(model, tokenizer) of --model on `device` in --dtype (auto: bfloat16 on CUDA, else float32), local files
    only; InputError in one line when from_pretrained refuses the folder."""
    import torch
    import transformers
    from packaging.version import Version
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1fast.trainer import InputError

    transformers.utils.logging.disable_progress_bar()
    check_device(device, args.dtype)
    dtype = getattr(torch, DTYPES[args.dtype] or ("bfloat16" if device.startswith("cuda") else "float32"))
    dtype_kwarg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    try:
        model = AutoModelForCausalLM.from_pretrained(args.model, local_files_only=True, **{dtype_kwarg: dtype})
        tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    except Exception as e:  # the user's model folder: whatever from_pretrained says about it, in one line
        raise InputError(f"--model {args.model} does not load: {' '.join(str(e).split())[:300]}") from None
    return model.to(device).eval(), tokenizer


def _fit(args: argparse.Namespace, sft: bool) -> int:
    """The train and sft commands: every check before any work (a bad input is one line, exit code 2);
    SIGINT/SIGTERM stop after the current step with a checkpoint (exit 0); a second one stops at once (exit 130).
    At the end (a stop signal's too) the run's plots are written to <output-dir>/plots."""
    files: dict[str, tuple[str, list[int]]] = {}
    try:  # the user's input: a bad value ends here with one line, not a traceback
        check_model_dir(args.model)
        from r1fast.trainer import GRPOConfig, SFTConfig

        config = build_config(args.config, _scaling_overrides(args) + args.set, SFTConfig if sft else GRPOConfig,
                              output_dir=args.output_dir)  # fmt: skip
        if getattr(config, "fsdp", False) and args.dtype == "auto":  # float32 master weights, bf16 gathers
            args.dtype = "float32"
        if args.quiet:
            config.disable_tqdm = True
        rows: dict[str, list[Any] | None] = {"train_dataset": None, "eval_dataset": None}
        for name, path in (("train_dataset", args.dataset), ("eval_dataset", args.eval_dataset)):
            if path:
                rows[name], lines = read_jsonl(path)
                files[name] = (path, lines)
        if not sft:
            from r1fast import rewards

            for name in args.reward:
                rewards.get(name)
            for name in rows:
                _add_language(rows[name] or [], args.language)
    except (ValueError, TypeError, OSError) as e:
        return _error(str(e))
    import torch

    from r1fast.trainer import DatasetRowError, GRPOTrainer, InputError, SFTTrainer

    rank_device = _init_distributed()  # joins the process group under torchrun, whatever --device says
    device = args.device or rank_device
    try:
        model, tokenizer = _load_model(args, device)
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            if sft:
                trainer = SFTTrainer(model, tokenizer, rows["train_dataset"], config,
                                     eval_dataset=rows["eval_dataset"], log_stream=sys.stdout)  # fmt: skip
            else:
                trainer = GRPOTrainer(model, tokenizer, args.reward, rows["train_dataset"], config,
                                      eval_dataset=rows["eval_dataset"], log_stream=sys.stdout)  # fmt: skip
            trainer.train(resume_from=args.resume, overwrite=args.overwrite,
                          allow_config_change=args.allow_config_change, export_dir=args.export)  # fmt: skip
        if trainer.rank == 0 and not args.no_plots:  # quietly: the run's last line stays its own
            from r1fast.plot import write_run_plots

            write_run_plots(config.output_dir, None)
    except DatasetRowError as e:
        path, lines = files[e.dataset]
        return _error(e.describe(lambda index: f"{path}:{lines[index]}", lambda index: f"line {lines[index]}"))
    except (InputError, DeviceError) as e:
        return _error(str(e))
    except KeyboardInterrupt:
        print("interrupted: stopped at once, without a checkpoint of the current step", file=sys.stderr)
        return 130
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def _eval(args: argparse.Namespace) -> int:
    """The eval command: a checkpoint (or any local model folder) on a JSONL dataset, greedy by default; prints
    each reward's mean with its 95% interval (accuracy and format first) and, with --json, writes the metrics."""
    try:
        check_model_dir(args.model)
        config = build_config(args.config, args.set)
        rows, lines = read_jsonl(args.dataset)
        from r1fast import rewards

        for name in args.reward:
            rewards.get(name)
        _add_language(rows, args.language)
    except (ValueError, TypeError, OSError) as e:
        return _error(str(e))
    from r1fast.trainer import DatasetRowError, InputError, evaluate

    try:
        model, tokenizer = _load_model(args, args.device or _default_device())
        result = evaluate(model, tokenizer, rows, args.reward, config)
    except DatasetRowError as e:
        return _error(e.describe(lambda index: f"{args.dataset}:{lines[index]}", lambda index: f"line {lines[index]}"))
    except (InputError, DeviceError) as e:
        return _error(str(e))
    n = config.eval_sampling_params().n
    mode = "greedy" if config.eval_temperature == 0 else f"temperature {config.eval_temperature:g}"
    print(f"{args.model} on {args.dataset}: {len(rows)} rows x {n} completion{'s' if n > 1 else ''} ({mode})")
    for name in args.reward:
        m = result.metrics
        mean, low, high = (m[f"rewards/{name}/{k}"] for k in ("mean", "ci_low", "ci_high"))
        print(f"  {name:<22} {100 * mean:6.1f}%   95% CI [{100 * low:5.1f}%, {100 * high:5.1f}%]")
    print(f"  {'mean completion length':<22} {result.metrics['completions/mean_length']:6.1f} tokens")
    if args.json:
        Path(args.json).write_text(json.dumps(result.metrics, indent=2, sort_keys=True) + "\n")
    return 0


def _plot(args: argparse.Namespace) -> int:
    """The plot command: PNGs of one or several runs' metrics.jsonl (overlaid)."""
    try:
        from r1fast.plot import plot_runs

        written = plot_runs(args.run_dirs, args.out)
    except ImportError as e:
        return _error(f"plot needs matplotlib ({e})")
    except (FileNotFoundError, ValueError) as e:
        return _error(str(e))
    for path in written:
        print(path)
    return 0


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The epilog (every config key with its default and meaning) printed as written."""


def _config_epilog(config_class: type) -> str:
    from r1fast.trainer.config import describe_fields

    return (f"{config_class.__name__} keys (--set KEY=VALUE or --config FILE), with their defaults:\n"
            + describe_fields(config_class))  # fmt: skip


def _add_run_options(command: argparse.ArgumentParser, config_name: str) -> None:
    """The options train and sft share: the model, data, config, resume, export, device and output."""
    command.add_argument("--model", required=True, help="a local model directory (from_pretrained)")
    command.add_argument("--output-dir", required=True, help="metrics.jsonl, checkpoints, final/ and plots/ go here")
    command.add_argument("--eval-dataset", default=None, metavar="FILE",
                         help="JSONL rows like --dataset's, evaluated every eval_steps steps and at the end")
    command.add_argument("--config", help=f"a JSON file of {config_name} fields")
    command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help=f"override a {config_name} field (JSON value), e.g. --set learning_rate=1e-6")
    start = command.add_mutually_exclusive_group()
    start.add_argument("--resume", default=None, help="'latest' (the newest checkpoint that verifies) or a "
                       "checkpoint folder")  # fmt: skip
    start.add_argument("--overwrite", action="store_true", help="replace the run already in --output-dir")
    command.add_argument("--allow-config-change", action="store_true",
                         help="resume even though the config differs from the checkpoint's (beyond the run length)")
    command.add_argument("--export", default=None, metavar="DIR",
                         help="where the final model, config and tokenizer go (default: <output-dir>/final)")
    command.add_argument("--device", default=None, help="default: cuda (this rank's GPU under torchrun) when "
                         "available")  # fmt: skip
    command.add_argument("--dtype", choices=list(DTYPES), default="auto", help="auto: bfloat16 on CUDA, else float32")
    command.add_argument("--quiet", action="store_true", help="no progress bar (a metrics line every logging_steps "
                         "steps instead, as when the output is not a terminal)")  # fmt: skip
    command.add_argument("--no-plots", action="store_true", help="do not write <output-dir>/plots/*.png at the end")


def _add_scaling_options(command: argparse.ArgumentParser) -> None:
    """train's FSDP and LoRA options: shorthands for GRPOConfig keys (see README, Scaling)."""
    command.add_argument("--fsdp", action="store_true", help="shard the model, gradients and optimizer state over the "
                         "torchrun ranks (FSDP2; set fsdp=true; --dtype auto then loads float32 master weights)")
    command.add_argument("--lora-r", type=int, default=None, metavar="R", help="train LoRA adapters of rank R (PEFT; "
                         "set lora_r=R)")  # fmt: skip
    command.add_argument("--lora-alpha", type=float, default=None, help="the adapters' scale alpha (lora_alpha)")
    command.add_argument("--lora-target-modules", nargs="+", default=None, metavar="NAME",
                         help="module names to adapt, e.g. q_proj v_proj, or all-linear (lora_target_modules)")


def _scaling_overrides(args: argparse.Namespace) -> list[str]:
    """The --set KEY=VALUE overrides the train command's scaling options stand for (before the user's --set)."""
    out = []
    if getattr(args, "fsdp", False):
        out.append("fsdp=true")
    for key in ("lora_r", "lora_alpha", "lora_target_modules"):
        value = getattr(args, key, None)
        if value is not None:
            out.append(f"{key}={json.dumps(value[0] if value == ['all-linear'] else value)}")
    return out


def _add_reward_options(command: argparse.ArgumentParser, required: bool, default: list[str] | None = None) -> None:
    command.add_argument("--reward", action="append", required=required, default=default,
                         help="a registered reward (repeat for several): " + ", ".join(_reward_names()))
    command.add_argument("--language", default=None, help="the target language of the language_consistency reward "
                         "(en, zh, ...), for rows without a 'language' column")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from r1fast import __version__
    from r1fast.trainer import GRPOConfig, SFTConfig

    parser = argparse.ArgumentParser(prog="r1fast", description=__doc__,
                                     epilog="Each command's --help lists its options (train and sft: every config "
                                     "key, with its default and meaning).")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"r1fast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="cold-start SFT then GRPO on an embedded task (CPU, no downloads)",
                               formatter_class=_HelpFormatter)  # fmt: skip
    default = " (default %(default)s)"
    demo.add_argument("--sft-steps", type=int, default=125, help="cold-start SFT steps (SFTTrainer)" + default)
    demo.add_argument("--grpo-steps", type=int, default=300, help="GRPO steps (GRPOTrainer)" + default)
    demo.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation and of both runs"
                      + default)  # fmt: skip
    demo.add_argument("--learning-rate", type=float, default=3e-4, help="GRPO's learning rate" + default)
    demo.add_argument("--temperature", type=float, default=1.0, help="GRPO's sampling temperature" + default)
    demo.add_argument("--logging-steps", type=int, default=25, help="a metrics line every this many steps" + default)
    demo.add_argument("--eval-steps", type=int, default=50, help="greedy accuracy on all problems every this many "
                      "GRPO steps" + default)  # fmt: skip
    demo.add_argument("--output-dir", default=None, help="write metrics.jsonl, checkpoints, the final model and "
                      "plots here (replacing a previous demo run's)")  # fmt: skip
    demo.set_defaults(run=_demo)

    train = commands.add_parser("train", help="GRPO on a local Hugging Face model and a JSONL dataset (several "
                                "GPUs: torchrun --nproc_per_node N -m r1fast train ...)",
                                formatter_class=_HelpFormatter, epilog=_config_epilog(GRPOConfig))  # fmt: skip
    train.add_argument("--dataset", required=True, help="JSONL rows with 'prompt' and the columns rewards read")
    _add_reward_options(train, required=True)
    _add_run_options(train, "GRPOConfig")
    _add_scaling_options(train)
    train.set_defaults(run=_train)

    sft = commands.add_parser("sft", help="supervised fine-tuning (the R1 cold start) on a JSONL of prompt/completion "
                              "or chat messages", formatter_class=_HelpFormatter,
                              epilog=_config_epilog(SFTConfig))  # fmt: skip
    sft.add_argument("--dataset", required=True, help="JSONL rows {'prompt', 'completion'} (strings or chat "
                     "messages) or {'messages'} (the last, the assistant's, is trained)")  # fmt: skip
    _add_run_options(sft, "SFTConfig")
    sft.set_defaults(run=_sft)

    evaluate = commands.add_parser("eval", help="a checkpoint's rewards (accuracy, format) on a JSONL dataset, with "
                                   "95%% confidence intervals", formatter_class=_HelpFormatter,
                                   epilog="--set takes GRPOConfig keys; those that matter here: prompt_template, "
                                   "max_prompt_length, max_completion_length, eval_temperature, num_generations_eval, "
                                   "reward_weights, seed, sampler_block_size.")  # fmt: skip
    evaluate.add_argument("--model", required=True, help="a local model folder: a checkpoint, final/, any model")
    evaluate.add_argument("--dataset", required=True, help="JSONL rows with 'prompt' and the columns rewards read")
    _add_reward_options(evaluate, required=False)
    evaluate.add_argument("--config", help="a JSON file of GRPOConfig fields")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a GRPOConfig field (JSON value), e.g. --set max_completion_length=1024")
    evaluate.add_argument("--json", default=None, metavar="FILE", help="also write every metric to this JSON file")
    evaluate.add_argument("--device", default=None, help="default: cuda when available")
    evaluate.add_argument("--dtype", choices=list(DTYPES), default="auto", help="auto: bfloat16 on CUDA, else "
                          "float32")  # fmt: skip
    evaluate.set_defaults(run=_eval)

    plot = commands.add_parser("plot", help="PNG plots of runs (their metrics.jsonl), several runs overlaid",
                               formatter_class=_HelpFormatter)  # fmt: skip
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run's output folder (holds metrics.jsonl)")
    plot.add_argument("--out", default=None, metavar="DIR", help="where the PNGs go (default: RUN_DIR/plots for one "
                      "run, ./plots for several)")  # fmt: skip
    plot.set_defaults(run=_plot)

    args = parser.parse_args(argv)
    if args.command == "eval" and not args.reward:
        args.reward = ["accuracy", "format"]
    return args.run(args)


def _reward_names() -> list[str]:
    from r1fast import rewards

    return rewards.names()
