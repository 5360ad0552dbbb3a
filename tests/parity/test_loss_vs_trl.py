"""r1fast.reference.grpo_loss against TRL 1.16's own GRPOTrainer._compute_loss (fused LM head included).

Both sides run the same tiny model on the same hand-made batch (left-padded prompts, ragged completions with an
all-masked row, old/ref log-probs far enough off-policy that clipping happens); the loss, every parameter's
gradient and the logged metrics must agree to 1e-6 relative in float32.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

from r1fast import reference
from r1fast.logit_transform import LogitTransform

LOSS_TYPES = reference.LOSS_TYPES
B, P, C = 6, 5, 9
PROMPT_LENS = [5, 3, 1, 4, 5, 2]
COMPLETION_LENS = [9, 4, 0, 7, 1, 6]  # ragged, one all-masked row
METRIC_KEYS = (
    "kl",
    "entropy",
    "policy_loss",
    "vespo/phi_seq_mean",
    "cispo_clip_ratio",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "clip_ratio/region_mean",
    "clip_ratio/low_min",
    "clip_ratio/high_max",
)


def make_batch(model, seed: int, off_policy: float = 0.5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.full((B, P), 120)  # left padding with the pad id
    prompt_mask = torch.zeros(B, P, dtype=torch.long)
    for b, n in enumerate(PROMPT_LENS):
        prompt_ids[b, P - n :] = torch.randint(0, 120, (n,), generator=g)
        prompt_mask[b, P - n :] = 1
    completion_ids = torch.randint(0, 120, (B, C), generator=g)
    completion_mask = torch.zeros(B, C, dtype=torch.long)
    for b, n in enumerate(COMPLETION_LENS):
        completion_mask[b, :n] = 1
    completion_ids[completion_mask == 0] = 120
    with torch.no_grad():
        logps = reference.selective_log_softmax(
            completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask), completion_ids
        )
    # Off-policy rows 0, 3, 4: per-token noise plus (rows 0, 3) a shift of the log ratio towards the side the
    # advantage clips on, so token- and sequence-level ratios leave the trust region (the mean noise of a row would
    # have to cancel a 0.8 shift, a 4-sigma event). Rows 1 and 5 stay near-on-policy, so they are never clipped and
    # the gradient is never zero.
    advantages = torch.randn(B, generator=g)
    shift = 0.8 * advantages.sign() * torch.tensor([1.0, 0, 0, 1, 0, 0])
    noise = torch.tensor([off_policy, 0.01, off_policy, off_policy, off_policy, 0.01])[:, None]
    old = logps + noise * torch.randn(B, C, generator=g) - shift[:, None]
    ref = logps + off_policy * torch.randn(B, C, generator=g)
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": torch.tensor(float(completion_mask.sum() * 2)),
    }


# TRL's loss options beyond the loss type, with their defaults (the trainers are shared: every call sets them all).
OPTION_DEFAULTS = dict(top_entropy_quantile=1.0, off_policy_mask_threshold=None, entropy_coef=0.0, vespo_k_pos=2.0,
                       vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0)  # fmt: skip
# r1fast's names of the per-token inputs -> TRL's batch keys
DATA_KEYS = {"sampling_logps": "sampling_per_token_logps", "importance_sampling_ratio": "importance_sampling_ratio"}


def set_trl_options(trainer, options: dict, data: dict) -> None:
    """TRL's trainer state for the options (others at their defaults); the sampler correction is on when data has
    an importance_sampling_ratio (TRL applies it with vLLM: use_vllm and vllm_importance_sampling_correction)."""
    options = {**OPTION_DEFAULTS, **options}
    trainer.top_entropy_quantile = options["top_entropy_quantile"]
    trainer.off_policy_mask_threshold = options["off_policy_mask_threshold"]
    trainer.entropy_coef = options["entropy_coef"]
    trainer.use_adaptive_entropy = False
    trainer._entropy_bonus_enabled = options["entropy_coef"] != 0.0
    for key in ("vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg", "vespo_lambda_neg"):
        setattr(trainer.args, key, options[key])
    trainer.use_vllm = trainer.vllm_importance_sampling_correction = "importance_sampling_ratio" in data


def option_data(kind: str | None, batch: dict, seed: int) -> dict[str, torch.Tensor]:
    """The per-token inputs an option reads (r1fast's names): the sampler's log-probs (old + noise, so that some
    sequences are off-policy enough to be masked) or the sampler correction's ratio, per token or per sequence."""
    g = torch.Generator().manual_seed(seed + 1)
    old = batch["old_per_token_logps"]
    if kind == "sampling":
        return {"sampling_logps": old + 1.0 + 0.3 * torch.randn(old.shape, generator=g)}
    if kind in ("is_token", "is_sequence"):
        shape = old.shape if kind == "is_token" else (old.shape[0], 1)
        return {"importance_sampling_ratio": torch.rand(shape, generator=g) * 1.5 + 0.25}
    return {}


def completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask, raw=False) -> torch.Tensor:
    """The plain (unfused) forward's logits at the positions that score each completion token: [B, C, V].
    raw: the LM head's output, before the model's own logit transform (r1fast.logit_transform)."""
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=raw)
    logits = model.get_output_embeddings()(outputs.hidden_states[-1]) if raw else outputs.logits
    return logits[:, P - 1 : -1]


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def run_both(
    trainer,
    batch,
    *,
    loss_type,
    beta,
    epsilon,
    epsilon_high,
    delta,
    importance_sampling_level,
    temperature,
    gradient_accumulation_steps=1,
    steps_per_generation=1,
    max_completion_length=8,
    use_bias_correction_kl=False,
    transform=None,
    options=None,
    data=None,
):
    """TRL's loss/grads/metrics and the reference's on the same model and batch. transform: the model's logit
    transform (logit_scale, logit_softcap), applied by the reference to the LM head's raw output. options: TRL's
    loss options (OPTION_DEFAULTS); data: the per-token inputs they read (option_data)."""
    options, data = options or {}, data or {}
    model = trainer.model
    model.train()
    set_trl_options(trainer, options, data)
    batch = dict(batch, **{DATA_KEYS[k]: v for k, v in data.items()})
    trainer.loss_type = loss_type
    trainer.beta = beta
    trainer.epsilon_low = epsilon
    trainer.epsilon_high = epsilon if epsilon_high is None else epsilon_high
    trainer.importance_sampling_level = importance_sampling_level
    trainer.max_completion_length = max_completion_length
    trainer.current_gradient_accumulation_steps = gradient_accumulation_steps
    trainer.args.delta = delta
    trainer.args.use_bias_correction_kl = use_bias_correction_kl
    trainer.args.steps_per_generation = steps_per_generation
    trainer._metrics["train"].clear()
    model.zero_grad(set_to_none=True)

    trl_loss = trainer._compute_loss(model, dict(batch))
    trl_loss.backward()
    trl_grads = grads(model)
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k in METRIC_KEYS}

    logits = completion_logits(
        model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"],
        raw=transform is not None,
    )
    transform = transform or {}
    loss, metrics = reference.grpo_loss(
        logits,
        batch["completion_ids"],
        batch["completion_mask"],
        batch["advantages"],
        batch["old_per_token_logps"],
        batch["ref_per_token_logps"] if beta else None,
        temperature=temperature,
        **transform,
        loss_type=loss_type,
        beta=beta,
        epsilon=epsilon,
        epsilon_high=epsilon_high,
        delta=delta,
        importance_sampling_level=importance_sampling_level,
        max_completion_length=max_completion_length,
        num_items_in_batch=batch["num_items_in_batch"],
        gradient_accumulation_steps=gradient_accumulation_steps,
        steps_per_generation=steps_per_generation,
        use_bias_correction_kl=use_bias_correction_kl,
        **data,
        **options,
    )
    loss.backward()
    # The loss's scale: the same aggregation of |per-token loss|. The loss is a sum of signed terms, so its float32
    # rounding error is relative to this, not to the (possibly cancelling) sum.
    mask = batch["completion_mask"].double()
    per_token, _, _ = reference.per_token_objective(
        reference.selective_log_softmax(logits.detach().double(), batch["completion_ids"], temperature, **transform),
        mask,
        batch["advantages"].double()[:, None],
        batch["old_per_token_logps"].double(),
        batch["ref_per_token_logps"].double(),
        loss_type=loss_type,
        beta=beta,
        epsilon_low=epsilon,
        epsilon_high=epsilon if epsilon_high is None else epsilon_high,
        delta=delta,
        importance_sampling_level=importance_sampling_level,
        use_bias_correction_kl=use_bias_correction_kl,
        sapo_temperature_pos=1.0,
        sapo_temperature_neg=1.05,
        importance_sampling_ratio=data.get("importance_sampling_ratio"),
    )
    scale = reference.aggregate_loss(
        per_token.abs(),
        mask,
        loss_type=loss_type,
        max_completion_length=max_completion_length,
        num_items_in_batch=batch["num_items_in_batch"],
        gradient_accumulation_steps=gradient_accumulation_steps,
        steps_per_generation=steps_per_generation,
        num_processes=1,
    )
    scale = scale + abs(options.get("entropy_coef", 0.0)) * metrics["entropy"]  # the entropy bonus's share
    return (trl_loss.detach(), trl_grads, trl_metrics), (loss.detach(), grads(model), metrics, scale.item())


def assert_same(trl, ours, rtol=1e-6):
    (trl_loss, trl_grads, trl_metrics), (loss, our_grads, metrics, scale) = trl, ours
    assert torch.isfinite(loss) and scale > 0
    assert abs(loss - trl_loss) <= rtol * scale, (loss.item(), trl_loss.item(), scale)
    assert trl_grads.keys() == our_grads.keys() and trl_grads
    # Relative to each parameter's gradient norm; a gradient that is zero in exact arithmetic (the key bias:
    # softmax is invariant to it) is pure rounding, so its error is measured against the whole gradient's norm.
    total = torch.cat([g.flatten() for g in trl_grads.values()]).norm()
    assert total > 0  # the near-on-policy rows always carry gradient: a vacuous comparison would fail here
    for name, g in trl_grads.items():
        err = (our_grads[name] - g).norm() / torch.maximum(g.norm(), 1e-3 * total)
        assert err <= rtol, (name, err.item())
    assert trl_metrics.keys() <= metrics.keys(), set(trl_metrics) - set(metrics)
    for key, value in trl_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-7, nan_ok=True), key


CASES = list(itertools.product(LOSS_TYPES, ("token", "sequence"), (0.0, 0.04), ("plain", "variant")))


@pytest.mark.parametrize("loss_type,level,beta,variant", CASES)
def test_reference_loss_and_grads_equal_trl(make_trainer, loss_type, level, beta, variant, seed):
    # variant: temperature 0.7, DAPO clip-higher (epsilon_high) and the two-sided clip delta
    temperature = 1.0 if variant == "plain" else 0.7
    epsilon_high = None if variant == "plain" else (5.0 if loss_type == "cispo" else 0.28)
    delta = None if variant == "plain" else 1.5
    trainer = make_trainer(temperature=temperature)
    batch = make_batch(trainer.model, seed)
    trl, ours = run_both(
        trainer,
        batch,
        loss_type=loss_type,
        beta=beta,
        epsilon=0.2,
        epsilon_high=epsilon_high,
        delta=delta,
        importance_sampling_level=level,
        temperature=temperature,
    )
    assert_same(trl, ours)
    if loss_type in reference.CLIP_LOSS_TYPES:  # the batch is off-policy enough that clipping really happens
        assert ours[2]["clip_ratio/region_mean"] > 0
    if beta:
        assert ours[2]["kl"] > 0


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_accumulation_normalisers_and_bias_corrected_kl_equal_trl(make_trainer, loss_type, seed):
    trainer = make_trainer(temperature=0.7)
    batch = make_batch(trainer.model, seed)
    trl, ours = run_both(
        trainer,
        batch,
        loss_type=loss_type,
        beta=0.1,
        epsilon=0.2,
        epsilon_high=None,
        delta=None,
        importance_sampling_level="token",
        temperature=0.7,
        gradient_accumulation_steps=4,
        steps_per_generation=2,
        max_completion_length=12,
        use_bias_correction_kl=True,
    )
    assert_same(trl, ours)


@pytest.mark.parametrize("family", ["granite", "cohere", "gemma2"])
def test_reference_with_the_models_logit_transform_equals_trl(make_trainer, family, seed):
    # Granite divides its logits by logits_scaling (8), Cohere multiplies them by logit_scale (1/16), Gemma2 caps them
    # softly (final_logit_softcapping 1.5); the reference applies r1fast.logit_transform's reading of the config to
    # the LM head's raw output, TRL's fused head its own reading.
    trainer = make_trainer(family=family, temperature=0.7)
    transform = LogitTransform.from_config(trainer.model.config)
    assert not transform.is_identity
    batch = make_batch(trainer.model, seed)
    options = dict(loss_type="dapo", beta=0.04, epsilon=0.2, epsilon_high=0.28, delta=None,
                   importance_sampling_level="token", temperature=0.7, use_bias_correction_kl=True)  # fmt: skip
    trl, ours = run_both(trainer, batch, **options, transform=transform.kwargs())
    assert_same(trl, ours)
    # The test has teeth: the same loss without the transform is far from TRL's.
    _, untransformed = run_both(trainer, batch, **options, transform={})
    assert abs(untransformed[0] - trl[0]) > 1e-3 * ours[3] or any(
        (untransformed[1][n] - g).norm() > 1e-2 * g.norm() for n, g in trl[1].items()
    )


# The entropy mask on the tiny Qwen2 (head at its init, logits std ~0.1): every token's entropy is log(V) within
# ~1e-2, so the mask's quantile threshold sits among near-ties (the nearest other entropy ~5e-5 away at the median,
# under 1e-6 in ~1% of batches) that the two sides' float32 rounding (TRL's fused head against the reference or
# r1fast's kernels) can order differently: one token more or less trains, and the loss, gradients and metrics differ
# with kernels that are right. Both sides therefore train on a batch whose entropies stay a margin clear of the
# threshold (entropy_mask_batch), so that they keep the same tokens for any seed:
# - test_trl_integration runs on a sharper head (sharp_heads: logits std ~3 at temperature 0.7, entropies spread over
#   ~[0.1, 3.5], neighbours near the threshold ~1e-2 apart: ~1% of batches redrawn) with MASK_MARGIN;
# - the reference tests here stay on the head at init with INIT_MASK_MARGIN (~12% of batches redrawn): their 1e-6
#   gradient tolerance is ~4x the float32 error median there, and a sharper head widens that error (x20: 2-8% of
#   seeds past 1e-6; x3 or x5: ~1e-3, against ~2e-4 at init).
SHARP_HEAD_GAIN = 20.0
MASK_MARGIN = 1e-4  # nats: >10x the two sides' entropies' float32 difference on the sharp head (ours: <7e-6)
INIT_MASK_MARGIN = 1e-5  # nats: ~10x that difference on the head at init (TRL against the reference: <1e-6)
REDRAW_STRIDE, REDRAWS = 7919, 20


@contextlib.contextmanager
def sharp_heads(*trainers):
    """The trainers' LM heads times SHARP_HEAD_GAIN inside the block, restored bit for bit after it (the trainers
    are shared with other tests)."""
    heads = [trainer.model.get_output_embeddings().weight for trainer in trainers]
    saved = [head.detach().clone() for head in heads]
    with torch.no_grad():
        for head in heads:
            head.mul_(SHARP_HEAD_GAIN)
    try:
        yield
    finally:
        with torch.no_grad():
            for head, weights in zip(heads, saved, strict=True):
                head.copy_(weights)


def entropy_margin(trainer, batch, quantile: float, other: torch.Tensor | None = None) -> float:
    """How far (float64) TRL's entropy-mask threshold (the 1 - quantile quantile of the completion tokens' entropies,
    with `other`: another process's) lies from the nearest entropy other than the threshold itself: while the two
    sides' entropies differ by less, they keep the same tokens."""
    with torch.no_grad():
        logits = completion_logits(trainer.model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"],
                                   batch["completion_mask"]).double() / trainer.temperature  # fmt: skip
    entropies = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)[batch["completion_mask"].bool()]
    if other is not None:
        entropies = torch.cat([entropies, other.double()])
    distance = (entropies - torch.quantile(entropies, 1.0 - quantile)).abs()
    return distance[distance > 0].min().item()


def entropy_mask_batch(
    trainer, seed: int, quantile: float, other: torch.Tensor | None = None, margin: float = MASK_MARGIN
) -> tuple[dict, int]:
    """make_batch(trainer.model, seed) or, where an entropy lies within `margin` of the entropy mask's threshold (a
    near-tie), the first batch of seed + REDRAW_STRIDE * k (k = 1, 2, ...) clear of it; returns it and its seed."""
    for s in range(seed, seed + REDRAWS * REDRAW_STRIDE, REDRAW_STRIDE):
        batch = make_batch(trainer.model, s)
        if entropy_margin(trainer, batch, quantile, other) > margin:
            return batch, s
    raise AssertionError(f"no batch of seeds {seed} + {REDRAW_STRIDE} k has its entropies {margin} clear of the "
                         f"entropy mask's threshold")  # fmt: skip


# (loss type, IS level, options, the per-token inputs they read): TRL's options beyond the loss type
OPTION_CASES = [
    pytest.param("dapo", "token", dict(top_entropy_quantile=0.5), None, id="entropy-mask"),
    pytest.param("grpo", "token", dict(off_policy_mask_threshold=0.1), "sampling", id="off-policy-mask-sampler"),
    pytest.param("bnpo", "sequence", dict(off_policy_mask_threshold=-0.5), None, id="off-policy-mask-old"),
    pytest.param("dapo", "token", {}, "is_token", id="is-ratio-token"),
    pytest.param("grpo", "sequence", {}, "is_sequence", id="is-ratio-sequence"),
    pytest.param("dapo", "token", dict(entropy_coef=0.05), None, id="entropy-bonus"),
    pytest.param("grpo", "token", dict(top_entropy_quantile=0.6, entropy_coef=0.1), "is_token",
                 id="entropy-mask-bonus-is-ratio"),
    pytest.param("vespo", "token", {}, None, id="vespo"),
    pytest.param("vespo", "token", dict(vespo_k_pos=1.5, vespo_lambda_neg=2.5), "is_token", id="vespo-is-ratio"),
]


@pytest.mark.parametrize("loss_type, level, options, kind", OPTION_CASES)
def test_reference_with_trl_options_equals_trl(make_trainer, loss_type, level, options, kind, seed):
    trainer = make_trainer(temperature=0.7)
    quantile = options.get("top_entropy_quantile", 1.0)
    if quantile < 1.0:  # a batch clear of the entropy mask's near-ties (see INIT_MASK_MARGIN)
        batch, seed = entropy_mask_batch(trainer, seed, quantile, margin=INIT_MASK_MARGIN)
    else:
        batch = make_batch(trainer.model, seed)
    if "off_policy_mask_threshold" in options:  # negative advantages: the mask acts on every sequence
        batch["advantages"] = -batch["advantages"].abs()
    data = option_data(kind, batch, seed)
    common = dict(loss_type=loss_type, beta=0.04, epsilon=0.2, epsilon_high=0.28, delta=None,
                  importance_sampling_level=level, temperature=0.7, gradient_accumulation_steps=2,
                  steps_per_generation=2, use_bias_correction_kl=True)  # fmt: skip
    try:
        trl, ours = run_both(trainer, batch, **common, options=options, data=data)
        plain, _ = run_both(trainer, batch, **common) if options or data else (None, None)
    finally:  # the trainer is shared with other tests
        set_trl_options(trainer, {}, {})
    assert_same(trl, ours)
    if plain is not None:  # the test has teeth: the options change TRL's loss or gradient
        assert abs(plain[0] - ours[0]) > 1e-4 * ours[3] or any(
            (plain[1][n] - g).norm() > 1e-3 * g.norm() for n, g in ours[1].items()
        )
