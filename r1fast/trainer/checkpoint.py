"""Checkpoints: the model and the optimizer state in safetensors, the trainer's state in JSON. No pickle.

Layout of ``<output_dir>/checkpoint-<step>/``: ``model.safetensors`` (the model's parameters and buffers; tied
weights stored once), ``optimizer.safetensors`` (every optimizer state tensor as ``state.<param>.<key>``; the
param groups and non-tensor state in its metadata), ``trainer_state.json`` (step, config, LR-scheduler state).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_file, save_model

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}"


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step under output_dir, or None."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


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


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    trainer_state: dict[str, Any]) -> Path:  # fmt: skip
    """Writes the checkpoint directory (trainer_state.json last, so a checkpoint without it is incomplete)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / MODEL_FILE))
    tensors, metadata = _optimizer_tensors(optimizer)
    save_file(tensors, str(path / OPTIMIZER_FILE), metadata=metadata)
    tmp = path / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(trainer_state, indent=2, sort_keys=True))
    tmp.replace(path / STATE_FILE)
    return path


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
                    ) -> dict[str, Any]:  # fmt: skip
    """Loads the model (strictly: a missing or unexpected tensor raises) and the optimizer in place; returns the
    trainer state. FileNotFoundError when the directory is not a complete checkpoint."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete r1fast checkpoint (no {STATE_FILE})")
    missing, unexpected = load_model(model, str(path / MODEL_FILE), strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}")
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
