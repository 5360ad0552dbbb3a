"""Triton kernels of the GRPO loss: the passes over a [tokens, vocab] logits tensor.

The policy loss itself is a function of per-token log-probs (``r1fast.reference.policy_loss``); the only [N, V]
work is getting those log-probs and pushing d(loss)/d(logp) back onto the vocabulary rows:

- ``row_stats``: one streaming pass per token row: logsumexp of z = transform(logits) / temperature, the log-prob
  of the sampled token, and (optionally) the entropy. Reads N*V elements once, writes 3 floats per row.
- ``row_grad``: d(loss)/d(logits)[v] = (g * (onehot(v == index) - p_v) - g_H * p_v (log p_v + H)) * dz_v/dx_v
  for given per-token scalars g = d(loss)/d(logp) and (optionally, the entropy bonus) g_H = d(loss)/d(entropy),
  p = softmax(z), and the saved logsumexp (and entropy H). Reads N*V, writes N*V (in place allowed). Rows with
  g == g_H == 0 (padding) skip the read.

- ``row_loss_grad``: for the fused LM head at token-level importance sampling, both in one program per row: the
  stats, then the token's g from the per-token objective's derivative (written out for every loss type, times the
  sampler correction's importance ratio), then the row overwritten with d(loss)/d(logits) (with the entropy bonus's
  g_H term when given). Same bytes as the two kernels, without a round trip through memory and
  PyTorch for g.

The transform is the model's (r1fast.reference.transform_logits): x -> scale * x, then optionally the softcap
cap * tanh(x / cap) (HAS_SOFTCAP), then / temperature; dz/dx = scale * (1 - tanh^2) / temperature. Without a softcap
it is one multiply per element; with one, a sigmoid (tanh(u) = 2 sigmoid(2u) - 1) and a few FMAs more per element
and pass, meant to stay under the bandwidth bound (unmeasured: bench_loss.py's softcap row).

Together row_stats and row_grad make the 3-pass floor of the logits-given loss (read; read + write). The grid is
1-D over rows (axis 0 allows 2^31 - 1 programs, so a 70k-token batch needs no folding); row offsets are int64
(N * V > 2^31).
Rows are addressed as [B, T] with strides, so a logits view such as ``model_logits[:, :-1]`` is read in place.

Kernels assume inputs validated by r1fast/loss.py.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# ------------------------------------------------------------------------------------------------------------------
# Block sizes: the one place they are chosen. Under the interpreter small blocks make tiny test vocabularies span
# several blocks (so the streaming loop and the tail mask are exercised); on a GPU 4096 bf16 elements per step
# keeps enough bytes in flight per SM.
# ------------------------------------------------------------------------------------------------------------------


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def row_block(vocab: int) -> tuple[int, int]:
    """(BLOCK_V, num_warps) for a row pass over a vocabulary of ``vocab`` entries."""
    if interpreting():
        return 64, 1
    block = min(4096, triton.next_power_of_2(vocab))
    return block, 8 if block >= 2048 else 4


# ------------------------------------------------------------------------------------------------------------------
# Kernels
# ------------------------------------------------------------------------------------------------------------------


@triton.jit
def _scores(x, logit_scale, softcap, inv_temperature, HAS_SOFTCAP: tl.constexpr):
    """z = transform(x) / temperature for float32 x (see the module docstring)."""
    if HAS_SOFTCAP:
        z = (2.0 * tl.sigmoid(x * (2.0 * logit_scale / softcap)) - 1.0) * (softcap * inv_temperature)
    else:
        z = x * (logit_scale * inv_temperature)
    return z


@triton.jit
def _scores_and_slope(x, logit_scale, softcap, inv_temperature, HAS_SOFTCAP: tl.constexpr):
    """(z, dz/dx) for float32 x: the scores and the factor that carries d(loss)/dz back to the logits."""
    if HAS_SOFTCAP:
        t = 2.0 * tl.sigmoid(x * (2.0 * logit_scale / softcap)) - 1.0
        z = t * (softcap * inv_temperature)
        slope = (1.0 - t * t) * (logit_scale * inv_temperature)
    else:
        z = x * (logit_scale * inv_temperature)
        slope = logit_scale * inv_temperature
    return z, slope


@triton.jit
def _online_softmax(m, s, w, z):
    """One block z [BLOCK_V] (-inf where not a logit) of the single pass over a row: running max m, s = sum exp(z -
    m) and w = sum exp(z - m) * (z - m). The entropy is log s - w / s: shifted by the max, w does not cancel against
    lse (unshifted, lse - E[z] loses |z| * eps of float32). Returns the new (m, s, w)."""
    m_new = tl.maximum(m, tl.max(z, axis=0))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row starting with -inf logits stays NaN-free
    shift = tl.where(m == float("-inf"), 0.0, m - m_ref)  # s = w = 0 until the first finite logit
    scale = tl.exp(m - m_ref)
    e = tl.exp(z - m_ref)
    w = (w + s * shift) * scale + tl.sum(e * tl.where(e > 0.0, z - m_ref, 0.0), axis=0)
    s = s * scale + tl.sum(e, axis=0)
    return m_new, s, w


@triton.jit
def _logit_grad(x, read, v, index, lse, g, g_entropy, entropy, logit_scale, softcap, inv_temperature,
                HAS_SOFTCAP: tl.constexpr, HAS_ENTROPY_GRAD: tl.constexpr):  # fmt: skip
    """d(loss)/d(x) on a block of a row: g * d(logp)/dx + g_entropy * d(H)/dx, with d(logp)/dz_v = onehot - p_v and
    dH/dz_v = -p_v (z_v - lse + H); lanes not read (~read) have p = 0."""
    z, slope = _scores_and_slope(x, logit_scale, softcap, inv_temperature, HAS_SOFTCAP)
    p = tl.exp(tl.where(read, z, float("-inf")) - lse)
    d = (tl.where(v == index, 1.0, 0.0) - p) * g
    if HAS_ENTROPY_GRAD:
        d = d - g_entropy * tl.where(p > 0.0, p * (z - lse + entropy), 0.0)  # p = 0 lanes may hold z = -inf
    return d * slope


@triton.jit
def _row_stats_kernel(
    logits_ptr,
    stride_b,
    stride_t,
    index_ptr,
    lse_ptr,
    logp_ptr,
    entropy_ptr,
    T,
    V,
    logit_scale,
    softcap,
    inv_temperature,
    WITH_ENTROPY: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    # Bytes: V * elem_size read per row; FLOPs: ~4 per element (+2 for entropy). Bandwidth bound.
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + (row // T) * stride_b + (row % T) * stride_t
    cols = tl.arange(0, BLOCK_V)
    m = tl.full((), float("-inf"), tl.float32)  # running max of z
    s = tl.zeros((), tl.float32)  # sum exp(z - m)
    w = tl.zeros((), tl.float32)  # sum exp(z - m) * (z - m)  (entropy = log s - w / s)
    for start in range(0, V, BLOCK_V):
        valid = start + cols < V
        x = tl.load(base + start + cols, mask=valid, other=0.0).to(tl.float32)
        z = tl.where(valid, _scores(x, logit_scale, softcap, inv_temperature, HAS_SOFTCAP), float("-inf"))
        m, s, w = _online_softmax(m, s, w, z)
    lse = m + tl.log(s)
    index = tl.load(index_ptr + row)
    z_index = _scores(tl.load(base + index).to(tl.float32), logit_scale, softcap, inv_temperature, HAS_SOFTCAP)
    tl.store(lse_ptr + row, lse)
    tl.store(logp_ptr + row, z_index - lse)
    if WITH_ENTROPY:
        tl.store(entropy_ptr + row, tl.log(s) - w / s)


@triton.jit
def _row_grad_kernel(
    logits_ptr,
    stride_b,
    stride_t,
    out_ptr,
    out_stride_b,
    out_stride_t,
    index_ptr,
    lse_ptr,
    grad_logp_ptr,
    grad_entropy_ptr,
    entropy_ptr,
    T,
    V,
    logit_scale,
    softcap,
    inv_temperature,
    HAS_SOFTCAP: tl.constexpr,
    HAS_ENTROPY_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    # Bytes: V * elem_size read + V * elem_size written per row (no read where g == 0).
    row = tl.program_id(0).to(tl.int64)
    b = row // T
    t = row % T
    base = logits_ptr + b * stride_b + t * stride_t
    out = out_ptr + b * out_stride_b + t * out_stride_t
    g = tl.load(grad_logp_ptr + row).to(tl.float32)
    lse = tl.load(lse_ptr + row)
    index = tl.load(index_ptr + row)
    g_entropy = tl.load(grad_entropy_ptr + row) if HAS_ENTROPY_GRAD else 0.0
    entropy = tl.load(entropy_ptr + row) if HAS_ENTROPY_GRAD else 0.0
    read_limit = tl.where((g != 0.0) | (g_entropy != 0.0), V, 0)  # padding rows write zeros without reading
    cols = tl.arange(0, BLOCK_V)
    for start in range(0, V, BLOCK_V):
        v = start + cols
        valid = v < V
        read = v < read_limit
        x = tl.load(base + v, mask=read, other=0.0).to(tl.float32)
        d = _logit_grad(x, read, v, index, lse, g, g_entropy, entropy, logit_scale, softcap, inv_temperature,
                        HAS_SOFTCAP, HAS_ENTROPY_GRAD)  # fmt: skip
        tl.store(out + v, d.to(out_ptr.dtype.element_ty), mask=valid)


# ------------------------------------------------------------------------------------------------------------------
# Launchers (views of [B, T, V] with unit stride along V; validated by the caller)
# ------------------------------------------------------------------------------------------------------------------


def _rows(x: torch.Tensor) -> tuple[int, int, int, int]:
    """(B, T, stride_b, stride_t) of a [B, T, V] or [N, V] tensor whose last dim has unit stride."""
    if x.dim() == 2:
        return 1, x.shape[0], 0, x.stride(0)
    return x.shape[0], x.shape[1], x.stride(0), x.stride(1)


def _transform_args(logit_scale: float, logit_softcap: float | None) -> tuple[float, float, bool]:
    """(logit_scale, softcap, HAS_SOFTCAP) kernel arguments."""
    return float(logit_scale), 1.0 if logit_softcap is None else float(logit_softcap), logit_softcap is not None


def row_stats(
    logits: torch.Tensor,
    index: torch.Tensor,
    temperature: float,
    with_entropy: bool,
    logit_scale: float = 1.0,
    logit_softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """logsumexp, log-prob at ``index`` and entropy of softmax(z), z = transform(logits) / temperature, row by row.

    logits: [B, T, V] or [N, V], any float dtype, stride(-1) == 1. index: contiguous int64 with B*T (or N)
    elements in [0, V). logit_scale, logit_softcap: r1fast.reference.transform_logits's. Returns (lse, logp,
    entropy or None), each float32 of shape [B*T].
    """
    b, t, stride_b, stride_t = _rows(logits)
    n, vocab = b * t, logits.shape[-1]
    lse = torch.empty(n, dtype=torch.float32, device=logits.device)
    logp = torch.empty_like(lse)
    entropy = torch.empty_like(lse) if with_entropy else None
    if n == 0:
        return lse, logp, entropy
    block, warps = row_block(vocab)
    scale, softcap, has_softcap = _transform_args(logit_scale, logit_softcap)
    _row_stats_kernel[(n,)](
        logits,
        stride_b,
        stride_t,
        index,
        lse,
        logp,
        entropy if with_entropy else lse,
        t,
        vocab,
        scale,
        softcap,
        1.0 / temperature,
        WITH_ENTROPY=with_entropy,
        HAS_SOFTCAP=has_softcap,
        BLOCK_V=block,
        num_warps=warps,
    )
    return lse, logp, entropy


def row_grad(
    logits: torch.Tensor,
    index: torch.Tensor,
    lse: torch.Tensor,
    grad_logp: torch.Tensor,
    temperature: float,
    out: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    logit_softcap: float | None = None,
    grad_entropy: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> torch.Tensor:
    """d(loss)/d(logits) = (grad_logp * (onehot(index) - p) - grad_entropy * p * (log p + H)) * dz/d(logits),
    p = softmax(z), z = transform(logits) / T.

    logits: [B, T, V] or [N, V], stride(-1) == 1. index: contiguous int64 [B*T]; lse: float32 [B*T] from
    ``row_stats`` (same transform); grad_logp: float32 [B*T]; grad_entropy (None: no entropy term) and entropy
    (row_stats's): float32 [B*T]. out: same shape as logits with stride(-1) == 1 (may be ``logits`` itself: each
    element is read before it is overwritten by the same program); default a new tensor in logits' dtype.
    logit_scale, logit_softcap: as in row_stats. Returns out.
    """
    if out is None:
        out = torch.empty_like(logits, memory_format=torch.contiguous_format)
    b, t, stride_b, stride_t = _rows(logits)
    _, _, out_stride_b, out_stride_t = _rows(out)
    n, vocab = b * t, logits.shape[-1]
    if n == 0:
        return out
    block, warps = row_block(vocab)
    scale, softcap, has_softcap = _transform_args(logit_scale, logit_softcap)
    _row_grad_kernel[(n,)](
        logits,
        stride_b,
        stride_t,
        out,
        out_stride_b,
        out_stride_t,
        index,
        lse,
        grad_logp,
        lse if grad_entropy is None else grad_entropy,
        lse if grad_entropy is None else entropy,
        t,
        vocab,
        scale,
        softcap,
        1.0 / temperature,
        HAS_SOFTCAP=has_softcap,
        HAS_ENTROPY_GRAD=grad_entropy is not None,
        BLOCK_V=block,
        num_warps=warps,
    )
    return out


# Loss types as the fused kernel's constexpr: the PPO-clip family shares one derivative.
LOSS_CLIP, LOSS_CISPO, LOSS_SAPO = 0, 1, 2


@triton.jit
def _token_grad(logp, old_logp, ref_logp, adv, weight, is_ratio, eps_low, eps_high, delta, beta, tau_pos, tau_neg,
                LOSS: tl.constexpr, HAS_OLD: tl.constexpr, HAS_DELTA: tl.constexpr, HAS_KL: tl.constexpr,
                BIAS_CORRECTION: tl.constexpr, HAS_IS_RATIO: tl.constexpr):  # fmt: skip
    """d(loss)/d(logp) of one token at token-level IS: weight * d(per_token_objective)/d(logp), the derivative of
    r1fast.reference.per_token_objective written out (torch.minimum splits the gradient of a tie in halves)."""
    r = tl.exp(logp - old_logp) if HAS_OLD else 1.0  # the ratio; d r / d logp = r (on-policy too)
    if LOSS == 1:  # cispo: -min(r, eps_high).detach() * A * logp
        g = -tl.minimum(r, eps_high) * adv
    elif LOSS == 2:  # sapo: -sigmoid(tau (r - 1)) * 4 / tau * A
        tau = tl.where(adv > 0, tau_pos, tau_neg)
        gate = tl.sigmoid(tau * (r - 1.0))
        g = -4.0 * adv * gate * (1.0 - gate) * r
    else:  # -min(c1 A, c2 A), c1 = r (clamped at delta), c2 = clamp(r, 1 - eps_low, 1 + eps_high)
        c1 = r
        d1 = r
        if HAS_DELTA:
            c1 = tl.minimum(r, delta)
            d1 = tl.where(r > delta, 0.0, r)
        c2 = tl.minimum(tl.maximum(r, 1.0 - eps_low), 1.0 + eps_high)
        d2 = tl.where((r >= 1.0 - eps_low) & (r <= 1.0 + eps_high), r, 0.0)
        a = c1 * adv
        b = c2 * adv
        pick1 = tl.where(a < b, 1.0, tl.where(a == b, 0.5, 0.0))
        g = -adv * (pick1 * d1 + (1.0 - pick1) * d2)
    if HAS_IS_RATIO:  # the sampler correction multiplies the surrogate, not the KL
        g = g * is_ratio
    if HAS_KL:  # beta * k3, k3 = e^x - x - 1 with x = ref - logp (times r with the bias correction)
        x = ref_logp - logp
        dkl = 1.0 - tl.exp(x)
        if BIAS_CORRECTION:
            dkl = (dkl + tl.exp(x) - x - 1.0) * r
        g = g + beta * dkl
    return g * weight


@triton.jit
def _row_loss_grad_kernel(
    logits_ptr, stride_row, index_ptr, lse_ptr, logp_ptr, entropy_ptr,
    adv_ptr, weight_ptr, old_ptr, ref_ptr, is_ratio_ptr, entropy_weight_ptr, V, logit_scale, softcap,
    inv_temperature, eps_low, eps_high, delta, beta, tau_pos, tau_neg,
    LOSS: tl.constexpr, HAS_OLD: tl.constexpr, HAS_DELTA: tl.constexpr, HAS_KL: tl.constexpr,
    BIAS_CORRECTION: tl.constexpr, HAS_IS_RATIO: tl.constexpr, HAS_ENTROPY_GRAD: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    # row_stats, the token's d(loss)/d(logp) and row_grad in one program: the row is read twice (the second read
    # right after the first, from L2 where it still is) and overwritten in place with d(loss)/d(logits).
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    cols = tl.arange(0, BLOCK_V)
    m = tl.full((), float("-inf"), tl.float32)
    s = tl.zeros((), tl.float32)
    w = tl.zeros((), tl.float32)
    for start in range(0, V, BLOCK_V):
        valid = start + cols < V
        x = tl.load(base + start + cols, mask=valid, other=0.0).to(tl.float32)
        z = tl.where(valid, _scores(x, logit_scale, softcap, inv_temperature, HAS_SOFTCAP), float("-inf"))
        m, s, w = _online_softmax(m, s, w, z)
    lse = m + tl.log(s)
    index = tl.load(index_ptr + row)
    logp = _scores(tl.load(base + index).to(tl.float32), logit_scale, softcap, inv_temperature, HAS_SOFTCAP) - lse
    entropy = tl.log(s) - w / s
    tl.store(lse_ptr + row, lse)
    tl.store(logp_ptr + row, logp)
    tl.store(entropy_ptr + row, entropy)

    old = tl.load(old_ptr + row) if HAS_OLD else 0.0
    ref = tl.load(ref_ptr + row) if HAS_KL else 0.0
    is_ratio = tl.load(is_ratio_ptr + row) if HAS_IS_RATIO else 1.0
    g = _token_grad(logp, old, ref, tl.load(adv_ptr + row), tl.load(weight_ptr + row), is_ratio, eps_low, eps_high,
                    delta, beta, tau_pos, tau_neg, LOSS, HAS_OLD, HAS_DELTA, HAS_KL, BIAS_CORRECTION,
                    HAS_IS_RATIO)  # fmt: skip
    g_entropy = tl.load(entropy_weight_ptr + row) if HAS_ENTROPY_GRAD else 0.0
    read_limit = tl.where((g != 0.0) | (g_entropy != 0.0), V, 0)  # padding rows write zeros without reading
    for start in range(0, V, BLOCK_V):
        v = start + cols
        read = v < read_limit
        x = tl.load(base + v, mask=read, other=0.0).to(tl.float32)
        d = _logit_grad(x, read, v, index, lse, g, g_entropy, entropy, logit_scale, softcap, inv_temperature,
                        HAS_SOFTCAP, HAS_ENTROPY_GRAD)  # fmt: skip
        tl.store(base + v, d.to(logits_ptr.dtype.element_ty), mask=v < V)


def row_loss_grad(
    logits: torch.Tensor, index: torch.Tensor, temperature: float, advantages: torch.Tensor, weights: torch.Tensor,
    old_logps: torch.Tensor | None, ref_logps: torch.Tensor | None, *, loss_type: str, epsilon_low: float,
    epsilon_high: float, delta: float | None, beta: float, use_bias_correction_kl: bool, sapo_temperature_pos: float,
    sapo_temperature_neg: float, logit_scale: float = 1.0, logit_softcap: float | None = None,
    importance_sampling_ratio: torch.Tensor | None = None, entropy_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Token-level GRPO on a chunk of logits in one pass: stats, g = d(loss)/d(logp), and logits <- d(loss)/d(logits).

    logits: [N, V] contiguous (overwritten with the gradient, in its dtype). index: int64 [N]; advantages, weights
    (d(aggregate)/d(per-token loss)): float32 [N]; old_logps / ref_logps: float32 [N] or None (on-policy / no KL;
    ref_logps is read only when beta != 0). The loss parameters are r1fast.reference.per_token_objective's;
    logit_scale, logit_softcap the model's transform (as in row_stats). importance_sampling_ratio: float32 [N] or
    None, the sampler correction multiplying the surrogate's gradient. entropy_weights: float32 [N] or None,
    d(loss)/d(entropy) per token (the entropy bonus).
    Returns (lse, logp, entropy), float32 [N].
    """
    n, vocab = logits.shape
    lse = torch.empty(n, dtype=torch.float32, device=logits.device)
    logp, entropy = torch.empty_like(lse), torch.empty_like(lse)
    if n == 0:
        return lse, logp, entropy
    block, warps = row_block(vocab)
    loss = {"cispo": LOSS_CISPO, "sapo": LOSS_SAPO}.get(loss_type, LOSS_CLIP)
    has_kl = beta != 0.0
    scale, softcap, has_softcap = _transform_args(logit_scale, logit_softcap)
    _row_loss_grad_kernel[(n,)](
        logits, logits.stride(0), index, lse, logp, entropy, advantages, weights,
        lse if old_logps is None else old_logps, ref_logps if has_kl else lse,
        lse if importance_sampling_ratio is None else importance_sampling_ratio,
        lse if entropy_weights is None else entropy_weights, vocab, scale, softcap, 1.0 / temperature,
        epsilon_low, epsilon_high, 0.0 if delta is None else delta, beta, sapo_temperature_pos, sapo_temperature_neg,
        LOSS=loss, HAS_OLD=old_logps is not None, HAS_DELTA=delta is not None, HAS_KL=has_kl,
        BIAS_CORRECTION=use_bias_correction_kl, HAS_IS_RATIO=importance_sampling_ratio is not None,
        HAS_ENTROPY_GRAD=entropy_weights is not None, HAS_SOFTCAP=has_softcap, BLOCK_V=block, num_warps=warps,
    )  # fmt: skip
    return lse, logp, entropy
