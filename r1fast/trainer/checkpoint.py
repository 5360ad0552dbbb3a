"""Checkpoints: the model and the optimizer state in safetensors, the trainer's state in JSON, no pickle; written so
that a crash at any moment leaves every checkpoint either complete or recognisably incomplete.

Layout of ``<output_dir>/checkpoint-<step>/``: ``model.safetensors`` (parameters and persistent buffers; a tied
weight stored once, under the name from_pretrained loads it from), ``optimizer.safetensors`` (every optimizer state
tensor as ``state.<param>.<key>``; the param groups and non-tensor state in its metadata), ``trainer_state.json``
(step, config, world size), ``config.json`` and ``generation_config.json`` (the model's), the tokenizer's files,
and ``manifest.json``: the size and SHA-256 of every other file, the step and the config's fingerprint. A final
export (``final/``) is the same without the optimizer. ``AutoModelForCausalLM.from_pretrained(checkpoint)`` works.
A LoRA run (a PEFT model) saves its adapters alone, in PEFT's files (``adapter_model.safetensors``,
``adapter_config.json``: ``PeftModel.from_pretrained(base, checkpoint)`` loads them). A sharded run (FSDP) writes
``sharded/``, one safetensors file per rank holding its shards of the parameters and of the optimizer state (keys
``optimizer.<param>.<key>``), through torch.distributed.checkpoint, in place of the two files; consolidate_checkpoint
turns it into a from_pretrained folder. What differs between ranks (a GRPO generation batch that later optimizer
steps still use) is in ``ranks/rank<r>.safetensors``.

A write goes to ``<name>.tmp``: every file is flushed to disk (fsync), the manifest is written last, then the
folder is renamed into place (an existing one is first renamed to ``<name>.old``, then removed). So a folder named
``checkpoint-<step>`` whose manifest verifies is complete; finish_interrupted_saves puts a complete ``.tmp`` in
place when a crash came between the two renames, and clears the rest.

Testing hooks (environment): ``R1FAST_TEST_KILL_AT=<folder name>:<stage>`` SIGKILLs the process when a write
reaches that stage (one of SAVE_STAGES); ``R1FAST_TEST_SLOW_SAVE=<seconds>`` sleeps at every stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

from r1fast.trainer import distributed, lora
from r1fast.trainer.validation import InputError

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
ADAPTER_FILE = "adapter_model.safetensors"  # PEFT's name: PeftModel.from_pretrained reads it
SHARDED_DIR = "sharded"  # a sharded model's checkpoint: one safetensors file per rank (torch.distributed.checkpoint)
RANKS_DIR = "ranks"  # each rank's own state (write_checkpoint's rank_tensors): ranks/rank<r>.safetensors
STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "r1fast-checkpoint-1"
FINAL_DIR = "final"
# Where a write can be when it stops: the temporary folder made, each group of files written, the manifest written
# (complete, not yet in place), the previous folder moved aside (when replacing one), the new one in place.
SAVE_STAGES = ("started", "model", "optimizer", "files", "manifest", "retired", "renamed")


class CheckpointError(InputError):
    """A checkpoint that is missing, incomplete, corrupt or for another model; the message names its folder."""


class CheckpointWarning(UserWarning):
    """A checkpoint skipped because it does not verify."""


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}"


def checkpoint_steps(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Every ``checkpoint-<step>`` folder under output_dir, complete or not, newest first."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and path.is_dir():
            found.append((int(suffix), path))
    return sorted(found, reverse=True)


# -- writing ----------------------------------------------------------------------------------------------------


def _stage(stage: str, path: Path) -> None:
    """The testing hooks (module docstring): a kill or a pause at a named stage of a write."""
    if os.environ.get("R1FAST_TEST_KILL_AT") == f"{path.name}:{stage}":
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("R1FAST_TEST_SLOW_SAVE"):
        time.sleep(float(os.environ["R1FAST_TEST_SLOW_SAVE"]))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(path: Path, *, sync: bool = False) -> dict[str, Any]:
    """A file's size and SHA-256; sync: also flush it to disk (fsync), in the same pass."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
        if sync:
            os.fsync(f.fileno())
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    """The SHA-256 of the manifest's own content (all but this checksum), so that a damaged manifest shows."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once (see _deduplicated)."""
    return _deduplicated(model.state_dict())


def _deduplicated(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor of a state dict once, under its first name (for tied embeddings the input embedding's, which is
    the name from_pretrained loads tied weights from); a DTensor is known by its local shard."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for name, tensor in state.items():
        sharded = isinstance(tensor, DTensor)
        key = ((tensor.to_local() if sharded else tensor).data_ptr(), tuple(tensor.shape))
        if tensor.numel() == 0 or key not in seen:
            seen.add(key)
            out[name] = tensor.detach() if sharded else tensor.detach().contiguous()
    return out


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[key] = value
    metadata = {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, metadata


def _start_write(path: Path) -> Path:
    """The temporary folder of a write to `path`, empty (leftovers of an interrupted write removed)."""
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    _stage("started", path)
    return tmp


def _finish_write(path: Path, tmp: Path, model: torch.nn.Module, trainer_state: dict[str, Any], *, step: int,
                  config_hash: str, tokenizer: Any) -> Path:  # fmt: skip
    """The trainer state, the model's config files (a PEFT model's adapter config instead) and the tokenizer into
    tmp, then _seal."""
    (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2, sort_keys=True))
    if lora.is_peft_model(model):  # PeftModel.from_pretrained(base, path) loads the adapters
        model.peft_config[model.active_adapter].save_pretrained(str(tmp))
    else:
        if getattr(model, "config", None) is not None and hasattr(model.config, "save_pretrained"):
            model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:  # as loaded: save_pretrained's strict check could
            model.generation_config.to_json_file(tmp / "generation_config.json")  # refuse a hub model's own file
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(tmp))
    return _seal(path, tmp, step=step, config_hash=config_hash)


def _seal(path: Path, tmp: Path, *, step: int, config_hash: str) -> Path:
    """The manifest of every file in tmp (flushed to disk), then tmp renamed to path."""
    _stage("files", path)
    files = {str(f.relative_to(tmp)): _digest(f, sync=True) for f in sorted(tmp.rglob("*")) if f.is_file()}
    manifest = {"format": MANIFEST_FORMAT, "step": step, "config_hash": config_hash, "files": files}
    manifest["checksum"] = _manifest_checksum(manifest)
    with (tmp / MANIFEST_FILE).open("w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    for folder in {f.parent for f in tmp.rglob("*") if f.is_file()}:
        _fsync_dir(folder)
    _stage("manifest", path)
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
        _stage("retired", path)
    tmp.rename(path)
    _fsync_dir(path.parent)
    _stage("renamed", path)
    if old.exists():
        shutil.rmtree(old)
    return path


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    trainer_state: dict[str, Any], *, step: int, config_hash: str, tokenizer: Any = None,
                    model_tensors: dict[str, torch.Tensor] | None = None) -> Path:  # fmt: skip
    """Writes a checkpoint folder atomically (see the module docstring), replacing one already at `path`.

    optimizer None: an export (the model, its config and the tokenizer). tokenizer: saved when it has
    save_pretrained. step and config_hash go into the manifest. A PEFT model: its adapters alone, in PEFT's files
    (adapter_model.safetensors, adapter_config.json). model_tensors: the model's whole state dict when the model's
    own tensors are shards (a sharded model's export, gathered by r1fast.trainer.fsdp); default: the model's.
    Returns the path."""
    path = Path(path)
    tmp = _start_write(path)
    _write_model_files(path, tmp, model, optimizer, model_tensors)
    return _finish_write(path, tmp, model, trainer_state, step=step, config_hash=config_hash, tokenizer=tokenizer)


def _write_model_files(path: Path, tmp: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                       model_tensors: dict[str, torch.Tensor] | None) -> None:  # fmt: skip
    """model.safetensors (a PEFT model: adapter_model.safetensors) and, when optimizer is given,
    optimizer.safetensors into tmp (see save_checkpoint)."""
    if lora.is_peft_model(model):
        save_file(lora.adapter_tensors(model), str(tmp / ADAPTER_FILE), metadata={"format": "pt"})
    else:
        tensors = _model_tensors(model) if model_tensors is None else _deduplicated(model_tensors)
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt"})
    _stage("model", path)
    if optimizer is not None:
        tensors, metadata = _optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / OPTIMIZER_FILE), metadata=metadata)
        _stage("optimizer", path)


def _sharded_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """(model state, optimizer state) of a sharded model as torch.distributed.checkpoint.state_dict gives them
    (DTensors of this rank's shards, keyed by parameter names); the optimizer's None when it is None."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    model_state = get_model_state_dict(model)
    return model_state, None if optimizer is None else get_optimizer_state_dict(model, optimizer)


def _flat_sharded(model_state: dict, optimizer_state: dict | None) -> dict[str, torch.Tensor]:
    """The tensors of a sharded checkpoint: the model's (shared ones once) and every optimizer state tensor as
    ``optimizer.<param>.<key>``."""
    out = _deduplicated(model_state)
    for name, values in (optimizer_state or {}).get("state", {}).items():
        for key, value in values.items():
            out[f"optimizer.{name}.{key}"] = value
    return out


def write_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                     trainer_state: dict[str, Any], *, step: int, config_hash: str, tokenizer: Any = None,
                     rank_tensors: dict[str, torch.Tensor] | None = None) -> Path:  # fmt: skip
    """A checkpoint (optimizer given) or an export (None) written by the ranks of a run; every rank calls it and
    returns when it is in place. Unsharded: rank 0 writes the files of save_checkpoint. Sharded
    (r1fast.trainer.fsdp): a checkpoint's parameters and optimizer state go to ``sharded/``, each rank writing its
    shards (torch.distributed.checkpoint's safetensors writer: one file per rank, no pickle; resume on the same
    number of ranks, consolidate_checkpoint for one model.safetensors); an export gathers the whole parameters onto
    rank 0's CPU and rank 0 writes one model.safetensors. rank_tensors: what this rank alone holds (a trainer's
    state that differs between ranks), written to ``ranks/rank<r>.safetensors`` by each rank that passes it and read
    back by load_rank_tensors. Returns the path."""
    from r1fast.trainer import fsdp

    path = Path(path)
    rank = distributed.rank_and_world()[0]
    sharded = fsdp.is_sharded(model)
    whole = None
    if sharded and optimizer is None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    tmp = distributed.on_rank0(lambda: _start_write(path))
    if rank_tensors is not None:
        (tmp / RANKS_DIR).mkdir(exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in rank_tensors.items()},
                  str(tmp / RANKS_DIR / f"rank{rank}.safetensors"), metadata={"format": "pt"})  # fmt: skip
    if sharded and optimizer is not None:
        import torch.distributed.checkpoint as dcp

        model_state, optimizer_state = _sharded_state(model, optimizer)
        writer = dcp.HuggingFaceStorageWriter(str(tmp / SHARDED_DIR), save_distributed=True)
        dcp.save(_flat_sharded(model_state, optimizer_state), storage_writer=writer)
    distributed.barrier()
    if rank == 0:
        if sharded and optimizer is not None:
            _stage("optimizer", path)
        else:
            _write_model_files(path, tmp, model, optimizer, whole)
        _finish_write(path, tmp, model, trainer_state, step=step, config_hash=config_hash, tokenizer=tokenizer)
    distributed.barrier()
    return path


def load_rank_tensors(path: str | os.PathLike, rank: int) -> dict[str, torch.Tensor] | None:
    """The tensors rank `rank` passed to write_checkpoint as rank_tensors, or None when it passed none."""
    file = Path(path) / RANKS_DIR / f"rank{rank}.safetensors"
    return load_file(str(file)) if file.is_file() else None


def _init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Creates the optimizer's state tensors (an AdamW step with zero gradients and learning rate 0, which leaves
    every parameter as it is), so that a checkpoint's state can be loaded into them."""
    if optimizer.state:
        return
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


def _load_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Every rank reads its shards of a sharded checkpoint into the model and the optimizer (the same sharding as at
    save time). Raises CheckpointError when the tensors differ from the model's."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    if optimizer is not None:
        _init_optimizer_state(optimizer)
    model_state, optimizer_state = _sharded_state(model, optimizer)
    wanted = _flat_sharded(model_state, optimizer_state)  # without an optimizer, the model's tensors alone
    reader = dcp.HuggingFaceStorageReader(str(path / SHARDED_DIR))
    stored = set(reader.read_metadata().state_dict_metadata)
    missing = sorted(set(wanted) - stored)
    unexpected = sorted(k for k in stored - set(wanted) if optimizer is not None or not k.startswith("optimizer."))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    dcp.load(wanted, storage_reader=reader)
    set_model_state_dict(model, model_state)
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state)


def consolidate_checkpoint(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A sharded checkpoint (write_checkpoint of a sharded model) as one folder that
    AutoModelForCausalLM.from_pretrained loads: its model's whole tensors in one model.safetensors with its config,
    tokenizer and manifest (no optimizer), written atomically to out. One process, no process group. Raises
    CheckpointError when path does not verify or is not sharded."""
    import torch.distributed.checkpoint as dcp

    path, out = Path(path), Path(out)
    manifest = verify_checkpoint(path)
    if not (path / SHARDED_DIR).is_dir():
        raise CheckpointError(f"{path} is not a sharded checkpoint (no {SHARDED_DIR}/)")
    reader = dcp.HuggingFaceStorageReader(str(path / SHARDED_DIR))
    tensors = {name: torch.empty(meta.size, dtype=meta.properties.dtype)
               for name, meta in reader.read_metadata().state_dict_metadata.items()
               if not name.startswith("optimizer.")}  # fmt: skip
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*load in a single process.*")
        dcp.load(tensors, storage_reader=reader, no_dist=True)
    tmp = _start_write(out)
    save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt"})
    for f in path.iterdir():  # the config, generation config, tokenizer and trainer state as saved
        if f.is_file() and f.name != MANIFEST_FILE:
            shutil.copy2(f, tmp / f.name)
    return _seal(out, tmp, step=manifest["step"], config_hash=manifest["config_hash"])


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Deletes a checkpoint folder so that a crash midway leaves no half-deleted folder under its name (it is
    renamed to ``.old`` first, which finish_interrupted_saves clears)."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    path.rename(old)
    shutil.rmtree(old)


def finish_interrupted_saves(output_dir: str | os.PathLike) -> list[Path]:
    """After a crash: a complete ``<name>.tmp`` (its manifest verifies) whose ``<name>`` is missing was interrupted
    between its two renames and is put in place; every other ``.tmp`` and ``.old`` folder of a checkpoint or the
    final export is removed. Returns the folders put in place."""
    output_dir = Path(output_dir)
    restored = []
    for pattern in ("checkpoint-*.tmp", f"{FINAL_DIR}.tmp", "checkpoint-*.old", f"{FINAL_DIR}.old"):
        for leftover in output_dir.glob(pattern):
            if not leftover.is_dir():
                continue
            target = leftover.with_name(leftover.name.rsplit(".", 1)[0])
            if leftover.suffix == ".tmp" and not target.exists() and _verifies(leftover):
                leftover.rename(target)
                restored.append(target)
            else:
                shutil.rmtree(leftover)
    if restored:
        _fsync_dir(output_dir)
    return restored


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int, newest_step: int) -> list[Path]:
    """Removes the checkpoints of steps <= newest_step beyond the newest `keep` (those of later steps belong to a
    run this one replaces, and are rewritten as it reaches them). Returns the removed folders."""
    current = [path for step, path in checkpoint_steps(output_dir) if step <= newest_step]
    for path in current[keep:]:
        remove_checkpoint(path)
    return current[keep:]


# -- reading ----------------------------------------------------------------------------------------------------


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a complete, intact checkpoint (every file listed with its size and SHA-256). Raises
    CheckpointError naming the folder and what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is incomplete: no {MANIFEST_FILE} (its write was interrupted, or it was not "
                              "written by this version of r1fast)") from None  # fmt: skip
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: {MANIFEST_FILE} is corrupt") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{path}: {MANIFEST_FILE} is not an r1fast manifest ({MANIFEST_FORMAT})")
    if manifest.get("checksum") != _manifest_checksum(manifest):
        raise CheckpointError(f"{path}: {MANIFEST_FILE} does not match its own checksum (corrupt)")
    for name, want in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        size = file.stat().st_size
        if size != want["size"]:
            raise CheckpointError(f"{path}: {name} has {size} bytes, the manifest says {want['size']} (truncated?)")
        if _digest(file)["sha256"] != want["sha256"]:
            raise CheckpointError(f"{path}: {name} does not match its SHA-256 in the manifest (corrupt)")
    return manifest


def _verifies(path: Path) -> bool:
    try:
        verify_checkpoint(path)
    except CheckpointError:
        return False
    return True


def verified_step(path: str | os.PathLike) -> int | None:
    """The step of a checkpoint or export whose manifest verifies; None when there is none at path, or it does not
    verify."""
    try:
        return int(verify_checkpoint(path)["step"])
    except CheckpointError:
        return None


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint under output_dir whose manifest verifies, or None. Each newer one that does not verify
    is named in a CheckpointWarning and skipped."""
    for _, path in checkpoint_steps(output_dir):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping {e}", CheckpointWarning, stacklevel=2)
            continue
        return path
    return None


def read_checkpoint_info(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, trainer state) of a checkpoint, without verifying the files."""
    path = Path(path)
    try:
        return json.loads((path / MANIFEST_FILE).read_text()), json.loads((path / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read its manifest and trainer state ({e})") from None


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, *,
                    verify: bool = True) -> dict[str, Any]:  # fmt: skip
    """Loads the model (strictly: a missing or unexpected tensor raises) and the optimizer in place; returns the
    trainer state. verify: check the manifest first (verify_checkpoint). A PEFT model loads its adapters; a sharded
    model (r1fast.trainer.fsdp) a sharded checkpoint, on every rank (collective). FileNotFoundError when the folder
    does not exist; CheckpointError when it is incomplete, corrupt or for another model."""
    from r1fast.trainer import fsdp

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    if verify:
        verify_checkpoint(path)
    sharded = (path / SHARDED_DIR).is_dir()
    if sharded != fsdp.is_sharded(model):
        raise CheckpointError(f"{path} is {'' if sharded else 'not '}a sharded checkpoint and the model is "
                              f"{'not ' if sharded else ''}sharded: resume with the config it was written with "
                              "(fsdp)")  # fmt: skip
    if sharded:
        _load_sharded(path, model, optimizer)
        return json.loads((path / STATE_FILE).read_text())
    peft = lora.is_peft_model(model)
    if not (path / (ADAPTER_FILE if peft else MODEL_FILE)).is_file():
        raise CheckpointError(f"{path} holds {'a whole model' if peft else 'LoRA adapters'} and the model is "
                              f"{'' if peft else 'not '}a PeftModel: resume with the config it was written with "
                              "(lora_r)")  # fmt: skip
    tensors = load_file(str(path / (ADAPTER_FILE if peft else MODEL_FILE)))
    try:
        if peft:
            lora.load_adapter_tensors(model, tensors)
        else:
            expected = set(_model_tensors(model))
            missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            if missing or unexpected:
                raise ValueError(f"missing {missing[:5]}, unexpected {unexpected[:5]}")
            model.load_state_dict(tensors, strict=False)  # strict=False: a tied weight is stored under one name
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} does not match the model: {' '.join(str(e).split())[:300]}") from None
    if optimizer is not None:
        with safe_open(str(path / OPTIMIZER_FILE), framework="pt") as f:
            metadata = f.metadata()
            state: dict[int, dict[str, Any]] = {}
            for name in f.keys():
                _, index, key = name.split(".", 2)
                state.setdefault(int(index), {})[key] = f.get_tensor(name)
        for index, values in json.loads(metadata["scalars"]).items():
            state.setdefault(int(index), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    return json.loads((path / STATE_FILE).read_text())
