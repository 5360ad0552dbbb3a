"""FSDP2 on CPU: gloo ranks spawned by the test shard the demo policy with fully_shard (float32 gathers, so that
the sharded run can be compared with one process to float rounding). One sharded optimizer step equals the
single-process step on the same completions; the sampler on the gathered weights samples the same tokens as on the
unsharded model; a sharded checkpoint resumed in fresh processes continues bit-identically; consolidation and the
final export load in transformers."""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.multiprocessing as mp
from test_distributed import ROWS
from test_distributed import make as make_data_parallel

from r1fast.demo import CharTokenizer, make_policy
from r1fast.trainer import GRPOConfig, GRPOTrainer, InputError, Rollout
from r1fast.trainer.checkpoint import consolidate_checkpoint, verify_checkpoint


def make(prompts_per_step: int, **config) -> GRPOTrainer:
    """test_distributed's trainer, with float32 gathers (FSDP against one process to float rounding), a KL reference
    and two steps."""
    defaults = dict(fsdp_param_dtype="float32", beta=0.04, max_steps=2)
    return make_data_parallel(prompts_per_step, **{**defaults, **config})


def rank_slice(rollout: Rollout, rank: int, world: int) -> Rollout:
    n = len(rollout.completion_ids) // world
    part = slice(rank * n, (rank + 1) * n)
    return Rollout(rollout.prompt_ids[part], rollout.completion_ids[part], rollout.finish_reasons[part],
                   rollout.texts[part], rollout.rewards_per_func[part], rollout.advantages[part])  # fmt: skip


def whole_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from r1fast.trainer.fsdp import full_tensor

    return {name: full_tensor(p.detach()).clone() for name, p in model.named_parameters()}


def one_step(trainer: GRPOTrainer, rollout: Rollout) -> dict[str, torch.Tensor]:
    """The optimizer step of train_step on a given rollout (reference log-probs as train_step gets them). Returns
    the gradients it applied (averaged over ranks, before clipping)."""
    from r1fast.trainer.fsdp import full_tensor

    batches = trainer.micro_batches(rollout)
    trainer.model.eval()
    ref = [trainer._logps(trainer.ref_model, b) for b in batches]
    trainer.model.train()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.loss_and_backward(batches, None, ref)
    grads = {name: full_tensor(p.grad).clone() for name, p in trainer.model.named_parameters()}
    trainer.optimizer_step()
    return grads


def _worker(rank: int, world: int, init_file: str, work_dir: str, task: str, seed: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))  # fmt: skip
    out = {}
    try:
        if task in ("step", "step4"):
            tr = make(4 // world, fsdp=True)
            assert type(tr.model).__name__.startswith("FSDP")
            if task == "step":  # the rollout's tokens before any update, on the gathered weights
                out["tokens"] = tr.generate(ROWS[:2], seed=seed).completion_ids
            mine = rank_slice(torch.load(f"{work_dir}/rollout.pt", weights_only=False), rank, world)
            mine.advantages = tr.advantages(mine.rewards_per_func)
            out["grads"] = one_step(tr, mine)
            out["params"] = whole_params(tr.model)
            out["local_numel"] = sum(p.to_local().numel() for p in tr.model.parameters())
            out["optimizer_numel"] = sum(s["exp_avg"].to_local().numel() for s in tr.optimizer.state.values())
            if task == "step4":
                tr.save(f"{work_dir}/saved")
        # A run of three optimizer steps on two generation batches (num_iterations 2) with a sharded checkpoint after
        # each: checkpoint-1 and checkpoint-3 lie inside a batch, so they hold each rank's rollout as well.
        run_config = dict(fsdp=True, save_steps=1, num_iterations=2, max_steps=3, output_dir=f"{work_dir}/run")
        if task == "step":
            run = make(2, seed=seed, **run_config)
            run.train()
            out["run"] = whole_params(run.model)
        if task == "resume":  # fresh processes: nothing of the first run but its files
            run = make(2, seed=seed, **run_config)
            run.train(resume_from=f"{work_dir}/run/checkpoint-1")
            out["run"] = whole_params(run.model)
        torch.save(out, f"{work_dir}/{task}{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn(tmp_path, task: str, world: int, seed: int) -> list[dict]:
    init = tmp_path / f"init-{task}"
    mp.spawn(_worker, args=(world, str(init), str(tmp_path), task, seed), nprocs=world, join=True)
    return [torch.load(tmp_path / f"{task}{r}.pt", weights_only=False) for r in range(world)]


def single_step(tmp_path, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One process: the rollout every rank trains on (saved for them); the gradients and parameters of its step."""
    single = make(4)
    rollout = single.generate(single.rows_for_batch(0), seed=seed)
    assert rollout.advantages.abs().sum() > 0
    torch.save(rollout, tmp_path / "rollout.pt")
    grads = one_step(single, rollout)
    return grads, whole_params(single.model)


def assert_same_step(rank: dict, want: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]) -> None:
    """The rank's gradients equal the single process's to float32 rounding of the summation order, and so do its
    parameters after the step (AdamW's first step is about lr * g / (|g| + eps): 1e-4 is 1% of lr, room for
    gradients near eps whose rounding the division amplifies; a wrong update is of the order of lr)."""
    grads, params = want
    initial = dict(make_policy(CharTokenizer(), seed=0).named_parameters())
    assert rank["params"].keys() == params.keys() == rank["grads"].keys()
    for name, w in params.items():
        assert not torch.equal(w, initial[name])  # the step moved every parameter
        g = grads[name]
        torch.testing.assert_close(rank["grads"][name], g, rtol=1e-4, atol=1e-5 * g.abs().max().item(), msg=name)
        torch.testing.assert_close(rank["params"][name], w, rtol=0, atol=1e-4, msg=name)


def test_two_rank_fsdp_step_sampler_checkpoint_and_resume(tmp_path, seed):
    from transformers import AutoModelForCausalLM

    want = single_step(tmp_path, seed)
    ranks = spawn(tmp_path, "step", 2, seed)
    assert_same_step(ranks[0], want)
    total = sum(p.numel() for p in want[1].values())
    assert all(r["local_numel"] < 0.6 * total and r["optimizer_numel"] < 0.6 * total for r in ranks)  # sharded

    # The sampler on the gathered weights: the unsharded model's tokens on the same prompts and seed.
    unsharded = make(2).generate(ROWS[:2], seed=seed).completion_ids
    assert ranks[0]["tokens"] == ranks[1]["tokens"] == unsharded

    # Save -> the processes end -> fresh processes resume from checkpoint-1 (inside the first generation batch, whose
    # rollout each rank saved): bit-identical to the run.
    run = ranks[0]["run"]
    for name in run:
        assert torch.equal(ranks[1]["run"][name], run[name])
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoint-2" / "sharded").iterdir()) == [
        "shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoint-1" / "ranks").iterdir()) == [
        "rank0.safetensors", "rank1.safetensors"]
    assert not (tmp_path / "run" / "checkpoint-2" / "ranks").exists()  # a batch boundary: nothing pending
    resumed = spawn(tmp_path, "resume", 2, seed)
    for name in run:
        assert torch.equal(resumed[0]["run"][name], run[name]), name

    # Consolidation of the sharded checkpoint, and the final export: one model.safetensors from_pretrained loads.
    for folder in (consolidate_checkpoint(tmp_path / "run" / "checkpoint-3", tmp_path / "whole"),
                   tmp_path / "run" / "final"):  # fmt: skip
        verify_checkpoint(folder)
        loaded = dict(AutoModelForCausalLM.from_pretrained(folder).named_parameters())
        for name in run:
            assert torch.equal(loaded[name], run[name]), (folder, name)


def test_four_rank_fsdp_step_equals_one_process(tmp_path, seed):
    from transformers import AutoModelForCausalLM

    want = single_step(tmp_path, seed)
    ranks = spawn(tmp_path, "step4", 4, seed)
    for r in ranks:
        assert_same_step(r, want)
    whole = consolidate_checkpoint(tmp_path / "saved", tmp_path / "whole")
    loaded = dict(AutoModelForCausalLM.from_pretrained(whole).named_parameters())
    for name, p in ranks[0]["params"].items():
        assert torch.equal(loaded[name], p), name


def test_fsdp_without_a_process_group_or_with_unsupported_options_is_refused():
    with pytest.raises(InputError, match="torchrun"):
        make(2, fsdp=True)
    assert GRPOConfig(fsdp="full_shard auto_wrap").fsdp and not GRPOConfig().fsdp  # TRL's spelling and default
    for bad in (dict(fsdp="offload"), dict(fsdp=True, lora_r=8), dict(fsdp_param_dtype="int8")):
        with pytest.raises(ValueError):
            GRPOConfig(**bad)


def test_consolidating_an_unsharded_checkpoint_is_refused(tmp_path):
    tr = make(2, max_steps=1)
    tr.save(tmp_path / "plain")
    with pytest.raises(ValueError, match="not a sharded checkpoint"):
        consolidate_checkpoint(tmp_path / "plain", tmp_path / "whole")
