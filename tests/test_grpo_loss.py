"""r1fast.grpo_loss / selective_log_softmax / GRPOLoss: the Triton row passes against the float64 reference.

On CPU the kernels run under TRITON_INTERPRET=1 (set by conftest.py) on tiny shapes; the `gpu` tests repeat the
checks at real sizes (V = 151,936) and the 70k-token grid.
"""

from __future__ import annotations

import pytest
import torch

import r1fast
from r1fast import reference

LOSS_TYPES = reference.LOSS_TYPES
LEVELS = reference.IMPORTANCE_SAMPLING_LEVELS

# Tolerances by input dtype, in one place: (loss / logp relative, gradient ||out - ref|| / ||ref||).
TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (2e-5, 1e-2), torch.float16: (2e-5, 2e-3)}
# With low-precision operands (fused linear: logits rounded to bf16 by the matmul) the logps move too.
TOL_LOW_PRECISION_OPERANDS = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (2e-2, 3e-2), torch.float16: (3e-3, 5e-3)}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN or inf anywhere in out never passes."""
    out, ref = out.detach().double(), ref.detach().double()
    assert torch.isfinite(out).all(), "non-finite values in the output"
    return ((out - ref).norm() / ref.norm().clamp(min=1e-12)).item()


def assert_metrics_close(got: dict[str, float], want: dict[str, float], tol: float) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=tol, abs=tol, nan_ok=True), key


def ragged_mask(b: int, t: int) -> torch.Tensor:
    """Random completion lengths in [1, t]; row 1 (when b > 1) fully masked."""
    lengths = torch.randint(1, t + 1, (b,))
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    if b > 1:
        mask[1] = 0
    return mask


# The models' logit transforms (r1fast.logit_transform): Granite-like scale, Gemma2-like softcap, both (Muse-like).
TRANSFORMS = [dict(logit_scale=0.125), dict(logit_softcap=1.5), dict(logit_scale=2.5, logit_softcap=4.0)]


def transform_id(transform: dict) -> str:
    return "-".join(f"{k.removeprefix('logit_')}{v}" for k, v in transform.items())


def loss_inputs(b: int, t: int, v: int, temperature: float, logits: torch.Tensor | None = None, margin: bool = False,
                **transform):  # fmt: skip
    """ids, mask, advantages, old_logps, ref_logps near the policy's own log-probs (so some ratios clip).

    margin: old_logps = logps + a per-sequence offset in {+-0.05, +-0.5}, so every importance ratio (token or
    sequence) stays >= 0.13 in log space from the clip edges log(1 -+ 0.2), for operands rounded to bf16 upstream.
    """
    ids = torch.randint(0, v, (b, t))
    mask = ragged_mask(b, t)
    advantages = torch.randn(b)
    if logits is None:
        base = -torch.rand(b, t, dtype=torch.float64) * 5
    else:
        base = reference.selective_log_softmax(logits.double(), ids, temperature, **transform)
    if margin:
        offsets = torch.tensor([-0.5, -0.05, 0.05, 0.5], dtype=base.dtype)[torch.randint(0, 4, (b, 1))]
        old = (base + offsets).float()
    else:
        old = (base + 0.15 * torch.randn_like(base)).float()
    ref = (base + 0.3 * torch.randn_like(base)).float()
    return ids, mask, advantages, old, ref


def configs():
    """loss_type x IS level x beta (0 / > 0), delta on the clip types when beta > 0, temperature != 1."""
    for loss_type in LOSS_TYPES:
        for level in LEVELS:
            for beta in (0.0, 0.04):
                cfg = dict(loss_type=loss_type, importance_sampling_level=level, beta=beta, temperature=0.7)
                if beta and loss_type in reference.CLIP_LOSS_TYPES:
                    cfg["delta"] = 1.15
                if loss_type == "dapo":
                    cfg["epsilon_high"] = 0.28
                if loss_type == "dr_grpo":
                    cfg["max_completion_length"] = 9
                yield pytest.param(cfg, id=f"{loss_type}-{level}-beta{beta}")


# TRL's options beyond the loss types, each with the per-token inputs it reads: "is_token" / "is_sequence" pass an
# importance_sampling_ratio of shape [B, T] / [B, 1] (the sampler correction), "sampling" the sampler's log-probs.
OPTION_CASES = [
    pytest.param(dict(loss_type="dapo"), "is_token", id="is-ratio-token"),
    pytest.param(dict(loss_type="grpo", importance_sampling_level="sequence"), "is_sequence", id="is-ratio-sequence"),
    pytest.param(dict(loss_type="dapo", off_policy_mask_threshold=0.05), "sampling", id="off-policy-mask"),
    pytest.param(dict(loss_type="bnpo", off_policy_mask_threshold=0.0), None, id="off-policy-mask-old"),
    pytest.param(dict(loss_type="grpo", top_entropy_quantile=0.4), None, id="entropy-mask"),
    pytest.param(dict(loss_type="dapo", entropy_coef=0.05), "is_token", id="entropy-bonus"),
    pytest.param(dict(loss_type="luspo", top_entropy_quantile=0.6, entropy_coef=0.1), None, id="entropy-mask-bonus"),
    pytest.param(dict(loss_type="vespo"), None, id="vespo"),
    pytest.param(dict(loss_type="vespo", vespo_k_pos=1.5, vespo_lambda_neg=2.5), "is_token", id="vespo-is-ratio"),
]


def option_inputs(kind: str | None, logps: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-token inputs of an OPTION_CASES case, near the policy's log-probs logps [B, T]."""
    b, t = logps.shape
    if kind == "is_token":
        return {"importance_sampling_ratio": (torch.rand(b, t) * 1.5 + 0.25)}
    if kind == "is_sequence":
        return {"importance_sampling_ratio": (torch.rand(b, 1) * 1.5 + 0.25)}
    if kind == "sampling":
        return {"sampling_logps": (logps.double() + 0.5 * torch.randn(b, t, dtype=torch.float64)).float()}
    return {}


def option_tolerance(cfg: dict, dtype: torch.dtype = torch.float32) -> float:
    """vespo's phi is exp of a sum of log ratios times k (<= 3) and lambda: each log-prob's error is summed over the
    completion and multiplied into it. float32 log-probs carry ~1e-5 of relative error into it (TRL computes it in
    float32 too); with bf16 / fp16 operands the rounded logits' error grows the same way, to ~3x the plain tolerance
    (a bf16 seed drew 2.1% of loss error against the 2% of other loss types)."""
    if cfg.get("loss_type") != "vespo":
        return 0.0
    return {torch.float32: 1e-4, torch.bfloat16: 6e-2, torch.float16: 1e-2}[dtype]


def check_grpo_loss(cfg: dict, dtype: torch.dtype, b: int, t: int, v: int, logits_base: torch.Tensor | None = None,
                    kind: str | None = None):  # fmt: skip
    temperature = cfg["temperature"]
    logits32 = torch.randn(b, t, v) * 2 if logits_base is None else logits_base
    logits = logits32.to(dtype).requires_grad_()
    transform = {k: v for k, v in cfg.items() if k.startswith("logit_")}
    ids, mask, adv, old, ref = loss_inputs(b, t, v, temperature, logits.detach(), **transform)
    ref_logps = ref if cfg["beta"] else None
    extra = option_inputs(kind, old)

    exact = logits.detach().double().requires_grad_()
    want_loss, want_metrics = reference.grpo_loss(exact, ids, mask, adv, old, ref_logps, **extra, **cfg)
    want_loss.backward()

    loss, metrics = r1fast.grpo_loss(logits, ids, mask, adv, old, ref_logps, **extra, backend="triton", **cfg)
    loss.backward()
    tol_loss, tol_grad = (max(tol, option_tolerance(cfg, dtype)) for tol in TOL[dtype])
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(want_loss.item(), rel=tol_loss, abs=1e-6)
    assert_metrics_close(metrics, want_metrics, 1e-5)
    assert logits.grad.dtype == dtype
    assert rel_err(logits.grad, exact.grad) <= tol_grad


@pytest.mark.parametrize("cfg", list(configs()))
def test_grpo_loss_matches_reference_fp32(cfg, seed):
    check_grpo_loss(cfg, torch.float32, b=3, t=5, v=131)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("level", LEVELS)
def test_grpo_loss_matches_reference_bf16(loss_type, level, seed):
    cfg = dict(loss_type=loss_type, importance_sampling_level=level, beta=0.04, temperature=1.3)
    check_grpo_loss(cfg, torch.bfloat16, b=3, t=4, v=67)


@pytest.mark.parametrize("options, kind", OPTION_CASES)
def test_grpo_loss_with_trl_options_matches_reference(options, kind, seed):
    cfg = dict(beta=0.04, temperature=0.9, **options)
    check_grpo_loss(cfg, torch.float32, b=4, t=5, v=97, kind=kind)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=transform_id)
@pytest.mark.parametrize("loss_type, level", [("dapo", "token"), ("grpo", "sequence"), ("cispo", "token")])
def test_grpo_loss_with_logit_transform_matches_reference(transform, loss_type, level, seed):
    # Odd vocabulary (several blocks and a tail under the interpreter), logits large enough (std 4) that the softcap
    # bends most of them.
    cfg = dict(loss_type=loss_type, importance_sampling_level=level, beta=0.04, temperature=0.7, **transform)
    check_grpo_loss(cfg, torch.float32, b=3, t=4, v=131, logits_base=torch.randn(3, 4, 131) * 4)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=transform_id)
def test_grpo_loss_with_logit_transform_matches_reference_bf16(transform, seed):
    cfg = dict(loss_type="dapo", importance_sampling_level="token", beta=0.04, temperature=1.3, **transform)
    check_grpo_loss(cfg, torch.bfloat16, b=2, t=3, v=67, logits_base=torch.randn(2, 3, 67) * 4)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=transform_id)
def test_selective_log_softmax_with_logit_transform_matches_reference(transform, seed):
    logits = (torch.randn(3, 77) * 4).requires_grad_()
    logits.data[0, :70] = float("-inf")  # masked vocabulary: the softcap maps it to -cap, as the model does
    index = torch.tensor([72, 5, 76])
    out = r1fast.selective_log_softmax(logits, index, 0.8, backend="triton", **transform)
    exact = logits.detach().double().requires_grad_()
    want = reference.selective_log_softmax(exact, index, 0.8, **transform)
    assert rel_err(out, want) <= 1e-5
    weights = torch.randn(3, dtype=torch.float64)
    (out * weights).sum().backward()
    (want * weights).sum().backward()
    assert rel_err(logits.grad, exact.grad) <= 2e-5


def test_transform_logits_is_the_models_formula():
    x = torch.randn(5, 9, dtype=torch.float64) * 3
    torch.testing.assert_close(reference.transform_logits(x, 0.25), x / 4)
    torch.testing.assert_close(reference.transform_logits(x, 2.0, 1.5), 1.5 * torch.tanh(2.0 * x / 1.5))
    assert reference.transform_logits(x) is x


def test_grpo_loss_single_token(seed):
    check_grpo_loss(dict(loss_type="grpo", importance_sampling_level="token", beta=0.0, temperature=1.0), torch.float32,
                    b=1, t=1, v=67)  # fmt: skip


def test_grpo_loss_on_policy_and_per_token_advantages(seed):
    b, t, v = 2, 4, 100
    logits = (torch.randn(b, t, v) * 2).requires_grad_()
    ids, mask, _, _, _ = loss_inputs(b, t, v, 1.0)
    adv = torch.randn(b, t)
    exact = logits.detach().double().requires_grad_()
    want, want_metrics = reference.grpo_loss(exact, ids, mask, adv, loss_type="bnpo")
    want.backward()
    got, metrics = r1fast.grpo_loss(logits, ids, mask, adv, backend="triton", loss_type="bnpo")
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=2e-5, abs=1e-6)
    assert_metrics_close(metrics, want_metrics, 1e-5)
    assert rel_err(logits.grad, exact.grad) <= 2e-5


def test_grpo_loss_reads_a_strided_logits_view_in_place(seed):
    b, t, v = 2, 4, 90
    full = (torch.randn(b, t + 1, v) * 2).requires_grad_()
    ids, mask, adv, old, _ = loss_inputs(b, t, v, 1.0)
    loss, _ = r1fast.grpo_loss(full[:, :-1], ids, mask, adv, old, backend="triton", loss_type="dapo")
    loss.backward()
    exact = full.detach().double().requires_grad_()
    want, _ = reference.grpo_loss(exact[:, :-1], ids, mask, adv, old, loss_type="dapo")
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=2e-5, abs=1e-6)
    assert rel_err(full.grad, exact.grad) <= 2e-5
    assert (full.grad[:, -1] == 0).all()


def test_grpo_loss_inplace_backward_writes_the_gradient_into_the_logits(seed):
    b, t, v = 2, 3, 70
    leaf = torch.randn(b, t, v, requires_grad=True)
    logits = leaf * 2.0  # an intermediate, as an LM head's output
    ids, mask, adv, old, _ = loss_inputs(b, t, v, 1.0)
    loss, _ = r1fast.grpo_loss(logits, ids, mask, adv, old, backend="triton", inplace_backward=True, loss_type="grpo")
    loss.backward()
    exact = leaf.detach().double().requires_grad_()
    want, _ = reference.grpo_loss(exact * 2.0, ids, mask, adv, old, loss_type="grpo")
    want.backward()
    assert rel_err(leaf.grad, exact.grad) <= 2e-5
    torch.testing.assert_close(logits.detach(), leaf.grad / 2.0)


def test_grpo_loss_padding_rows_get_exact_zero_gradient(seed):
    b, t, v = 3, 4, 80
    logits = torch.randn(b, t, v, requires_grad=True)
    ids, mask, adv, _, _ = loss_inputs(b, t, v, 1.0)
    loss, _ = r1fast.grpo_loss(logits, ids, mask, adv, backend="triton", loss_type="grpo")  # on-policy: no clip
    loss.backward()
    assert (logits.grad[mask == 0] == 0).all()
    assert (logits.grad[mask == 1].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(67,), (2, 130), (2, 3, 4, 65)])
def test_selective_log_softmax_matches_reference(dtype, shape, seed):
    logits = (torch.randn(shape) * 3).to(dtype).requires_grad_()
    index = torch.randint(0, shape[-1], shape[:-1])
    out = r1fast.selective_log_softmax(logits, index, 0.8, backend="triton")
    exact = logits.detach().double().requires_grad_()
    want = reference.selective_log_softmax(exact, index, 0.8)
    assert out.dtype == torch.float32 and out.shape == want.shape
    assert rel_err(out, want) <= 1e-5
    weights = torch.randn(want.shape, dtype=torch.float64)
    (out * weights).sum().backward()
    (want * weights).sum().backward()
    assert rel_err(logits.grad, exact.grad) <= TOL[dtype][1]


def test_auto_backend_on_cpu_is_the_reference(seed):
    b, t, v = 2, 3, 50
    logits = torch.randn(b, t, v, dtype=torch.float64)
    ids, mask, adv, old, _ = loss_inputs(b, t, v, 1.0)
    got, got_metrics = r1fast.grpo_loss(logits, ids, mask, adv, old)
    want, want_metrics = reference.grpo_loss(logits, ids, mask, adv, old)
    assert got.dtype == torch.float64 and got.item() == want.item() and got_metrics == want_metrics


def test_grpo_loss_module_holds_its_config(seed):
    b, t, v = 2, 3, 70
    logits = torch.randn(b, t, v)
    ids, mask, adv, old, ref = loss_inputs(b, t, v, 1.0)
    module = r1fast.GRPOLoss(backend="triton", loss_type="cispo", beta=0.1, temperature=0.9)
    got, got_metrics = module(logits, ids, mask, adv, old, ref)
    want, want_metrics = r1fast.grpo_loss(logits, ids, mask, adv, old, ref, backend="triton", loss_type="cispo",
                                          beta=0.1, temperature=0.9)  # fmt: skip
    assert got.item() == want.item() and got_metrics == want_metrics
    with pytest.raises(ValueError, match="loss_type"):
        r1fast.GRPOLoss(loss_type="ppo")


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------


def _good(b=2, t=3, v=40):
    logits = torch.randn(b, t, v)
    ids, mask, adv, old, ref = loss_inputs(b, t, v, 1.0)
    return logits, ids, mask, adv, old, ref


@pytest.mark.parametrize("backend", ["triton", "reference", "auto"])
def test_grpo_loss_rejects_bad_input(backend):
    logits, ids, mask, adv, old, ref = _good()
    call = lambda **kw: r1fast.grpo_loss(
        kw.get("logits", logits), kw.get("ids", ids), kw.get("mask", mask), kw.get("adv", adv), kw.get("old", old),
        kw.get("ref"), backend=backend, **kw.get("cfg", {}),
    )  # fmt: skip
    with pytest.raises(TypeError, match="floating-point"):
        call(logits=logits.long())
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        call(logits=logits[0])
    with pytest.raises(ValueError, match="completion_ids must have shape"):
        call(ids=ids[:, :-1])
    with pytest.raises(TypeError, match="integer"):
        call(ids=ids.float())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        call(ids=torch.full_like(ids, 40))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        call(ids=torch.full_like(ids, -1))
    with pytest.raises(ValueError, match="completion_mask"):
        call(mask=mask[:1])
    with pytest.raises(ValueError, match="advantages"):
        call(adv=torch.randn(3))
    with pytest.raises(ValueError, match="old_logps"):
        call(old=old.T)
    with pytest.raises(ValueError, match="loss_type"):
        call(cfg=dict(loss_type="ppo"))
    with pytest.raises(ValueError, match="importance_sampling_level"):
        call(cfg=dict(importance_sampling_level="batch"))
    with pytest.raises(ValueError, match="ref_logps"):
        call(cfg=dict(beta=0.1))
    with pytest.raises(TypeError, match="unknown GRPO loss option"):
        call(cfg=dict(epsilon_hi=0.3))
    with pytest.raises(ValueError, match="temperature"):
        call(cfg=dict(temperature=0.0))
    with pytest.raises(ValueError, match="logit_scale"):
        call(cfg=dict(logit_scale=0.0))
    with pytest.raises(ValueError, match="logit_softcap"):
        call(cfg=dict(logit_softcap=-1.0))
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        call(cfg=dict(top_entropy_quantile=1.5))
    with pytest.raises(ValueError, match="importance_sampling_ratio"):
        r1fast.grpo_loss(logits, ids, mask, adv, old, importance_sampling_ratio=torch.ones(2, 2), backend=backend)
    with pytest.raises(ValueError, match="sampling_logps"):
        r1fast.grpo_loss(logits, ids, mask, adv, old, sampling_logps=old[:, :1], backend=backend)
    with pytest.raises(ValueError, match="backend"):
        r1fast.grpo_loss(logits, ids, mask, adv, backend="cuda")


def test_triton_backend_rejects_float64():
    logits, ids, mask, adv, old, _ = _good()
    with pytest.raises(TypeError, match="backend='triton'"):
        r1fast.grpo_loss(logits.double(), ids, mask, adv, old, backend="triton")


# ------------------------------------------------------------------------------------------------------------------
# GPU: real sizes and dtypes
# ------------------------------------------------------------------------------------------------------------------

QWEN_VOCAB = 151_936


@pytest.mark.gpu
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "cispo", "sapo"])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_grpo_loss_matches_reference_on_gpu(loss_type, level, dtype, seed):
    b, t, v = 4, 256, QWEN_VOCAB
    logits = (torch.randn(b, t, v, device="cuda") * 2).to(dtype).requires_grad_()
    ids, mask, adv, old, ref = (x.cuda() for x in loss_inputs(b, t, v, 1.0))
    cfg = dict(loss_type=loss_type, importance_sampling_level=level, beta=0.04, temperature=0.9)
    exact = logits.detach().float().requires_grad_()  # float32 reference on the same (rounded) logits
    want, want_metrics = reference.grpo_loss(exact, ids, mask, adv, old, ref, **cfg)
    want.backward()
    got, metrics = r1fast.grpo_loss(logits, ids, mask, adv, old, ref, **cfg)  # auto -> Triton on CUDA
    got.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-5)
    assert_metrics_close(metrics, want_metrics, 1e-4)
    assert rel_err(logits.grad, exact.grad) <= (1e-2 if dtype == torch.bfloat16 else 1e-5)


@pytest.mark.gpu
def test_selective_log_softmax_70k_tokens_exceeds_the_65535_grid_limit(seed):
    n, v = 70_000, 4096
    logits = torch.randn(n, v, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    index = torch.randint(0, v, (n,), device="cuda")
    out = r1fast.selective_log_softmax(logits, index)
    want = reference.selective_log_softmax(logits.detach().float(), index)
    assert rel_err(out, want) <= 1e-5
    out.sum().backward()
    assert torch.isfinite(logits.grad.float()).all() and (logits.grad[-1].float().abs().sum() > 0)


def test_selective_log_softmax_with_a_leading_block_of_masked_vocabulary(seed):
    logits = torch.randn(2, 200)
    logits[0, :150] = float("-inf")  # the first blocks of row 0 hold no mass at all
    index = torch.tensor([160, 3])
    out = r1fast.selective_log_softmax(logits, index, backend="triton")
    torch.testing.assert_close(out, reference.selective_log_softmax(logits, index))
