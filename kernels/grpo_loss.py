"""Triton kernels of the GRPO loss: the passes over a [tokens, vocab] logits tensor.

The policy loss itself is a function of per-token log-probs (``r1fast.reference.policy_loss``); the only [N, V]
work is getting those log-probs and pushing d(loss)/d(logp) back onto the vocabulary rows:

- ``row_stats``: one streaming pass per token row: logsumexp of z = logits / temperature, the log-prob of the
  sampled token, and (optionally) the entropy. Reads N*V elements once, writes 3 floats per row.
- ``row_grad``: d(loss)/d(logits)[v] = g * (onehot(v == index) - softmax(z)_v) / temperature for a given
  per-token scalar g = d(loss)/d(logp) and the saved logsumexp. Reads N*V, writes N*V (in place allowed).
  Rows with g == 0 (padding) skip the read.

- ``row_loss_grad``: for the fused LM head at token-level importance sampling, both in one program per row: the
  stats, then the token's g from the per-token objective's derivative (written out for every loss type), then the
  row overwritten with d(loss)/d(logits). Same bytes as the two kernels, without a round trip through memory and
  PyTorch for g.

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
    inv_temperature,
    WITH_ENTROPY: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    # Bytes: V * elem_size read per row; FLOPs: ~4 per element (+2 for entropy). Bandwidth bound.
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + (row // T) * stride_b + (row % T) * stride_t
    cols = tl.arange(0, BLOCK_V)
    m = tl.full((), float("-inf"), tl.float32)  # running max of z
    s = tl.zeros((), tl.float32)  # sum exp(z - m)
    w = tl.zeros((), tl.float32)  # sum exp(z - m) * z  (entropy = lse - w / s)
    for start in range(0, V, BLOCK_V):
        valid = start + cols < V
        z = tl.load(base + start + cols, mask=valid, other=float("-inf")).to(tl.float32) * inv_temperature
        m_new = tl.maximum(m, tl.max(z, axis=0))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row starting with -inf logits stays NaN-free
        scale = tl.exp(m - m_ref)
        e = tl.exp(z - m_ref)
        s = s * scale + tl.sum(e, axis=0)
        if WITH_ENTROPY:
            w = w * scale + tl.sum(e * tl.where(valid, z, 0.0), axis=0)
        m = m_new
    lse = m + tl.log(s)
    index = tl.load(index_ptr + row)
    z_index = tl.load(base + index).to(tl.float32) * inv_temperature
    tl.store(lse_ptr + row, lse)
    tl.store(logp_ptr + row, z_index - lse)
    if WITH_ENTROPY:
        tl.store(entropy_ptr + row, lse - w / s)


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
    T,
    V,
    inv_temperature,
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
    scale = g * inv_temperature
    read_limit = tl.where(g != 0.0, V, 0)  # padding rows (g == 0) write zeros without reading
    cols = tl.arange(0, BLOCK_V)
    for start in range(0, V, BLOCK_V):
        v = start + cols
        valid = v < V
        z = tl.load(base + v, mask=v < read_limit, other=float("-inf")).to(tl.float32) * inv_temperature
        p = tl.exp(z - lse)
        d = (tl.where(v == index, 1.0, 0.0) - p) * scale
        tl.store(out + v, d.to(out_ptr.dtype.element_ty), mask=valid)


# ------------------------------------------------------------------------------------------------------------------
# Launchers (views of [B, T, V] with unit stride along V; validated by the caller)
# ------------------------------------------------------------------------------------------------------------------


def _rows(x: torch.Tensor) -> tuple[int, int, int, int]:
    """(B, T, stride_b, stride_t) of a [B, T, V] or [N, V] tensor whose last dim has unit stride."""
    if x.dim() == 2:
        return 1, x.shape[0], 0, x.stride(0)
    return x.shape[0], x.shape[1], x.stride(0), x.stride(1)


def row_stats(
    logits: torch.Tensor, index: torch.Tensor, temperature: float, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """logsumexp, log-prob at ``index`` and entropy of softmax(logits / temperature), row by row.

    logits: [B, T, V] or [N, V], any float dtype, stride(-1) == 1. index: contiguous int64 with B*T (or N)
    elements in [0, V). Returns (lse, logp, entropy or None), each float32 of shape [B*T].
    """
    b, t, stride_b, stride_t = _rows(logits)
    n, vocab = b * t, logits.shape[-1]
    lse = torch.empty(n, dtype=torch.float32, device=logits.device)
    logp = torch.empty_like(lse)
    entropy = torch.empty_like(lse) if with_entropy else None
    if n == 0:
        return lse, logp, entropy
    block, warps = row_block(vocab)
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
        1.0 / temperature,
        WITH_ENTROPY=with_entropy,
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
) -> torch.Tensor:
    """d(loss)/d(logits) = grad_logp * (onehot(index) - softmax(logits / temperature)) / temperature.

    logits: [B, T, V] or [N, V], stride(-1) == 1. index: contiguous int64 [B*T]; lse: float32 [B*T] from
    ``row_stats``; grad_logp: float32 [B*T]. out: same shape as logits with stride(-1) == 1 (may be ``logits``
    itself: each element is read before it is overwritten by the same program); default a new tensor in logits'
    dtype. Returns out.
    """
    if out is None:
        out = torch.empty_like(logits, memory_format=torch.contiguous_format)
    b, t, stride_b, stride_t = _rows(logits)
    _, _, out_stride_b, out_stride_t = _rows(out)
    n, vocab = b * t, logits.shape[-1]
    if n == 0:
        return out
    block, warps = row_block(vocab)
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
        t,
        vocab,
        1.0 / temperature,
        BLOCK_V=block,
        num_warps=warps,
    )
    return out


# Loss types as the fused kernel's constexpr: the PPO-clip family shares one derivative.
LOSS_CLIP, LOSS_CISPO, LOSS_SAPO = 0, 1, 2


@triton.jit
def _token_grad(logp, old_logp, ref_logp, adv, weight, eps_low, eps_high, delta, beta, tau_pos, tau_neg,
                LOSS: tl.constexpr, HAS_OLD: tl.constexpr, HAS_DELTA: tl.constexpr, HAS_KL: tl.constexpr,
                BIAS_CORRECTION: tl.constexpr):  # fmt: skip
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
    adv_ptr, weight_ptr, old_ptr, ref_ptr, V, inv_temperature,
    eps_low, eps_high, delta, beta, tau_pos, tau_neg,
    LOSS: tl.constexpr, HAS_OLD: tl.constexpr, HAS_DELTA: tl.constexpr, HAS_KL: tl.constexpr,
    BIAS_CORRECTION: tl.constexpr, BLOCK_V: tl.constexpr,
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
        z = tl.load(base + start + cols, mask=valid, other=float("-inf")).to(tl.float32) * inv_temperature
        m_new = tl.maximum(m, tl.max(z, axis=0))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        scale = tl.exp(m - m_ref)
        e = tl.exp(z - m_ref)
        s = s * scale + tl.sum(e, axis=0)
        w = w * scale + tl.sum(e * tl.where(valid, z, 0.0), axis=0)
        m = m_new
    lse = m + tl.log(s)
    index = tl.load(index_ptr + row)
    logp = tl.load(base + index).to(tl.float32) * inv_temperature - lse
    tl.store(lse_ptr + row, lse)
    tl.store(logp_ptr + row, logp)
    tl.store(entropy_ptr + row, lse - w / s)

    old = tl.load(old_ptr + row) if HAS_OLD else 0.0
    ref = tl.load(ref_ptr + row) if HAS_KL else 0.0
    g = _token_grad(logp, old, ref, tl.load(adv_ptr + row), tl.load(weight_ptr + row), eps_low, eps_high, delta,
                    beta, tau_pos, tau_neg, LOSS, HAS_OLD, HAS_DELTA, HAS_KL, BIAS_CORRECTION)  # fmt: skip
    scale = g * inv_temperature
    read_limit = tl.where(g != 0.0, V, 0)  # padding rows (weight 0) write zeros without reading
    for start in range(0, V, BLOCK_V):
        v = start + cols
        z = tl.load(base + v, mask=v < read_limit, other=float("-inf")).to(tl.float32) * inv_temperature
        d = (tl.where(v == index, 1.0, 0.0) - tl.exp(z - lse)) * scale
        tl.store(base + v, d.to(logits_ptr.dtype.element_ty), mask=v < V)


def row_loss_grad(
    logits: torch.Tensor, index: torch.Tensor, temperature: float, advantages: torch.Tensor, weights: torch.Tensor,
    old_logps: torch.Tensor | None, ref_logps: torch.Tensor | None, *, loss_type: str, epsilon_low: float,
    epsilon_high: float, delta: float | None, beta: float, use_bias_correction_kl: bool, sapo_temperature_pos: float,
    sapo_temperature_neg: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Token-level GRPO on a chunk of logits in one pass: stats, g = d(loss)/d(logp), and logits <- d(loss)/d(logits).

    logits: [N, V] contiguous (overwritten with the gradient, in its dtype). index: int64 [N]; advantages, weights
    (d(aggregate)/d(per-token loss)): float32 [N]; old_logps / ref_logps: float32 [N] or None (on-policy / no KL;
    ref_logps is read only when beta != 0). The loss parameters are r1fast.reference.per_token_objective's.
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
    _row_loss_grad_kernel[(n,)](
        logits, logits.stride(0), index, lse, logp, entropy, advantages, weights,
        lse if old_logps is None else old_logps, ref_logps if has_kl else lse, vocab, 1.0 / temperature,
        epsilon_low, epsilon_high, 0.0 if delta is None else delta, beta, sapo_temperature_pos, sapo_temperature_neg,
        LOSS=loss, HAS_OLD=old_logps is not None, HAS_DELTA=delta is not None, HAS_KL=has_kl,
        BIAS_CORRECTION=use_bias_correction_kl, BLOCK_V=block, num_warps=warps,
    )  # fmt: skip
    return lse, logp, entropy
