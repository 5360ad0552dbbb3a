"""Checkpoints: the model and the optimizer state in safetensors, the trainer's state in JSON, no pickle; written so
that a crash at any moment leaves every checkpoint either complete or recognisably incomplete.

Layout of ``<output_dir>/checkpoint-<step>/``: ``model.safetensors`` (parameters and persistent buffers; a tied
weight stored once, under the name from_pretrained loads it from), ``optimizer.safetensors`` (every optimizer state
tensor as ``state.<param>.<key>``; the param groups and non-tensor state in its metadata), ``trainer_state.json``
(step, config, world size), ``config.json`` and ``generation_config.json`` (the model's), the tokenizer's files,
and ``manifest.json``: the size and SHA-256 of every other file, the step and the config's fingerprint. A final
export (``final/``) is the same without the optimizer. ``AutoModelForCausalLM.from_pretrained(checkpoint)`` works.

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

from r1fast.trainer.validation import InputError

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
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
    """The state dict with each shared tensor once, under its first name (for tied embeddings the input
    embedding's, which is the name from_pretrained loads tied weights from)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if tensor.numel() == 0 or key not in seen:
            seen.add(key)
            out[name] = tensor.detach().contiguous()
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


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    trainer_state: dict[str, Any], *, step: int, config_hash: str,
                    tokenizer: Any = None) -> Path:  # fmt: skip
    """Writes a checkpoint folder atomically (see the module docstring), replacing one already at `path`.

    optimizer None: an export (the model, its config and the tokenizer). tokenizer: saved when it has
    save_pretrained. step and config_hash go into the manifest. Returns the path."""
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    _stage("started", path)
    save_file(_model_tensors(model), str(tmp / MODEL_FILE), metadata={"format": "pt"})
    _stage("model", path)
    if optimizer is not None:
        tensors, metadata = _optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / OPTIMIZER_FILE), metadata=metadata)
        _stage("optimizer", path)
    (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2, sort_keys=True))
    if getattr(model, "config", None) is not None and hasattr(model.config, "save_pretrained"):
        model.config.save_pretrained(tmp)
    if getattr(model, "generation_config", None) is not None:  # as loaded: save_pretrained's strict check could
        model.generation_config.to_json_file(tmp / "generation_config.json")  # refuse a hub model's own file
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(tmp))
    _stage("files", path)
    files = {str(f.relative_to(tmp)): _digest(f, sync=True) for f in sorted(tmp.rglob("*")) if f.is_file()}
    manifest = {"format": MANIFEST_FORMAT, "step": step, "config_hash": config_hash, "files": files}
    manifest["checksum"] = _manifest_checksum(manifest)
    with (tmp / MANIFEST_FILE).open("w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    _stage("manifest", path)
    if path.exists():
        path.rename(old)
        _stage("retired", path)
    tmp.rename(path)
    _fsync_dir(path.parent)
    _stage("renamed", path)
    if old.exists():
        shutil.rmtree(old)
    return path


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
    trainer state. verify: check the manifest first (verify_checkpoint). FileNotFoundError when the folder does not
    exist; CheckpointError when it is incomplete, corrupt or for another model."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    if verify:
        verify_checkpoint(path)
    tensors = load_file(str(path / MODEL_FILE))
    expected = set(_model_tensors(model))
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    try:
        model.load_state_dict(tensors, strict=False)  # strict=False: a tied weight is stored under one name
    except RuntimeError as e:
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
