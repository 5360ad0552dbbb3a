"""r1fast.integrations.trl.R1FastGRPOTrainer: TRL's GRPOTrainer with r1fast's fused LM-head loss. On TRL's own
batch layout (left-padded prompts, ragged completions, an all-masked row, off-policy old log-probs) its loss,
every parameter's gradient and the logged metrics equal TRL's `_compute_loss`, on both r1fast backends, for a plain
Qwen2 and for models that transform their logits (Granite, Cohere, Gemma2), and with TRL's loss options (entropy
mask (over one process and over two), off-policy mask, the vLLM importance-sampling correction, the entropy bonus
(static and adaptive), vespo)."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from test_loss_vs_trl import (
    DATA_KEYS,
    METRIC_KEYS,
    OPTION_CASES,
    entropy_mask_batch,
    grads,
    make_batch,
    option_data,
    set_trl_options,
    sharp_heads,
)

from r1fast import reference
from r1fast.integrations.trl import R1FastGRPOTrainer

CASES = [("grpo", "token", 0.0), ("dapo", "token", 0.04), ("dr_grpo", "sequence", 0.0), ("bnpo", "token", 0.04),
         ("cispo", "token", 0.0), ("sapo", "token", 0.04), ("luspo", "sequence", 0.0)]  # fmt: skip


def configure(trainer, loss_type, level, beta) -> None:
    trainer.loss_type, trainer.beta, trainer.importance_sampling_level = loss_type, beta, level
    trainer.epsilon_low, trainer.epsilon_high = 0.2, 5.0 if loss_type == "cispo" else 0.28
    trainer.max_completion_length = 12
    trainer.current_gradient_accumulation_steps = 2
    trainer.args.steps_per_generation = 2
    trainer.args.delta = 1.5 if loss_type in reference.CLIP_LOSS_TYPES else None
    trainer._metrics["train"].clear()
    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)


def assert_equals_trl(trl_trainer, ours, loss_type, level, beta, seed, options=None, kind=None, other=None):
    """TRL's and ours' loss, gradients and metrics on make_batch(seed) (with the entropy mask: on sharp heads and an
    entropy_mask_batch; other: the entropies another process adds to the mask's quantile)."""
    quantile = (options or {}).get("top_entropy_quantile", 1.0)
    if quantile == 1.0:
        return compare_with_trl(trl_trainer, ours, make_batch(trl_trainer.model, seed), loss_type, level, beta, seed,
                                options, kind)  # fmt: skip
    with sharp_heads(trl_trainer, ours):
        batch, seed = entropy_mask_batch(trl_trainer, seed, quantile, other)
        compare_with_trl(trl_trainer, ours, batch, loss_type, level, beta, seed, options, kind)


def compare_with_trl(trl_trainer, ours, batch, loss_type, level, beta, seed, options, kind):
    if options and "off_policy_mask_threshold" in options:  # negative advantages: the mask acts on every sequence
        batch["advantages"] = -batch["advantages"].abs()
    data = option_data(kind, batch, seed)
    batch.update({DATA_KEYS[k]: v for k, v in data.items()})
    results = []
    for trainer in (trl_trainer, ours):
        configure(trainer, loss_type, level, beta)
        set_trl_options(trainer, options or {}, data)
        try:
            loss = trainer._compute_loss(trainer.model, dict(batch))
        finally:  # the trainers are shared with other tests
            set_trl_options(trainer, {}, {})
        loss.backward()
        keys = (*METRIC_KEYS, "entropy_coef")
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k in keys}
        results.append((loss.detach(), grads(trainer.model), metrics))
    (want_loss, want_grads, want_metrics), (loss, got_grads, metrics) = results
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5, abs=1e-6)
    total = torch.cat([g.flatten() for g in want_grads.values()]).norm()
    assert total > 0 and want_grads.keys() == got_grads.keys()
    for name, g in want_grads.items():
        err = (got_grads[name] - g).norm() / torch.maximum(g.norm(), 1e-3 * total)
        assert err <= 1e-5, (name, err.item())
    assert want_metrics.keys() == metrics.keys()
    for key, value in want_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-7, nan_ok=True), key


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("loss_type, level, beta", CASES)
def test_fused_trl_trainer_equals_trl(make_trainer, loss_type, level, beta, backend, seed):
    trl_trainer = make_trainer(temperature=0.7)
    ours = make_trainer(trainer_class=R1FastGRPOTrainer, temperature=0.7)
    ours.r1fast_loss_backend = backend
    assert_equals_trl(trl_trainer, ours, loss_type, level, beta, seed)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("family, loss_type, level, beta",
                         [("granite", "dapo", "token", 0.04), ("cohere", "grpo", "sequence", 0.0),
                          ("gemma2", "sapo", "token", 0.04)])  # fmt: skip
def test_fused_trl_trainer_applies_the_models_logit_transform(make_trainer, family, loss_type, level, beta, backend,
                                                              seed):  # fmt: skip
    trl_trainer = make_trainer(family=family, temperature=0.7)
    ours = make_trainer(trainer_class=R1FastGRPOTrainer, family=family, temperature=0.7)
    assert not ours.r1fast_logit_transform.is_identity
    ours.r1fast_loss_backend = backend
    assert_equals_trl(trl_trainer, ours, loss_type, level, beta, seed)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("loss_type, level, options, kind", OPTION_CASES)
def test_fused_trl_trainer_with_trl_options_equals_trl(make_trainer, loss_type, level, options, kind, backend, seed):
    trl_trainer = make_trainer(temperature=0.7)
    ours = make_trainer(trainer_class=R1FastGRPOTrainer, temperature=0.7)
    ours.r1fast_loss_backend, ours._warned_fallback = backend, False
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback to TRL's loss
        assert_equals_trl(trl_trainer, ours, loss_type, level, 0.04, seed, options, kind)


def test_an_unknown_logit_transform_falls_back_to_trl_with_a_warning(make_trainer, seed):
    ours = make_trainer(trainer_class=R1FastGRPOTrainer, temperature=1.0)
    trl_trainer = make_trainer(temperature=1.0)
    batch = make_batch(trl_trainer.model, seed)
    for trainer in (trl_trainer, ours):
        configure(trainer, "dapo", "token", 0.0)
    saved = ours._logit_transform_error, ours._warned_fallback
    ours._logit_transform_error, ours._warned_fallback = "logits_mup_width_multiplier", False
    try:
        want = trl_trainer._compute_loss(trl_trainer.model, dict(batch))
        with pytest.warns(UserWarning, match="logit transform"):
            got = ours._compute_loss(ours.model, dict(batch))
    finally:  # the trainers are shared with other tests
        ours._logit_transform_error, ours._warned_fallback = saved
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def set_adaptive_entropy(trainer, entropy_target: float) -> None:
    """TRL's adaptive entropy bonus from its first step (coefficient 0.05, the controller's window empty)."""
    set_trl_options(trainer, {"entropy_coef": 0.05}, {})
    trainer.use_adaptive_entropy = trainer._entropy_bonus_enabled = True
    trainer.args.entropy_target, trainer.args.entropy_coef_delta = entropy_target, 0.02
    trainer._last_world_entropy, trainer._entropy_window_stats = float("inf"), None


@pytest.mark.parametrize("backend, entropy_target, quantile", [
    pytest.param("triton", 100.0, 1.0, id="below-target-triton"),
    pytest.param("reference", 0.0, 1.0, id="above-target-reference"),
    pytest.param("triton", 100.0, 0.6, id="with-entropy-mask-triton"),
])  # fmt: skip
def test_adaptive_entropy_bonus_equals_trl(make_trainer, backend, entropy_target, quantile, seed):
    # Two optimizer steps of two micro-batches each: every micro-batch's loss, gradients and metrics, and the
    # controller's state after each (the coefficient applies from the second step when the entropy is below target).
    trl_trainer = make_trainer(temperature=0.7)
    ours = make_trainer(trainer_class=R1FastGRPOTrainer, temperature=0.7)
    ours.r1fast_loss_backend, ours._warned_fallback = backend, False
    # With the entropy mask: on sharp heads and entropy_mask_batches (see MASK_MARGIN in test_loss_vs_trl).
    masked = quantile < 1.0
    with sharp_heads(trl_trainer, ours) if masked else contextlib.nullcontext():
        batches = [entropy_mask_batch(trl_trainer, seed + k, quantile)[0] if masked else
                   make_batch(trl_trainer.model, seed + k) for k in range(4)]  # fmt: skip
        states = []
        try:
            for trainer in (trl_trainer, ours):
                configure(trainer, "dapo", "token", 0.0)
                set_adaptive_entropy(trainer, entropy_target)
                trainer.top_entropy_quantile = quantile
                run = []
                with warnings.catch_warnings():
                    warnings.simplefilter("error", UserWarning)  # no fallback to TRL's loss
                    for k, batch in enumerate(batches):
                        trainer.accelerator.gradient_state._set_sync_gradients(k % 2 == 1)
                        loss = trainer._compute_loss(trainer.model, dict(batch))
                        loss.backward()
                        metrics = {key: v[-1] for key, v in trainer._metrics["train"].items() if v}
                        run.append((loss.item(), grads(trainer.model), metrics, trainer.entropy_coef,
                                    trainer._last_world_entropy))  # fmt: skip
                states.append(run)
        finally:  # the trainers are shared with other tests
            for trainer in (trl_trainer, ours):
                trainer.accelerator.gradient_state._set_sync_gradients(True)
                set_trl_options(trainer, {}, {})
                trainer._last_world_entropy, trainer._entropy_window_stats = float("inf"), None
    coefs = [step[3] for step in states[0]]
    assert coefs[1] != 0.05 and coefs[3] != coefs[1]  # the controller moved at both step boundaries
    for (want_loss, want_grads, want_metrics, want_coef, want_entropy), (loss, got, metrics, coef, entropy) in zip(
        *states, strict=True
    ):
        assert loss == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
        for name, g in want_grads.items():
            assert torch.allclose(got[name], g, rtol=1e-4, atol=1e-6), name
        assert metrics.keys() == want_metrics.keys() and "policy_loss" in metrics
        for key, value in want_metrics.items():
            assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-7, nan_ok=True), key
        assert coef == pytest.approx(want_coef, rel=1e-12)
        assert entropy == pytest.approx(want_entropy, rel=1e-5)


class TwoProcesses:
    """An accelerator stand-in for this process and a second one: pad_across_processes / gather as accelerate's
    (a second process's completion-token entropies `other` join the entropy mask's gather; every other gathered
    value is the same on both, so the metrics' means do not change); num_processes 2."""

    num_processes = 2

    def __init__(self, accelerator, other: torch.Tensor) -> None:
        self.accelerator, self.other, self.padded_length = accelerator, other, None

    def __getattr__(self, name):
        return getattr(self.accelerator, name)

    def pad_across_processes(self, x, dim=0, pad_index=0):
        length = max(x.shape[0], self.other.shape[0])
        self.padded_length, self.pad_index = length, pad_index
        return torch.cat([x, x.new_full((length - x.shape[0],), pad_index)])

    def gather(self, x):
        if self.padded_length is None:
            return torch.cat([x, x])
        other = self.other.to(x.dtype)
        other = torch.cat([other, x.new_full((self.padded_length - other.shape[0],), self.pad_index)])
        self.padded_length = None
        return torch.cat([x, other])


@pytest.mark.parametrize("backend, other_tokens", [("reference", 25), ("triton", 200)],
                         ids=["fewer-tokens-elsewhere-reference", "more-tokens-elsewhere-triton"])  # fmt: skip
def test_entropy_mask_over_two_processes_equals_trl(make_trainer, backend, other_tokens, seed):
    # The entropy mask's quantile over every process's tokens: the other process's entropies are drawn around this
    # one's (~[0.1, 3.5] on the sharp head, assert_equals_trl), so the threshold (and which tokens train) moves away
    # from this process's own quantile.
    trl_trainer = make_trainer(temperature=0.7)
    ours = make_trainer(trainer_class=R1FastGRPOTrainer, temperature=0.7)
    ours.r1fast_loss_backend, ours._warned_fallback = backend, False
    other = torch.rand(other_tokens, generator=torch.Generator().manual_seed(seed)) * 3.0
    saved = {}
    try:
        for trainer in (trl_trainer, ours):
            saved[trainer] = trainer.accelerator
            trainer.accelerator = TwoProcesses(trainer.accelerator, other)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no fallback to TRL's loss
            options = dict(top_entropy_quantile=0.5)
            assert_equals_trl(trl_trainer, ours, "dapo", "token", 0.04, seed, options, other=other)
    finally:
        for trainer, accelerator in saved.items():
            trainer.accelerator = accelerator


def even_words(completions, **_):
    """Share of the completion's words 'w<n>' with n even: varied rewards, so every step has a gradient."""
    words = [[w for w in c.split() if w[1:].isdigit()] for c in completions]
    return [sum(int(w[1:]) % 2 == 0 for w in ws) / max(1, len(ws)) for ws in words]


@pytest.mark.parametrize("family", ["granite", "cohere", "gemma2"])
def test_three_training_steps_of_a_transformed_model_give_trls_grad_norms(family_checkpoint, tmp_path, family):
    # End to end: TRL's own loop (generation, rewards, advantages, optimizer) with r1fast's fused loss (Triton
    # through the interpreter) against TRL's loss, from the same checkpoint and seed: the same grad_norm every step.
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast
    from trl import GRPOConfig, GRPOTrainer

    checkpoint = family_checkpoint(family)
    norms = []
    for trainer_class, extra in ((GRPOTrainer, {}), (R1FastGRPOTrainer, {"loss_backend": "triton"})):
        args = GRPOConfig(output_dir=str(tmp_path / trainer_class.__name__), report_to=[], use_cpu=True, bf16=False,
                          logging_steps=1, max_steps=3, num_generations=4, per_device_train_batch_size=4,
                          max_completion_length=6, learning_rate=1e-3, beta=0.04, save_strategy="no",
                          gradient_checkpointing=False, seed=7)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = trainer_class(model=str(checkpoint), reward_funcs=[even_words], args=args,
                                    train_dataset=Dataset.from_dict({"prompt": ["w1 w2 w3", "w4 w5"] * 6}),
                                    processing_class=PreTrainedTokenizerFast.from_pretrained(checkpoint),
                                    **extra)  # fmt: skip
            trainer.train()
        norms.append([h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h])
    assert len(norms[0]) == 3 and all(n > 0 for n in norms[0])
    assert norms[1] == pytest.approx(norms[0], rel=1e-5)
