"""The GRPO trainer on CPU: its log-probs are the sampler's, its micro-batched gradient is the reference loss's,
a resumed run is the uninterrupted one, and bad config or input raises."""

from __future__ import annotations

import json
import math

import pytest
import torch

from r1fast import reference
from r1fast.demo import CharTokenizer, make_policy, problems
from r1fast.trainer import GRPOConfig, GRPOTrainer, latest_checkpoint, load_checkpoint, read_metrics
from r1fast.trainer.loop import lr_factor

ROWS = problems()[:24]
SMALL = dict(prompts_per_step=4, num_generations=4, micro_batch_size=16, max_completion_length=12,
             sampler_block_size=4, learning_rate=1e-2)  # fmt: skip


def trainer(seed: int = 0, rewards=("accuracy", "format"), rows=ROWS, model=None, **config) -> GRPOTrainer:
    tokenizer = CharTokenizer()
    model = model if model is not None else make_policy(tokenizer, seed=0)
    return GRPOTrainer(model, tokenizer, list(rewards), rows, GRPOConfig(**{**SMALL, "seed": seed, **config}),
                       log_stream=None)  # fmt: skip


def grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_trainer_logps_are_the_samplers_at_every_completion_token(seed):
    # The hidden state that predicts completion token t sits at prompt_len - 1 + t of the right-padded micro-batch:
    # if the gather were off by one the log-probs would not match the sampler's.
    tr = trainer(seed, temperature=0.8)
    rollout = tr.generate(tr.rows_for_batch(0), seed=seed)
    groups = tr.sampler.generate([rollout.prompt_ids[i] for i in range(0, 16, 4)], tr.config.sampling_params(seed))
    sampled = [c for g in groups for c in g.completions]
    (batch,) = tr.micro_batches(rollout)  # micro_batch_size 16: the whole rollout
    logps = tr._logps(tr.model, batch)
    for row, completion in enumerate(sampled):
        assert completion.token_ids == rollout.completion_ids[row]
        n = len(completion.token_ids)
        assert batch["mask"][row].sum() == n
        torch.testing.assert_close(logps[row, :n], torch.tensor(completion.logprobs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "luspo", "cispo"])
def test_micro_batched_gradient_is_the_reference_loss_gradient(loss_type, seed):
    # micro-batches of 4 (TRL's accumulation normalisers) against the whole batch through the reference, with the
    # old log-probs taken before an update so the ratio is not 1 (num_iterations = 2's second pass).
    tr = trainer(seed, loss_type=loss_type, micro_batch_size=4, temperature=0.9, epsilon_high=0.28)
    rollout = tr.generate(tr.rows_for_batch(0), seed=seed)
    # Advantages made non-degenerate even where a group's rewards tie.
    rollout.advantages = torch.randn(rollout.advantages.shape, generator=torch.Generator().manual_seed(seed))
    batches = tr.micro_batches(rollout)
    old = [tr._logps(tr.model, b) for b in batches]
    with torch.no_grad():  # move the policy so that ratio != 1 and some tokens clip
        for p in tr.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tr.model.zero_grad()
    metrics = tr.loss_and_backward(batches, old, None)
    got = grads(tr.model)

    tr.model.zero_grad()
    model64 = tr.model.double()
    old_padded = torch.zeros(len(rollout.completion_ids), max(len(c) for c in rollout.completion_ids)).double()
    for k, b in enumerate(batches):
        old_padded[4 * k : 4 * k + 4, : b["mask"].shape[1]] = old[k].double() * b["mask"]
    logps_loss = _reference_with_old(model64, rollout, tr.config, old_padded)
    logps_loss.backward()
    for g, p in zip(got, model64.parameters(), strict=True):
        torch.testing.assert_close(g.double(), p.grad, rtol=1e-4, atol=1e-4 * p.grad.abs().max().item() + 1e-7)
    assert math.isclose(metrics["loss"], logps_loss.item(), rel_tol=1e-4, abs_tol=1e-6)


@pytest.mark.parametrize("loss_type, level, options", [
    ("dapo", "token", {}), ("grpo", "sequence", {}),
    ("grpo", "token", dict(top_entropy_quantile=0.5, entropy_coef=0.02, off_policy_mask_threshold=-0.05)),
    ("vespo", "token", dict(entropy_coef=0.01)),
])  # fmt: skip
def test_triton_loss_backend_gives_the_reference_backends_gradient(loss_type, level, options, seed):
    # The trainer's loop on the Triton kernels (through the interpreter on CPU), old log-probs off-policy and a KL,
    # and TRL's loss options through the trainer's config.
    got = []
    for backend in ("reference", "triton"):
        tr = trainer(seed, loss_type=loss_type, importance_sampling_level=level, loss_backend=backend, beta=0.05,
                     temperature=0.9, **options)  # fmt: skip
        rollout = tr.generate(tr.rows_for_batch(0), seed=seed)
        rollout.advantages = torch.randn(rollout.advantages.shape, generator=torch.Generator().manual_seed(seed))
        batches = tr.micro_batches(rollout)
        old = [tr._logps(tr.model, b) + 0.1 for b in batches]
        ref = [tr._logps(tr.ref_model, b) for b in batches]
        tr.model.zero_grad()
        metrics = tr.loss_and_backward(batches, old, ref)
        got.append((metrics, grads(tr.model)))
    (want_metrics, want), (metrics, grads_triton) = got
    for a, b in zip(want, grads_triton, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * a.abs().max().item() + 1e-8)
    assert metrics["loss"] == pytest.approx(want_metrics["loss"], rel=1e-4, abs=1e-6)


def test_sampler_correction_weighs_the_loss_by_the_old_over_the_samplers_probability(seed):
    # The sampler's log-probs moved off the policy's (as a bf16 engine's would be): the loss is the reference's
    # with TRL's ratio pi_old / pi_sampler, truncated per token, and the off-policy mask reads the sampler's.
    tr = trainer(seed, micro_batch_size=8, temperature=0.9, vllm_importance_sampling_mode="token_truncate",
                 vllm_importance_sampling_clip_max=1.1, off_policy_mask_threshold=0.0)  # fmt: skip
    rollout = tr.generate(tr.rows_for_batch(0), seed=seed)
    rollout.advantages = -torch.rand(rollout.advantages.shape, generator=torch.Generator().manual_seed(seed))
    noise = torch.Generator().manual_seed(seed + 1)
    rollout.sampling_logps = [[x + 0.6 * (torch.rand(1, generator=noise).item() - 0.5) for x in lp]
                              for lp in rollout.sampling_logps]  # fmt: skip
    batches = tr.micro_batches(rollout)
    old = [tr._logps(tr.model, b) for b in batches]
    ratios, sampling_metrics = tr.importance_sampling_ratios(batches, old)
    assert 0.9 < sampling_metrics["sampling/importance_sampling_ratio/mean"] < 1.1
    assert sampling_metrics["sampling/importance_sampling_ratio/max"] == pytest.approx(1.1)
    kept = [reference.off_policy_mask(b["advantages"][:, None], o, b["sampling_logps"], b["mask"], 0.0)
            for b, o in zip(batches, old, strict=True)]  # fmt: skip
    assert 0 < sum(k.sum().item() for k in kept) < len(rollout.completion_ids)  # the mask drops some sequences
    tr.model.zero_grad()
    metrics = tr.loss_and_backward(batches, old, None, ratios)
    got = grads(tr.model)

    tr.model.zero_grad()
    model64 = tr.model.double()
    t = max(len(c) for c in rollout.completion_ids)
    pad = lambda xs: torch.cat([torch.nn.functional.pad(x.double(), (0, t - x.shape[1])) for x in xs])  # noqa: E731
    masks = pad([b["mask"] for b in batches])
    loss = _reference_with_old(model64, rollout, tr.config, pad(old) * masks, sampling_logps=pad(
        [b["sampling_logps"] for b in batches]), importance_sampling_ratio=pad(ratios))
    loss.backward()
    for g, p in zip(got, model64.parameters(), strict=True):
        torch.testing.assert_close(g.double(), p.grad, rtol=1e-4, atol=1e-4 * p.grad.abs().max().item() + 1e-7)
    assert math.isclose(metrics["loss"], loss.item(), rel_tol=1e-4, abs_tol=1e-6)


def test_a_step_compares_the_samplers_log_probs_with_the_policys(seed):
    # TRL's default correction on: the old log-probs are computed at every step and the sampler's agree with them
    # (same weights, same transform, fp32), so the ratio is 1 and nothing is masked.
    tr = trainer(seed, temperature=0.9)
    assert tr.config.vllm_importance_sampling_correction
    metrics = tr.train_step()
    assert metrics["sampling/sampling_logp_difference/max"] < 1e-4
    assert metrics["sampling/importance_sampling_ratio/min"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["sampling/importance_sampling_ratio/max"] == pytest.approx(1.0, abs=1e-3)


def test_adaptive_entropy_bonus_applies_the_previous_steps_coefficient_and_moves_it(seed):
    # TRL's controller: no bonus before the first measurement; entropy below target -> the coefficient grows by delta
    # and applies from the next optimizer step, where the loss is the static bonus's with that coefficient.
    adaptive = trainer(seed, temperature=0.9, use_adaptive_entropy=True, entropy_coef=0.1, entropy_target=100.0,
                       entropy_coef_delta=0.02)  # fmt: skip
    rollout = adaptive.generate(adaptive.rows_for_batch(0), seed=seed)
    rollout.advantages = torch.randn(rollout.advantages.shape, generator=torch.Generator().manual_seed(seed))
    batches = adaptive.micro_batches(rollout)
    losses = []
    for _ in range(2):
        adaptive.model.zero_grad()
        losses.append(adaptive.loss_and_backward(batches, None, None))
    first, second = losses
    assert first["entropy_coef"] == pytest.approx(0.12) and second["entropy_coef"] == pytest.approx(0.14)
    assert adaptive.last_world_entropy == pytest.approx(second["entropy"], rel=1e-5)  # one micro-batch: its mean
    for coef, got in ((0.0, first), (0.12, second)):
        static = trainer(seed, temperature=0.9, entropy_coef=coef, model=adaptive.model)
        want = static.loss_and_backward(batches, None, None)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6, abs=1e-7)
    below = trainer(seed, temperature=0.9, use_adaptive_entropy=True, entropy_coef=0.1, entropy_target=0.0)
    below.loss_and_backward(batches, None, None)
    assert below.entropy_coef == pytest.approx(0.095) and below.last_world_entropy > 0.0


def _reference_with_old(model, rollout, config, old_logps, **inputs) -> torch.Tensor:
    logps, masks = [], []
    t = old_logps.shape[1]
    for prompt, completion in zip(rollout.prompt_ids, rollout.completion_ids, strict=True):
        ids = torch.tensor([prompt + completion])
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1] / config.temperature
        lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
        logps.append(torch.nn.functional.pad(lp, (0, t - len(completion))))
        masks.append(torch.tensor([1.0] * len(completion) + [0.0] * (t - len(completion)), dtype=torch.float64))
    loss, _ = reference.policy_loss(torch.stack(logps), torch.stack(masks), rollout.advantages.double(), old_logps,
                                    **inputs, **config.loss_options())  # fmt: skip
    return loss


def short(prompts, completions, completion_ids, **_):
    """A reward the tiny random policy can learn in a few steps: 1 for completions of at most 6 tokens."""
    return [1.0 if len(ids) <= 6 else 0.0 for ids in completion_ids]


def test_resumed_run_is_the_uninterrupted_run(tmp_path, seed):
    # The adaptive entropy bonus's controller is part of the state: its coefficient grows at every optimizer step.
    # Steps are optimizer steps (TRL's): with num_iterations 2 a generation batch spans two steps, and save_steps 3
    # puts checkpoint-3 between the two steps of the second batch, so the resumed run needs the batch it saved.
    config = dict(max_steps=8, save_steps=3, num_iterations=2, lr_scheduler_type="linear", warmup_steps=1,
                  rewards=[short], use_adaptive_entropy=True, entropy_coef=0.01, entropy_target=100.0)  # fmt: skip
    straight = trainer(seed, output_dir=str(tmp_path / "straight"), **config)
    straight.train()

    class Killed(Exception):
        pass

    interrupted = trainer(seed, output_dir=str(tmp_path / "resumed"), **config)
    step = interrupted.train_step
    interrupted.train_step = lambda: step() if interrupted.step < 5 else (_ for _ in ()).throw(Killed())
    with pytest.raises(Killed):  # killed during its sixth step, after checkpoint-3
        interrupted.train()
    assert latest_checkpoint(tmp_path / "resumed").name == "checkpoint-3"
    resumed = trainer(seed, output_dir=str(tmp_path / "resumed"), **config)
    generated = []
    resumed.prepare_batch = lambda prepare=resumed.prepare_batch: generated.append(resumed.step) or prepare()
    resumed.train(resume_from="latest")
    assert generated == [4, 6]  # step 4 used the saved batch of steps 3-4; it was not generated again
    assert resumed.step == straight.step == 8
    initial = make_policy(CharTokenizer(), seed=0)
    for a, b, c in zip(straight.model.parameters(), resumed.model.parameters(), initial.parameters(), strict=True):
        assert torch.equal(a, b) and not torch.equal(a, c)
    want = read_metrics(tmp_path / "straight")
    got = read_metrics(tmp_path / "resumed")
    assert [m["step"] for m in got] == list(range(1, 9))
    # The rollout's metrics are on the step that generated it (TRL logs them once per generation).
    assert [("reward" in m) for m in got] == [True, False] * 4
    for key in ("reward", "completions/mean_length", "loss", "learning_rate", "grad_norm", "entropy_coef"):
        assert [m.get(key) for m in got] == [m.get(key) for m in want], key
    # The optimizer state round-trips exactly through the checkpoint.
    fresh = trainer(seed, **config)
    load_checkpoint(latest_checkpoint(tmp_path / "straight"), fresh.model, fresh.optimizer)
    for p, q in zip(fresh.optimizer.param_groups[0]["params"], straight.optimizer.param_groups[0]["params"],
                    strict=True):  # fmt: skip
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh.optimizer.state[p][key], straight.optimizer.state[q][key])


def test_grpo_steps_raise_the_reward_of_a_learnable_reward(seed):
    tr = trainer(seed, rewards=[short], max_steps=15, learning_rate=3e-3, max_completion_length=10)
    history = tr.train()
    first, last = history[0]["rewards/short/mean"], sum(m["rewards/short/mean"] for m in history[-3:]) / 3
    assert last > first + 0.2, (first, last)


def test_gradient_checkpointing_gives_the_same_gradient(seed):
    plain, checkpointed = trainer(seed), trainer(seed, gradient_checkpointing=True)
    rollout = plain.generate(plain.rows_for_batch(0), seed=seed)
    rollout.advantages = torch.randn(rollout.advantages.shape, generator=torch.Generator().manual_seed(seed))
    got = []
    for tr in (plain, checkpointed):
        tr.model.train()
        tr.loss_and_backward(tr.micro_batches(rollout), None, None)
        got.append(grads(tr.model))
    model = checkpointed.model
    assert getattr(model, "is_activation_checkpointing", None) or getattr(model, "is_gradient_checkpointing", None)
    for a, b in zip(*got, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_kl_to_the_frozen_initial_policy(seed):
    tr = trainer(seed, beta=0.1, max_steps=3, learning_rate=3e-2, rewards=[short])
    history = tr.train()
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first step's policy is the reference
    assert history[-1]["kl"] > 1e-4
    for a, b in zip(tr.ref_model.parameters(), make_policy(CharTokenizer(), seed=0).parameters(), strict=True):
        assert torch.equal(a, b) and not a.requires_grad


def test_user_reward_sees_dataset_columns_repeated_per_completion(seed):
    seen = {}

    def spy(prompts, completions, solution, completion_ids, **_):
        seen.update(prompts=prompts, solution=solution, n=len(completions), ids=completion_ids)
        return [None] * len(completions)  # skipping every completion gives zero advantages, not NaN

    tr = trainer(seed, rewards=[spy, "format"])
    rollout = tr.generate(tr.rows_for_batch(0), seed=seed)
    rows = tr.rows_for_batch(0)
    assert seen["n"] == 16 and seen["prompts"] == [r["prompt"] for r in rows for _ in range(4)]
    assert seen["solution"] == [r["solution"] for r in rows for _ in range(4)]
    assert seen["ids"] == rollout.completion_ids
    assert torch.isnan(rollout.rewards_per_func[:, 0]).all() and torch.isfinite(rollout.advantages).all()


def test_every_row_is_seen_once_per_epoch_and_the_order_follows_the_seed():
    tr = trainer(0, rows=ROWS[:10], prompts_per_step=5, micro_batch_size=20)
    epoch = [r["prompt"] for b in range(2) for r in tr.rows_for_batch(b)]
    assert sorted(epoch) == sorted(r["prompt"] for r in ROWS[:10])
    assert [r["prompt"] for b in range(2, 4) for r in tr.rows_for_batch(b)] != epoch  # a fresh shuffle
    other = trainer(1, rows=ROWS[:10], prompts_per_step=5, micro_batch_size=20)
    assert [r["prompt"] for r in other.rows_for_batch(0)] != epoch[:5]


def test_steps_are_optimizer_steps_and_an_epoch_run_counts_num_iterations_per_batch(seed):
    # TRL's max_steps -1: num_train_epochs over the dataset, each generation batch used num_iterations times.
    tr = trainer(seed, rows=ROWS[:10], prompts_per_step=5, micro_batch_size=20, max_steps=-1, num_train_epochs=1.5,
                 num_iterations=2, max_completion_length=4)  # fmt: skip
    assert tr.total_steps == 3 * 2  # ceil(1.5 * 10 / 5) generation batches
    generated = []
    tr.prepare_batch = lambda prepare=tr.prepare_batch: generated.append(tr.step) or prepare()
    history = tr.train()
    assert [m["step"] for m in history] == [1, 2, 3, 4, 5, 6] and tr.step == 6
    assert generated == [0, 2, 4] and tr.pending is None
    assert trainer(seed, rows=ROWS[:10], max_steps=7, num_iterations=2).total_steps == 7


def test_a_checkpoint_inside_a_batch_without_this_ranks_rollout_generates_it_again(seed):
    tr = trainer(seed, num_iterations=2)
    tr.step = 1
    said = []
    tr._say = said.append
    tr.restore_rank_state(None, same_world=False)
    assert tr.pending is None and "generated again" in said[0]
    tr.step = 2  # a batch boundary: nothing to restore, nothing said
    tr.restore_rank_state(None, same_world=False)
    assert len(said) == 1


def test_mask_truncated_completions_drops_completions_that_hit_the_length_limit(seed):
    tr = trainer(seed, mask_truncated_completions=True, max_completion_length=3)
    rollout = tr.generate(tr.rows_for_batch(0), seed=seed)
    (batch,) = tr.micro_batches(rollout)
    assert "length" in rollout.finish_reasons  # the random policy rarely ends within 3 tokens
    for row, (reason, ids) in enumerate(zip(rollout.finish_reasons, rollout.completion_ids, strict=True)):
        assert batch["mask"][row].sum() == (0 if reason == "length" else len(ids))


def test_learning_rate_schedules():
    assert [lr_factor("linear", 2, 10, s) for s in (0, 1, 2, 6, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert lr_factor("cosine", 0, 10, 5) == pytest.approx(0.5) and lr_factor("cosine", 0, 10, 10) == pytest.approx(0.0)
    assert lr_factor("constant", 0, 10, 7) == 1.0


BAD_CONFIGS = [dict(micro_batch_size=3), dict(num_generations=1), dict(loss_type="ppo"), dict(temperature=0.0),
               dict(top_p=0.0), dict(prompt_template="no slot"), dict(lr_scheduler_type="step"), dict(adam_beta1=1.0),
               dict(learning_rate=math.nan), dict(scale_rewards="std"), dict(loss_backend="cuda"),
               dict(max_prompt_length=0), dict(save_total_limit=0), dict(save_every_minutes=-1)]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_CONFIGS)
def test_config_rejects_meaningless_values(bad):
    with pytest.raises(ValueError):
        GRPOConfig(**{**SMALL, **bad})


def test_trainer_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        trainer(temperature=0.0)
    with pytest.raises(ValueError, match="at least one reward"):
        trainer(rewards=())
    with pytest.raises(ValueError, match="unknown reward"):
        trainer(rewards=("no_such_reward",))
    with pytest.raises(ValueError, match="reward_weights"):
        trainer(reward_weights=[1.0])
    with pytest.raises(ValueError, match="'prompt' column"):
        trainer(rows=[{"question": "1+1="}])
    with pytest.raises(ValueError, match="empty"):
        trainer(rows=[])
    with pytest.raises(ValueError, match="max_completion_length"):
        trainer(max_completion_length=48)  # the demo policy's max_position_embeddings
    with pytest.raises(TypeError, match="unknown GRPOConfig"):
        GRPOConfig.from_dict({"learning_rat": 1.0})
    tr = trainer(max_completion_length=40)
    with pytest.raises(ValueError, match="does not fit"):
        tr.generate([{"prompt": "1+1=" * 3}], seed=0)
    with pytest.raises(ValueError, match="'prompt' column"):  # a bad row past the ones checked up front
        tr.generate([{"question": "1+1="}], seed=0)
    with pytest.raises(TypeError, match="string or a list of chat messages"):
        tr.generate([{"prompt": 7}], seed=0)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    tr = trainer(max_steps=1, output_dir=str(tmp_path))
    tr.train()
    from transformers import Qwen2Config, Qwen2ForCausalLM

    other = Qwen2ForCausalLM(Qwen2Config(vocab_size=18, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    with pytest.raises((ValueError, RuntimeError)):
        load_checkpoint(tmp_path / "checkpoint-1", other, None)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "checkpoint-9", tr.model, None)
    state = json.loads((tmp_path / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["step"] == 1 and GRPOConfig.from_dict(state["config"]) == tr.config


TWO_PROMPTS = dict(prompts_per_step=2, micro_batch_size=8)  # 8 completions a step: the fast runs below


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_finishes_the_step_saves_and_returns(tmp_path, signal_name):
    import io
    import os
    import signal

    calls = []

    def signalling(prompts, completions, completion_ids, **_):
        calls.append(1)
        if len(calls) == 2:  # during step 2
            os.kill(os.getpid(), getattr(signal, signal_name))
        return short(prompts, completions, completion_ids)

    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    tr = trainer(rewards=[signalling], max_steps=50, output_dir=str(tmp_path), **TWO_PROMPTS)
    tr.log_stream = stream = io.StringIO()
    history = tr.train()
    assert [m["step"] for m in history] == [1, 2] and tr.steps_done == 2
    assert stream.getvalue().splitlines()[-1] == (f"stopped by {signal_name} after step 2: saved "
                                                  f"{tmp_path / 'checkpoint-2'} (continue with --resume latest)")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == previous  # handlers restored


def test_a_second_signal_raises_keyboard_interrupt_at_once(tmp_path):
    import os
    import signal

    def twice(prompts, completions, completion_ids, **_):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return short(prompts, completions, completion_ids)

    tr = trainer(rewards=[twice], max_steps=50, output_dir=str(tmp_path), **TWO_PROMPTS)
    with pytest.raises(KeyboardInterrupt):
        tr.train()
    assert tr.steps_done == 0 and latest_checkpoint(tmp_path) is None


def test_resume_cuts_metrics_back_to_the_checkpoint_so_no_step_appears_twice(tmp_path, seed):
    config = dict(rewards=[short], max_steps=4, save_steps=2, output_dir=str(tmp_path), **TWO_PROMPTS)
    interrupted = trainer(seed, **config)
    step = interrupted.train_step
    interrupted.train_step = lambda: step() if interrupted.step < 3 else (_ for _ in ()).throw(RuntimeError())
    with pytest.raises(RuntimeError):  # killed in step 4, after step 3 was logged but before checkpoint-4
        interrupted.train()
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3]
    trainer(seed, **config).train(resume_from="latest")
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4]


def test_python_api_refuses_a_used_output_dir_and_a_changed_config(tmp_path, seed):
    from r1fast.trainer import InputError

    config = dict(rewards=[short], output_dir=str(tmp_path), **TWO_PROMPTS)
    trainer(seed, max_steps=1, **config).train()
    with pytest.raises(InputError, match="already holds a run"):
        trainer(seed, max_steps=1, **config).train()
    with pytest.raises(InputError, match=r"another config \(beta 0.0 -> 0.1\)"):
        trainer(seed, max_steps=2, beta=0.1, **config).train(resume_from="latest")
    # Run-length keys may change; anything else with allow_config_change.
    trainer(seed, max_steps=2, save_steps=7, logging_steps=2, save_total_limit=3, **config).train(resume_from="latest")
    resumed = trainer(seed, max_steps=3, beta=0.1, **config)
    resumed.train(resume_from="latest", allow_config_change=True)
    assert resumed.steps_done == 3
