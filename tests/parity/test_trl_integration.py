"""r1fast.integrations.trl.R1FastGRPOTrainer: TRL's GRPOTrainer with r1fast's fused LM-head loss. On TRL's own
batch layout (left-padded prompts, ragged completions, an all-masked row, off-policy old log-probs) its loss,
every parameter's gradient and the logged metrics equal TRL's `_compute_loss`, on both r1fast backends."""

from __future__ import annotations

import pytest
import torch
from test_loss_vs_trl import METRIC_KEYS, grads, make_batch

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


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("loss_type, level, beta", CASES)
def test_fused_trl_trainer_equals_trl(make_trainer, loss_type, level, beta, backend, seed):
    trl_trainer = make_trainer(temperature=0.7)
    ours = make_trainer(trainer_class=R1FastGRPOTrainer, temperature=0.7)
    ours.r1fast_loss_backend = backend
    batch = make_batch(trl_trainer.model, seed)
    results = []
    for trainer in (trl_trainer, ours):
        configure(trainer, loss_type, level, beta)
        loss = trainer._compute_loss(trainer.model, dict(batch))
        loss.backward()
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k in METRIC_KEYS}
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


def test_unsupported_configurations_fall_back_to_trl_with_a_warning(make_trainer, seed):
    ours = make_trainer(trainer_class=R1FastGRPOTrainer, temperature=1.0)
    trl_trainer = make_trainer(temperature=1.0)
    batch = make_batch(trl_trainer.model, seed)
    for trainer in (trl_trainer, ours):
        configure(trainer, "dapo", "token", 0.0)
        trainer.top_entropy_quantile = 0.5  # an entropy mask: TRL's loss only
    ours._warned_fallback = False
    try:
        want = trl_trainer._compute_loss(trl_trainer.model, dict(batch))
        with pytest.warns(UserWarning, match="top_entropy_quantile"):
            got = ours._compute_loss(ours.model, dict(batch))
    finally:  # the trainers are shared with other tests
        trl_trainer.top_entropy_quantile = ours.top_entropy_quantile = 1.0
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
