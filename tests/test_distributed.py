"""Data parallelism on CPU: two gloo ranks spawned by the test. Two ranks of prompts_per_step = 2 must give the
advantages and the averaged gradient of one process with prompts_per_step = 4 on the same completions, and a
training run must keep the ranks' weights identical while rank 0 alone logs and checkpoints."""

from __future__ import annotations

import datetime
import json
import os
import signal

import pytest
import torch
import torch.multiprocessing as mp

from r1fast.demo import CharTokenizer, make_policy, problems
from r1fast.trainer import GRPOConfig, GRPOTrainer, Rollout, read_metrics

WORLD = 2
ROWS = problems()[:16]


def short(prompts, completions, completion_ids, **_):
    return [1.0 if len(ids) <= 6 else 0.0 for ids in completion_ids]


def half_length(prompts, completions, completion_ids, **_):
    return [len(ids) / 12 for ids in completion_ids]


def make(prompts_per_step: int, **config) -> GRPOTrainer:
    tokenizer = CharTokenizer()
    defaults = dict(num_generations=4, micro_batch_size=4, max_completion_length=12, sampler_block_size=4,
                    learning_rate=1e-2)  # fmt: skip
    config = GRPOConfig(prompts_per_step=prompts_per_step, **{**defaults, **config})
    return GRPOTrainer(make_policy(tokenizer, seed=0), tokenizer, [short, half_length], ROWS, config,
                       log_stream=None)  # fmt: skip


def rank_slice(rollout: Rollout, rank: int) -> Rollout:
    n = len(rollout.completion_ids) // WORLD
    part = slice(rank * n, (rank + 1) * n)
    return Rollout(rollout.prompt_ids[part], rollout.completion_ids[part], rollout.finish_reasons[part],
                   rollout.texts[part], rollout.rewards_per_func[part], rollout.advantages[part])  # fmt: skip


def _worker(rank: int, init_file: str, work_dir: str, task: str, config: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))  # fmt: skip
    try:
        if task == "gradient":
            tr = make(2, **config)
            full = torch.load(f"{work_dir}/rollout.pt", weights_only=False)
            mine = rank_slice(full, rank)
            mine.advantages = tr.advantages(mine.rewards_per_func)
            tr.model.zero_grad()
            metrics = tr.loss_and_backward(tr.micro_batches(mine), None, None)
            params = list(tr.model.parameters())
            from r1fast.trainer.distributed import average_gradients

            average_gradients(params)
            torch.save({"advantages": mine.advantages, "grads": [p.grad for p in params], "loss": metrics["loss"]},
                       f"{work_dir}/rank{rank}.pt")  # fmt: skip
        elif task == "resume":
            make(2, max_steps=2, save_steps=1, output_dir=f"{work_dir}/run", **config).train()
            if rank == 0:  # a damaged newest checkpoint: every rank must resume from checkpoint-1
                data = bytearray(open(f"{work_dir}/run/checkpoint-2/optimizer.safetensors", "rb").read())
                data[-1] ^= 1
                open(f"{work_dir}/run/checkpoint-2/optimizer.safetensors", "wb").write(bytes(data))
            else:  # rank 1 never looks for itself: it resumes where rank 0 says
                from r1fast.trainer import checkpoint

                checkpoint.latest_checkpoint = checkpoint.verify_checkpoint = None
            dist.barrier()
            tr = make(2, max_steps=50, output_dir=f"{work_dir}/run", **config)
            loaded = []
            load = tr.load
            tr.load = lambda path, **kw: (loaded.append(str(path)), load(path, **kw))
            if rank == 1:  # a stop signal to rank 1 alone, during its second step: every rank stops after it
                calls, reward = [], tr.reward_funcs[0]

                def signalling(**kwargs):
                    calls.append(1)
                    if len(calls) == 2:
                        os.kill(os.getpid(), signal.SIGTERM)
                    return reward(**kwargs)

                tr.reward_funcs[0] = signalling
            tr.train(resume_from="latest")
            torch.save({"params": [p.detach() for p in tr.model.parameters()], "loaded": loaded,
                        "steps_done": tr.steps_done}, f"{work_dir}/rank{rank}.pt")  # fmt: skip
        else:
            tr = make(2, max_steps=2, output_dir=f"{work_dir}/run", **config)
            tr.train()
            torch.save({"params": [p.detach() for p in tr.model.parameters()],
                        "rows": [r["prompt"] for b in range(2) for r in tr.rows_for_batch(b)]},
                       f"{work_dir}/rank{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


def spawn(tmp_path, task: str, **config) -> list[dict]:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), task, config), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("loss_type, scale_rewards, options", [
    ("dapo", "batch", {}), ("grpo", "group", {}),
    # The entropy mask's quantile over both ranks' tokens (of a micro-batch, as TRL: one per rank here, so that the
    # gathered tokens are the single process's micro-batch).
    ("dapo", "group", {"top_entropy_quantile": 0.5, "micro_batch_size": 8}),
])  # fmt: skip
def test_two_ranks_give_the_single_process_advantages_and_gradient(tmp_path, loss_type, scale_rewards, options,
                                                                   seed):  # fmt: skip
    single_options = {**options, "micro_batch_size": 2 * options["micro_batch_size"]} if options else {}
    single = make(4, loss_type=loss_type, scale_rewards=scale_rewards, **single_options)
    rollout = single.generate(single.rows_for_batch(0), seed=seed)
    assert rollout.advantages.abs().sum() > 0
    torch.save(rollout, tmp_path / "rollout.pt")
    single.model.zero_grad()
    single.loss_and_backward(single.micro_batches(rollout), None, None)
    want = [p.grad for p in single.model.parameters()]

    ranks = spawn(tmp_path, "gradient", loss_type=loss_type, scale_rewards=scale_rewards, **options)
    torch.testing.assert_close(torch.cat([r["advantages"] for r in ranks]), rollout.advantages)
    for g0, g1, w in zip(ranks[0]["grads"], ranks[1]["grads"], want, strict=True):
        assert torch.equal(g0, g1)  # averaged: every rank holds the same gradient
        torch.testing.assert_close(g0, w, rtol=1e-5, atol=1e-6 * w.abs().max().item() + 1e-9)


def test_two_rank_training_keeps_weights_identical_and_rank0_logs(tmp_path):
    ranks = spawn(tmp_path, "train")
    initial = list(make_policy(CharTokenizer(), seed=0).parameters())
    changed = False
    for a, b, c in zip(ranks[0]["params"], ranks[1]["params"], initial, strict=True):
        assert torch.equal(a, b)
        changed |= not torch.equal(a, c)
    assert changed
    assert not set(ranks[0]["rows"]) & set(ranks[1]["rows"])  # each rank trained on prompts of its own
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2]
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["world_size"] == WORLD and state["step"] == 2


def test_every_rank_resumes_from_the_checkpoint_rank0_chose_and_stops_after_the_same_step(tmp_path):
    from r1fast.trainer import verify_checkpoint

    ranks = spawn(tmp_path, "resume")
    assert ranks[0]["loaded"] == ranks[1]["loaded"] == [str(tmp_path / "run" / "checkpoint-1")]
    assert ranks[0]["steps_done"] == ranks[1]["steps_done"] == 3  # resumed at 1; rank 1 signalled in step 3
    for a, b in zip(ranks[0]["params"], ranks[1]["params"], strict=True):
        assert torch.equal(a, b)
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]
    assert verify_checkpoint(tmp_path / "run" / "checkpoint-3")["step"] == 3
