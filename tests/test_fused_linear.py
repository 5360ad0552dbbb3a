"""r1fast.fused_linear_grpo_loss / fused_linear_logprobs against the float64 reference on materialised logits.

CPU: the chunk passes are the Triton kernels under TRITON_INTERPRET=1, the matmuls plain torch; `gpu` tests run the
real thing at V = 151,936.
"""

from __future__ import annotations

import pytest
import torch
from test_grpo_loss import (
    LEVELS,
    LOSS_TYPES,
    OPTION_CASES,
    QWEN_VOCAB,
    TOL_LOW_PRECISION_OPERANDS,
    TRANSFORMS,
    assert_metrics_close,
    configs,
    loss_inputs,
    option_inputs,
    option_tolerance,
    rel_err,
    transform_id,
)

import r1fast
from r1fast import reference


def linear_inputs(
    b: int, t: int, h: int, v: int, dtype: torch.dtype, device: str = "cpu", bias: bool = True, scale: float = 3.0
):
    """hidden [b, t, h], weight [v, h], bias [v]; logits have standard deviation about ``scale``."""
    hidden = torch.randn(b, t, h, device=device).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, device=device) * (scale / h**0.5)).to(dtype).requires_grad_()
    b_ = (torch.randn(v, device=device) * 0.5).to(dtype).requires_grad_() if bias else None
    return hidden, weight, b_


def exact_copies(*xs):
    return [None if x is None else x.detach().double().requires_grad_() for x in xs]


def reference_fused(hidden, weight, bias, *args, **cfg):
    logits = hidden @ weight.t() if bias is None else hidden @ weight.t() + bias
    return reference.grpo_loss(logits, *args, **cfg)


def check_fused(cfg: dict, dtype: torch.dtype, b: int, t: int, h: int, v: int, chunk_size: int | None, bias=True,
                scale: float | None = None, kind: str | None = None):  # fmt: skip
    # Peaked softmaxes (logit std 3) make dH = dlogits @ W cancel; with bf16-rounded logits that amplifies the
    # rounding to ~9% of ||dH||, a property of bf16 operands rather than of the kernels: use std 1 there.
    scale = scale or (3.0 if dtype == torch.float32 else 1.0)
    hidden, weight, b_ = linear_inputs(b, t, h, v, dtype, bias=bias, scale=scale)
    e_hidden, e_weight, e_bias = exact_copies(hidden, weight, b_)
    with torch.no_grad():
        logits = e_hidden @ e_weight.t() + (0 if e_bias is None else e_bias)
    # bf16/fp16 operands round the logits: keep ratios off the clip edges so no clip decision can flip
    transform = {k: v for k, v in cfg.items() if k.startswith("logit_")}
    ids, mask, adv, old, ref = loss_inputs(b, t, v, cfg["temperature"], logits, margin=dtype != torch.float32,
                                           **transform)  # fmt: skip
    ref_logps = ref if cfg["beta"] else None
    extra = option_inputs(kind, old)

    want, want_metrics = reference_fused(e_hidden, e_weight, e_bias, ids, mask, adv, old, ref_logps, **extra, **cfg)
    want.backward()
    got, metrics = r1fast.fused_linear_grpo_loss(
        hidden, weight, ids, mask, adv, old, ref_logps, **extra, bias=b_, backend="triton", chunk_size=chunk_size,
        **cfg,
    )  # fmt: skip
    got.backward()

    tol_loss, tol_grad = (max(tol, option_tolerance(cfg, dtype)) for tol in TOL_LOW_PRECISION_OPERANDS[dtype])
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=tol_loss, abs=tol_loss)
    if dtype == torch.float32:
        assert_metrics_close(metrics, want_metrics, 1e-5)
    else:  # a bf16-rounded logit can move a ratio across a clip edge; the continuous metrics must still agree
        assert metrics.keys() == want_metrics.keys()
        assert metrics["entropy"] == pytest.approx(want_metrics["entropy"], rel=tol_loss, abs=tol_loss)
    for x, e in ((hidden, e_hidden), (weight, e_weight), (b_, e_bias)):
        if x is None:
            continue
        assert x.grad.dtype == dtype
        assert rel_err(x.grad, e.grad) <= tol_grad


@pytest.mark.parametrize("cfg", list(configs()))
def test_fused_linear_matches_reference_fp32(cfg, seed):
    check_fused(cfg, torch.float32, b=3, t=5, h=24, v=131, chunk_size=4)


@pytest.mark.parametrize("cfg", [c for c in configs() if c.values[0]["importance_sampling_level"] == "sequence"])
def test_fused_linear_sequence_level_in_one_pass_of_whole_sequences(cfg, seed):
    # chunk_size 11 >= T = 5: chunks of 2 whole sequences (then 1), each chunk's gradient from its own logps.
    check_fused({**cfg, "use_bias_correction_kl": cfg["beta"] > 0}, torch.float32, b=3, t=5, h=24, v=131,
                chunk_size=11)  # fmt: skip


@pytest.mark.parametrize("chunk_size", [4, 11])
@pytest.mark.parametrize("options, kind", OPTION_CASES)
def test_fused_linear_with_trl_options_matches_reference(options, kind, chunk_size, seed):
    # Token-local options (the sampler's importance ratio, the entropy bonus) run in the one-kernel path; the
    # off-policy mask and vespo need whole sequences (chunks of 11 >= T: one pass; of 4: two passes); the entropy
    # mask needs every token's entropy first (two passes).
    cfg = dict(beta=0.04, temperature=0.9, **options)
    check_fused(cfg, torch.float32, b=3, t=5, h=24, v=131, chunk_size=chunk_size, kind=kind)


def test_fused_linear_with_importance_ratio_and_entropy_bonus_matches_reference_bf16(seed):
    cfg = dict(loss_type="dapo", beta=0.04, temperature=0.9, entropy_coef=0.05)
    check_fused(cfg, torch.bfloat16, b=3, t=4, h=32, v=67, chunk_size=5, kind="is_token")


@pytest.mark.parametrize("transform", TRANSFORMS, ids=transform_id)
@pytest.mark.parametrize("level, chunk_size", [("token", 4), ("sequence", 4), ("sequence", 11)])
def test_fused_linear_with_logit_transform_matches_reference(transform, level, chunk_size, seed):
    # token: the one-kernel path; sequence with chunks of 4 < T: two passes; chunks of 11 >= T: whole sequences.
    cfg = dict(loss_type="dapo", importance_sampling_level=level, beta=0.04, temperature=0.7, epsilon_high=0.28,
               **transform)  # fmt: skip
    check_fused(cfg, torch.float32, b=3, t=5, h=24, v=131, chunk_size=chunk_size, scale=5.0)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=transform_id)
def test_fused_linear_with_logit_transform_matches_reference_bf16(transform, seed):
    # Logits of std 1, as for the other bf16 tests: peaked softmaxes make dH cancel (a CI seed drew 7.8% of ||dH||
    # with std 3 and a scale of 1/8).
    cfg = dict(loss_type="grpo", importance_sampling_level="token", beta=0.04, temperature=0.9, **transform)
    check_fused(cfg, torch.bfloat16, b=2, t=4, h=32, v=67, chunk_size=5)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("level", LEVELS)
def test_fused_linear_matches_reference_bf16(loss_type, level, seed):
    cfg = dict(loss_type=loss_type, importance_sampling_level=level, beta=0.04, temperature=0.9)
    check_fused(cfg, torch.bfloat16, b=3, t=4, h=32, v=67, chunk_size=5)


@pytest.mark.parametrize("level", LEVELS)
def test_fused_linear_fp16_no_bias_default_chunk(level, seed):
    cfg = dict(loss_type="dapo", importance_sampling_level=level, beta=0.0, temperature=1.0)
    check_fused(cfg, torch.float16, b=2, t=3, h=16, v=100, chunk_size=None, bias=False)


def test_fused_linear_single_token(seed):
    cfg = dict(loss_type="grpo", importance_sampling_level="sequence", beta=0.04, temperature=1.0)
    check_fused(cfg, torch.float32, b=1, t=1, h=16, v=67, chunk_size=None)


def test_fused_linear_without_grad_is_the_same_loss(seed):
    hidden, weight, bias = linear_inputs(2, 4, 16, 90, torch.float32)
    ids, mask, adv, old, ref = loss_inputs(2, 4, 90, 1.0)
    args = (hidden, weight, ids, mask, adv, old, ref)
    kw = dict(bias=bias, backend="triton", chunk_size=3, beta=0.1, importance_sampling_level="sequence")
    with_grad, metrics = r1fast.fused_linear_grpo_loss(*args, **kw)
    with torch.no_grad():
        no_grad, no_grad_metrics = r1fast.fused_linear_grpo_loss(*args, **kw)
    assert not no_grad.requires_grad
    assert no_grad.item() == with_grad.item() and no_grad_metrics == metrics


def test_fused_linear_frozen_head_only_grads_hidden(seed):
    hidden, weight, _ = linear_inputs(2, 3, 16, 70, torch.float32)
    weight.requires_grad_(False)
    ids, mask, adv, old, _ = loss_inputs(2, 3, 70, 1.0)
    loss, _ = r1fast.fused_linear_grpo_loss(hidden, weight, ids, mask, adv, old, backend="triton")
    loss.backward()
    assert weight.grad is None and hidden.grad is not None
    e_hidden, e_weight = exact_copies(hidden, weight)
    want, _ = reference_fused(e_hidden, e_weight, None, ids, mask, adv, old)
    want.backward()
    assert rel_err(hidden.grad, e_hidden.grad) <= 2e-5


def test_fused_linear_tied_embeddings_accumulate_both_gradients(seed):
    v, h, b, t = 80, 16, 2, 4
    table = (torch.randn(v, h) * 0.5).requires_grad_()  # embedding and LM head share it
    prompt = torch.randint(0, v, (b, t))
    ids, mask, adv, old, _ = loss_inputs(b, t, v, 1.0)
    kw = dict(loss_type="luspo", temperature=0.8)

    hidden = torch.tanh(table[prompt] * 2.0)
    loss, _ = r1fast.fused_linear_grpo_loss(hidden, table, ids, mask, adv, old, backend="triton", chunk_size=3, **kw)
    (loss * 3.0).backward()  # a non-unit incoming gradient is applied to every saved gradient

    exact = table.detach().double().requires_grad_()
    want, _ = reference_fused(torch.tanh(exact[prompt] * 2.0), exact, None, ids, mask, adv, old, **kw)
    (want * 3.0).backward()
    assert rel_err(table.grad, exact.grad) <= 2e-5


@pytest.mark.parametrize("transform", [{}, *TRANSFORMS], ids=lambda t: transform_id(t) or "none")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_fused_linear_logprobs_match_reference(dtype, backend, transform, seed):
    hidden, weight, bias = linear_inputs(2, 7, 24, 150, dtype)
    index = torch.randint(0, 150, (2, 7))
    logp, entropy = r1fast.fused_linear_logprobs(
        hidden, weight, index, bias=bias, temperature=0.7, return_entropy=True, backend=backend, chunk_size=4,
        **transform,
    )
    e_hidden, e_weight, e_bias = exact_copies(hidden, weight, bias)
    logits = (e_hidden @ e_weight.t() + e_bias).detach()
    want_logp = reference.selective_log_softmax(logits, index, 0.7, **transform)
    want_entropy = reference.entropy_from_logits(logits, 0.7, **transform)
    assert logp.dtype == entropy.dtype == torch.float32 and logp.shape == entropy.shape == (2, 7)
    assert logp.requires_grad and entropy.requires_grad  # SFT's cross-entropy, verl's log-probs + entropy
    tol = TOL_LOW_PRECISION_OPERANDS[dtype][0]  # bf16: the matmul rounds the logits
    assert rel_err(logp, want_logp) <= tol
    assert rel_err(entropy, want_entropy) <= tol
    only = r1fast.fused_linear_logprobs(hidden, weight, index, bias=bias, temperature=0.7, backend=backend,
                                        **transform)  # fmt: skip
    torch.testing.assert_close(only, logp)


@pytest.mark.parametrize("transform", [{}, TRANSFORMS[-1]], ids=lambda t: transform_id(t) or "none")
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_fused_linear_logprobs_gradient_through_logp_and_entropy(backend, transform, seed):
    # Both outputs carry a gradient (verl's entropy regulariser): weights of either sign on each, vocab 150 in
    # chunks of 4 tokens, against autograd through the float64 reference.
    hidden, weight, bias = linear_inputs(2, 7, 24, 150, torch.float32)
    index = torch.randint(0, 150, (2, 7))
    w_logp, w_entropy = torch.randn(2, 7), torch.randn(2, 7)
    logp, entropy = r1fast.fused_linear_logprobs(hidden, weight, index, bias=bias, temperature=0.7,
                                                 return_entropy=True, backend=backend, chunk_size=4, **transform)
    ((logp * w_logp).sum() + (entropy * w_entropy).sum()).backward()
    exact = exact_copies(hidden, weight, bias)
    logits = exact[0] @ exact[1].t() + exact[2]
    want = (reference.selective_log_softmax(logits, index, 0.7, **transform) * w_logp.double()).sum()
    want = want + (reference.entropy_from_logits(logits, 0.7, **transform) * w_entropy.double()).sum()
    want.backward()
    for got, ref in zip((hidden, weight, bias), exact, strict=True):
        assert rel_err(got.grad, ref.grad) <= 3e-5


def test_fused_linear_rejects_bad_input():
    hidden, weight, bias = linear_inputs(2, 3, 16, 40, torch.float32)
    ids, mask, adv, old, _ = loss_inputs(2, 3, 40, 1.0)
    call = lambda h=hidden, w=weight, b=bias, i=ids, **kw: r1fast.fused_linear_grpo_loss(
        h, w, i, mask, adv, old, bias=b, backend="triton", **kw
    )
    with pytest.raises(ValueError, match=r"weight must be \[V, H=16\]"):
        call(w=weight[:, :8])
    with pytest.raises(TypeError, match="weight dtype"):
        call(w=weight.detach().bfloat16())
    with pytest.raises(ValueError, match="bias must be"):
        call(b=bias[:-1])
    with pytest.raises(ValueError, match=r"hidden must be \[B, T, H\]"):
        call(h=hidden[0])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        call(i=torch.full_like(ids, 40))
    with pytest.raises(TypeError, match="floating-point"):
        call(h=hidden.long())
    with pytest.raises(ValueError, match="chunk_size"):
        call(chunk_size=0)
    with pytest.raises(ValueError, match="loss_type"):
        call(loss_type="ppo")
    with pytest.raises(ValueError, match="index must have shape"):
        r1fast.fused_linear_logprobs(hidden, weight, ids[:, :2])


# ------------------------------------------------------------------------------------------------------------------
# GPU: real sizes and dtypes
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "cispo", "sapo"])
@pytest.mark.parametrize("level", LEVELS)
def test_fused_linear_matches_reference_on_gpu_bf16(loss_type, level, seed):
    b, t, h, v = 4, 256, 896, QWEN_VOCAB
    hidden, weight, _ = linear_inputs(b, t, h, v, torch.bfloat16, device="cuda", bias=False)
    cfg = dict(loss_type=loss_type, importance_sampling_level=level, beta=0.04, temperature=0.9)
    e_hidden, e_weight = (x.detach().float().requires_grad_() for x in (hidden, weight))
    with torch.no_grad():
        logits = (hidden @ weight.t()).float()
    ids, mask, adv, old, ref = (x.cuda() for x in loss_inputs(b, t, v, 0.9, logits.cpu(), margin=True))
    want, want_metrics = reference.grpo_loss(e_hidden @ e_weight.t(), ids, mask, adv, old, ref, **cfg)
    want.backward()
    got, metrics = r1fast.fused_linear_grpo_loss(hidden, weight, ids, mask, adv, old, ref, chunk_size=1024, **cfg)
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-2, abs=1e-3)
    assert metrics["entropy"] == pytest.approx(want_metrics["entropy"], rel=1e-2)
    assert rel_err(hidden.grad, e_hidden.grad) <= 1e-2
    assert rel_err(weight.grad, e_weight.grad) <= 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("options", [dict(logit_softcap=30.0), dict(fp32_head=True),
                                     dict(top_entropy_quantile=0.5, entropy_coef=0.01)],
                         ids=["softcap", "fp32-head", "entropy-mask-bonus"])  # fmt: skip
def test_fused_linear_options_match_reference_on_gpu_bf16(options, seed):
    b, t, h, v = 4, 256, 896, QWEN_VOCAB
    hidden, weight, _ = linear_inputs(b, t, h, v, torch.bfloat16, device="cuda", bias=False, scale=20.0)
    cfg = dict(loss_type="dapo", importance_sampling_level="token", beta=0.04, temperature=0.9, **options)
    fp32_head = cfg.pop("fp32_head", False)
    e_hidden, e_weight = (x.detach().float().requires_grad_() for x in (hidden, weight))
    with torch.no_grad():
        logits = e_hidden @ e_weight.t() if fp32_head else (hidden @ weight.t()).float()
    ids, mask, adv, old, ref = (x.cuda() for x in loss_inputs(b, t, v, 0.9, logits.cpu(), margin=True))
    want, want_metrics = reference.grpo_loss(e_hidden @ e_weight.t(), ids, mask, adv, old, ref, **cfg)
    want.backward()
    got, metrics = r1fast.fused_linear_grpo_loss(hidden, weight, ids, mask, adv, old, ref, chunk_size=1024,
                                                 fp32_head=fp32_head, **cfg)  # fmt: skip
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-2, abs=1e-3)
    assert metrics["entropy"] == pytest.approx(want_metrics["entropy"], rel=1e-4 if fp32_head else 1e-2)
    assert rel_err(hidden.grad, e_hidden.grad) <= 2e-2
    assert rel_err(weight.grad, e_weight.grad) <= 2e-2


@pytest.mark.gpu
def test_fused_linear_logprobs_on_gpu_bf16(seed):
    n, h, v = 4096, 1536, QWEN_VOCAB
    hidden, weight, _ = linear_inputs(1, n, h, v, torch.bfloat16, device="cuda", bias=False)
    index = torch.randint(0, v, (1, n), device="cuda")
    logp, entropy = r1fast.fused_linear_logprobs(hidden, weight, index, return_entropy=True)
    logits = (hidden @ weight.t()).detach()
    assert rel_err(logp, reference.selective_log_softmax(logits, index)) <= 1e-5
    assert rel_err(entropy, reference.entropy_from_logits(logits)) <= 1e-5


def test_fused_linear_never_projects_more_than_a_chunk(monkeypatch, seed):
    import r1fast.loss as loss_module

    rows_seen = []
    real_linear = loss_module._linear
    monkeypatch.setattr(loss_module, "_linear", lambda h, *args: rows_seen.append(h.shape[0]) or real_linear(h, *args))
    hidden, weight, bias = linear_inputs(3, 5, 16, 70, torch.float32)
    ids, mask, adv, old, _ = loss_inputs(3, 5, 70, 1.0)
    for level in LEVELS:
        rows_seen.clear()
        loss, _ = r1fast.fused_linear_grpo_loss(hidden, weight, ids, mask, adv, old, bias=bias, backend="triton",
                                                chunk_size=4, importance_sampling_level=level)  # fmt: skip
        loss.backward()
        # token level: one projection per chunk (6NHV); sequence level: a second look at each chunk (8NHV)
        assert rows_seen == [4, 4, 4, 3] * (1 if level == "token" else 2)
        # chunks of 11 >= T = 5 tokens: sequence level takes whole sequences (2, then 1) in one pass (6NHV)
        rows_seen.clear()
        loss, _ = r1fast.fused_linear_grpo_loss(hidden, weight, ids, mask, adv, old, bias=bias, backend="triton",
                                                chunk_size=11, importance_sampling_level=level)  # fmt: skip
        assert rows_seen == ([11, 4] if level == "token" else [10, 5])
    # The entropy mask's quantile needs every token's entropy first: two passes at any chunk size; the entropy bonus
    # and the sampler's importance ratio are token-local: one.
    for options, passes in ((dict(top_entropy_quantile=0.5), 2), (dict(entropy_coef=0.1), 1)):
        rows_seen.clear()
        loss, _ = r1fast.fused_linear_grpo_loss(hidden, weight, ids, mask, adv, old, importance_sampling_ratio=adv,
                                                bias=bias, backend="triton", chunk_size=4, **options)  # fmt: skip
        assert rows_seen == [4, 4, 4, 3] * passes
    rows_seen.clear()
    r1fast.fused_linear_logprobs(hidden, weight, ids, bias=bias, backend="triton", chunk_size=6)
    assert rows_seen == [6, 6, 3]


def test_grpo_loss_module_fused_path_equals_the_function(seed):
    hidden, weight, bias = linear_inputs(2, 3, 16, 70, torch.float32)
    ids, mask, adv, old, ref = loss_inputs(2, 3, 70, 1.0)
    module = r1fast.GRPOLoss(backend="triton", chunk_size=2, loss_type="sapo", beta=0.02)
    got, got_metrics = module(hidden, ids, mask, adv, old, ref, weight=weight, bias=bias)
    want, want_metrics = r1fast.fused_linear_grpo_loss(hidden, weight, ids, mask, adv, old, ref, bias=bias,
                                                       backend="triton", chunk_size=2, loss_type="sapo",
                                                       beta=0.02)  # fmt: skip
    assert got.item() == want.item() and got_metrics == want_metrics


OBJECTIVE_CASES = [
    dict(loss_type="grpo", beta=0.0, delta=None, use_bias_correction_kl=False, on_policy=False),
    dict(loss_type="grpo", beta=0.0, delta=None, use_bias_correction_kl=False, on_policy=True),
    dict(loss_type="dapo", beta=0.04, delta=1.1, use_bias_correction_kl=False, on_policy=False),
    dict(loss_type="bnpo", beta=0.1, delta=None, use_bias_correction_kl=True, on_policy=False),
    dict(loss_type="luspo", beta=0.1, delta=1.05, use_bias_correction_kl=True, on_policy=True),
    dict(loss_type="cispo", beta=0.0, delta=None, use_bias_correction_kl=False, on_policy=False),
    dict(loss_type="cispo", beta=0.04, delta=None, use_bias_correction_kl=True, on_policy=False),
    dict(loss_type="sapo", beta=0.0, delta=None, use_bias_correction_kl=False, on_policy=False),
    dict(loss_type="sapo", beta=0.04, delta=None, use_bias_correction_kl=False, on_policy=True),
]


OBJECTIVE_CASES += [dict(OBJECTIVE_CASES[2], **TRANSFORMS[0]), dict(OBJECTIVE_CASES[6], **TRANSFORMS[1]),
                    dict(OBJECTIVE_CASES[7], **TRANSFORMS[2]),
                    # the sampler's importance ratio and the entropy bonus's d(loss)/d(entropy)
                    dict(OBJECTIVE_CASES[3], is_ratio=True), dict(OBJECTIVE_CASES[5], is_ratio=True),
                    dict(OBJECTIVE_CASES[8], is_ratio=True, entropy_weights=True),
                    dict(OBJECTIVE_CASES[2], entropy_weights=True, **TRANSFORMS[2])]  # fmt: skip


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_row_loss_grad_equals_autograd_through_the_reference_objective(case, seed):
    # The fused token-level kernel writes d(sum_i w_i * per_token_objective_i)/d(logits) over the rows it read: the
    # derivative of every loss type written out, checked against autograd in float64. Ratios span both clip edges
    # (and sit exactly on 1 on-policy, where torch.minimum splits a tie), some weights are 0 (padding rows).
    from r1fast.kernels.grpo_loss import row_loss_grad

    n, v, temperature = 23, 203, 0.8
    case = dict(case)
    on_policy = case.pop("on_policy")
    transform = {k: case.pop(k) for k in list(case) if k.startswith("logit_")}
    is_ratio = torch.rand(n) * 2 if case.pop("is_ratio", False) else None
    entropy_weights = torch.randn(n) * (torch.rand(n) > 0.3) if case.pop("entropy_weights", False) else None
    logits = torch.randn(n, v) * 2
    ids = torch.randint(0, v, (n,))
    adv = torch.randn(n)
    weights = torch.rand(n) * (torch.rand(n) > 0.2)
    if entropy_weights is not None:
        weights[entropy_weights == 0] = 0.0  # padding rows: both zero
    exact = logits.double().requires_grad_()
    logp = reference.selective_log_softmax(exact, ids, temperature, **transform)
    old = None if on_policy else (logp.detach() + 0.4 * torch.randn(n, dtype=torch.float64)).float()
    ref = (logp.detach() + 0.3 * torch.randn(n, dtype=torch.float64)).float()
    objective = dict(case, epsilon_low=0.2, epsilon_high=0.28 if case["loss_type"] != "cispo" else 1.3,
                     sapo_temperature_pos=1.0, sapo_temperature_neg=1.05)  # fmt: skip
    per_token, _, _ = reference.per_token_objective(
        logp[:, None], torch.ones(n, 1, dtype=torch.float64), adv[:, None].double(),
        None if old is None else old[:, None].double(), ref[:, None].double(), importance_sampling_level="token",
        importance_sampling_ratio=None if is_ratio is None else is_ratio[:, None].double(), **objective,
    )  # fmt: skip
    total = (per_token[:, 0] * weights.double()).sum()
    if entropy_weights is not None:
        total = total + (reference.entropy_from_logits(exact, temperature, **transform) * entropy_weights).sum()
    total.backward()

    buffer = logits.clone()
    lse, got_logp, entropy = row_loss_grad(buffer, ids, temperature, adv, weights, old, ref, **objective, **transform,
                                           importance_sampling_ratio=is_ratio,
                                           entropy_weights=entropy_weights)  # fmt: skip
    torch.testing.assert_close(got_logp.double(), logp.detach(), rtol=1e-5, atol=1e-5)
    z = reference.transform_logits(logits.double(), **transform) / temperature
    torch.testing.assert_close(lse.double(), torch.logsumexp(z, -1), rtol=1e-5, atol=1e-5)
    want_entropy = reference.entropy_from_logits(logits.double(), temperature, **transform)
    torch.testing.assert_close(entropy.double(), want_entropy, rtol=1e-5, atol=1e-5)
    assert rel_err(buffer, exact.grad) < 1e-5
    padding = (weights == 0) if entropy_weights is None else (weights == 0) & (entropy_weights == 0)
    assert torch.equal(buffer[padding], torch.zeros_like(buffer[padding]))


@pytest.mark.parametrize("level, chunk_size", [("token", 5), ("sequence", 3)])
def test_fused_linear_fp32_head_gives_fp32_logprobs_from_bf16_operands(level, chunk_size, seed):
    # bf16 hidden and head, logits in float32: the loss and the log-probs are the float64 reference's on the same
    # (bf16) operands to float32 accuracy, where the bf16 head rounds the logits themselves (~3e-3). The gradients
    # are bf16 GEMMs of the float32 d(loss)/d(logits).
    b, t, h, v = 3, 4, 32, 67
    hidden, weight, bias = linear_inputs(b, t, h, v, torch.bfloat16, scale=2.0)
    e_hidden, e_weight, e_bias = exact_copies(hidden, weight, bias)
    logits = (e_hidden @ e_weight.t() + e_bias).detach()
    ids, mask, adv, old, ref = loss_inputs(b, t, v, 0.9, logits, margin=True)
    cfg = dict(loss_type="grpo", importance_sampling_level=level, beta=0.04, temperature=0.9, logit_softcap=3.0)
    want, want_metrics = reference_fused(e_hidden, e_weight, e_bias, ids, mask, adv, old, ref, **cfg)
    want.backward()
    got, metrics = r1fast.fused_linear_grpo_loss(hidden, weight, ids, mask, adv, old, ref, bias=bias,
                                                 backend="triton", chunk_size=chunk_size, fp32_head=True,
                                                 **cfg)  # fmt: skip
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=2e-5, abs=2e-6)
    assert metrics["entropy"] == pytest.approx(want_metrics["entropy"], rel=2e-5)
    for x, e in ((hidden, e_hidden), (weight, e_weight), (bias, e_bias)):
        assert x.grad.dtype == torch.bfloat16 and rel_err(x.grad, e.grad) <= 1e-2
    for backend in ("triton", "reference"):
        logp = r1fast.fused_linear_logprobs(hidden, weight, ids, bias=bias, temperature=0.9, logit_softcap=3.0,
                                            backend=backend, chunk_size=chunk_size, fp32_head=True)  # fmt: skip
        assert rel_err(logp, reference.selective_log_softmax(logits, ids, 0.9, logit_softcap=3.0)) <= 2e-6
    bf16_head = r1fast.fused_linear_logprobs(hidden, weight, ids, bias=bias, temperature=0.9, logit_softcap=3.0,
                                             backend="triton")  # fmt: skip
    assert rel_err(bf16_head, reference.selective_log_softmax(logits, ids, 0.9, logit_softcap=3.0)) > 2e-5
