"""The GRPO loss, public API: validation, backend dispatch and the autograd Functions around kernels/grpo_loss.py.

How the work is split. The policy loss is a function of per-token log-probs and entropies ([B, T], cheap): it is
``r1fast.reference.policy_loss``, called as is, so every loss type, both importance-sampling levels, the KL term,
TRL's masks, importance ratio and entropy bonus, and the metrics are the specification's own code. The
[tokens, vocab] work is the Triton row passes:

- logits given (``grpo_loss``): forward = one ``row_stats`` pass (lse, logp, entropy); autograd through the
  reference's policy loss yields g = d(loss)/d(logp) (and g_H = d(loss)/d(entropy) with the entropy bonus) per
  token; backward = one ``row_grad`` pass writing d(loss)/d(logits). Three passes over the logits in all.
- fused with the LM head (``fused_linear_grpo_loss``): tokens in chunks, logits_c = H_c @ W^T (+ b); the aggregation
  is linear with weights that depend on the mask alone. What a token's g needs decides the passes:
  its own logp (token-level ratios; the sampler's importance ratio and the entropy bonus are per token too): one
  ``row_loss_grad`` kernel per chunk computes lse, logp, entropy, g and overwrites the chunk's logits with
  d(loss)/d(logits); the gradients are formed in the forward (logits 2NHV, dH 2NHV, dW 2NHV = 6NHV) and the
  backward only scales them. Its sequence's logps (sequence-level ratios, the off-policy mask, vespo's phi): with
  chunks of whole sequences (chunk >= T) each chunk's g is known from its own logps, one pass (6NHV, g from autograd
  through the reference's per-token objective on the chunk's rows); otherwise two passes. Every token's entropy
  (the entropy mask's quantile over the batch): a first no-grad pass gets every logp, lse and entropy, then a second
  recomputes each chunk's logits and writes the gradients (8NHV). dW is accumulated in float32.

Logit transforms: every function takes the model's own transform of its LM head's output, ``logit_scale`` (a
multiplier) and ``logit_softcap`` (cap * tanh(x / cap)), applied before the temperature as the model's generation
does (r1fast.reference.transform_logits; r1fast.logit_transform reads them from a Hugging Face config). The kernels
apply them per element, forward and backward.

Backends: "auto" = Triton on CUDA tensors of dtype bf16/fp16/fp32, the reference otherwise; "triton" forces the
kernels (CPU tensors need TRITON_INTERPRET=1); "reference" forces r1fast.reference.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from typing import Any

import torch
from torch import nn

from r1fast import reference

BACKENDS = ("auto", "triton", "reference")
KERNEL_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# The config a caller may pass (**config), with the reference's defaults: its keyword-only parameters.
POLICY_LOSS_DEFAULTS: dict[str, Any] = {
    name: p.default
    for name, p in inspect.signature(reference.policy_loss).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}
_AGGREGATE_KEYS = tuple(
    name
    for name, p in inspect.signature(reference.aggregate_loss).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "loss_type"
)

# Fused-linear chunk: the logits of one chunk take at most this many bytes (and 1/8 of free device memory).
_CHUNK_BYTES_CUDA = 256 << 20
_CHUNK_BYTES_CPU = 16 << 20


# ------------------------------------------------------------------------------------------------------------------
# Validation and dispatch
# ------------------------------------------------------------------------------------------------------------------


def _loss_config(config: dict[str, Any], ref_logps_given: bool) -> dict[str, Any]:
    """The caller's config merged over the reference defaults; TypeError for an unknown name, ValueError (from
    reference.check_loss_config) for a meaningless value."""
    unknown = sorted(set(config) - set(POLICY_LOSS_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown GRPO loss option(s) {unknown}; known: {sorted(POLICY_LOSS_DEFAULTS)}")
    cfg = {**POLICY_LOSS_DEFAULTS, **config}
    reference.check_loss_config(
        cfg["loss_type"],
        cfg["importance_sampling_level"],
        cfg["beta"],
        cfg["epsilon"],
        cfg["epsilon_high"],
        cfg["delta"],
        ref_logps_given,
        top_entropy_quantile=cfg["top_entropy_quantile"],
        off_policy_mask_threshold=cfg["off_policy_mask_threshold"],
        entropy_coef=cfg["entropy_coef"],
    )
    return cfg


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _transform(logit_scale: float, logit_softcap: float | None) -> dict[str, Any]:
    """The validated logit transform as keyword arguments (reference.transform_logits's names)."""
    if isinstance(logit_scale, bool) or not (isinstance(logit_scale, (int, float)) and 0 < logit_scale < math.inf):
        raise ValueError(f"logit_scale must be a finite number > 0, got {logit_scale!r}")
    if logit_softcap is not None and (
        isinstance(logit_softcap, bool)
        or not (isinstance(logit_softcap, (int, float)) and 0 < logit_softcap < math.inf)
    ):
        raise ValueError(f"logit_softcap must be a finite number > 0 or None, got {logit_softcap!r}")
    return dict(logit_scale=float(logit_scale), logit_softcap=None if logit_softcap is None else float(logit_softcap))


def _check_float(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_index(name: str, index: torch.Tensor, shape: tuple[int, ...], vocab: int, device: torch.device) -> None:
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(index).__name__}")
    if index.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"{name} must be an integer tensor, got dtype {index.dtype}")
    if tuple(index.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(index.shape)}")
    if index.device != device:
        raise ValueError(f"{name} is on {index.device}, expected {device}")
    if index.numel() and bool(((index < 0) | (index >= vocab)).any()):
        bad = index[(index < 0) | (index >= vocab)][0].item()
        raise ValueError(f"{name} holds token id {bad} outside the vocabulary [0, {vocab})")


def _check_loss_inputs(
    lead: tuple[int, int],
    device: torch.device,
    vocab: int,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    sampling_logps: torch.Tensor | None = None,
    importance_sampling_ratio: torch.Tensor | None = None,
) -> None:
    b, t = lead
    _check_index("completion_ids", completion_ids, (b, t), vocab, device)
    if not isinstance(completion_mask, torch.Tensor) or tuple(completion_mask.shape) != (b, t):
        got = tuple(completion_mask.shape) if isinstance(completion_mask, torch.Tensor) else type(completion_mask)
        raise ValueError(f"completion_mask must have shape {(b, t)}, got {got}")
    if not isinstance(advantages, torch.Tensor) or tuple(advantages.shape) not in ((b,), (b, 1), (b, t)):
        got = tuple(advantages.shape) if isinstance(advantages, torch.Tensor) else type(advantages)
        raise ValueError(f"advantages must have shape {(b,)}, {(b, 1)} or {(b, t)}, got {got}")
    for name, x in (("completion_mask", completion_mask), ("advantages", advantages)):
        if x.device != device:
            raise ValueError(f"{name} is on {x.device}, expected {device}")
    for name, x in (("old_logps", old_logps), ("ref_logps", ref_logps), ("sampling_logps", sampling_logps),
                    ("importance_sampling_ratio", importance_sampling_ratio)):  # fmt: skip
        if x is None:
            continue
        _check_float(name, x)
        shapes = ((b,), (b, 1), (b, t)) if name == "importance_sampling_ratio" else ((b, t),)
        if tuple(x.shape) not in shapes:
            raise ValueError(f"{name} must have shape {' or '.join(map(str, shapes))}, got {tuple(x.shape)}")
        if x.device != device:
            raise ValueError(f"{name} is on {x.device}, expected {device}")


def _per_sequence(x: torch.Tensor | None) -> torch.Tensor | None:
    """[B] -> [B, 1] (a per-sequence importance ratio); other shapes unchanged."""
    return x.unsqueeze(1) if x is not None and x.dim() == 1 else x


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _use_triton(backend: str, x: torch.Tensor) -> bool:
    """Whether the Triton kernels run for input x under ``backend`` (see the module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return False
    if backend == "auto":
        return x.is_cuda and x.dtype in KERNEL_DTYPES
    if x.dtype not in KERNEL_DTYPES:
        raise TypeError(f"backend='triton' takes {KERNEL_DTYPES} inputs, got {x.dtype}")
    if not (x.is_cuda or _interpreting()):
        raise ValueError(f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU), got {x.device}")
    return True


def _kernels():
    from r1fast.kernels import grpo_loss as kernels  # imports triton: only when a kernel is asked for

    return kernels


def _rowwise(x: torch.Tensor) -> torch.Tensor:
    """x with unit stride along the vocabulary, as the kernels need (a copy only if it is not)."""
    return x if x.stride(-1) == 1 else x.contiguous()


# ------------------------------------------------------------------------------------------------------------------
# Logits given
# ------------------------------------------------------------------------------------------------------------------


class _SelectiveLogSoftmax(torch.autograd.Function):
    """logits [B, T, V] or [N, V] (unit stride along V) -> (logp, entropy or None), float32 of the leading shape;
    both differentiable (the entropy for the entropy bonus)."""

    @staticmethod
    def forward(ctx, logits, index, temperature, with_entropy, inplace_backward, transform):
        ctx.set_materialize_grads(False)
        flat_index = index.reshape(-1).to(torch.int64).contiguous()
        lse, logp, entropy = _kernels().row_stats(logits, flat_index, temperature, with_entropy, **transform)
        ctx.save_for_backward(logits, flat_index, lse, lse if entropy is None else entropy)
        ctx.temperature, ctx.inplace_backward, ctx.transform = temperature, inplace_backward, transform
        return logp.view(index.shape), None if entropy is None else entropy.view(index.shape)

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        if grad_logp is None and grad_entropy is None:
            return None, None, None, None, None, None
        logits, flat_index, lse, entropy = ctx.saved_tensors
        flat = lambda g: g.reshape(-1).to(torch.float32).contiguous()  # noqa: E731
        grad_logp = torch.zeros_like(lse) if grad_logp is None else flat(grad_logp)
        grad_entropy = None if grad_entropy is None else flat(grad_entropy)
        out = logits if ctx.inplace_backward else None
        dlogits = _kernels().row_grad(logits, flat_index, lse, grad_logp, ctx.temperature, out=out, **ctx.transform,
                                      grad_entropy=grad_entropy, entropy=entropy)  # fmt: skip
        return dlogits, None, None, None, None, None


def _logps_and_entropy(
    logits: torch.Tensor,
    index: torch.Tensor,
    temperature: float,
    with_entropy: bool,
    inplace_backward: bool,
    transform: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    vocab = logits.shape[-1]
    rows = logits if logits.dim() == 3 else logits.reshape(-1, vocab)
    return _SelectiveLogSoftmax.apply(_rowwise(rows), index, temperature, with_entropy, inplace_backward, transform)


def selective_log_softmax(
    logits: torch.Tensor,
    index: torch.Tensor,
    temperature: float = 1.0,
    *,
    logit_scale: float = 1.0,
    logit_softcap: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """log softmax(transform(logits) / temperature) gathered at ``index``, without a [..., V] float32 copy.

    logits: [..., V] bf16/fp16/fp32 (fp64 on the reference backend), any device, as the LM head outputs them;
    index: [...] integer in [0, V), same device. logit_scale, logit_softcap: the model's logit transform (see the
    module docstring). Returns [...] float32 (float64 for float64 logits on the reference backend); differentiable
    (the Triton backward writes d/d(logits) in logits' dtype). Raises TypeError / ValueError on bad input.
    """
    _check_float("logits", logits)
    if logits.dim() < 1:
        raise ValueError("logits must have a vocabulary dimension, got a 0-d tensor")
    _check_index("index", index, tuple(logits.shape[:-1]), logits.shape[-1], logits.device)
    _check_temperature(temperature)
    transform = _transform(logit_scale, logit_softcap)
    if not _use_triton(backend, logits):
        return reference.selective_log_softmax(logits, index.long(), temperature, **transform)
    logp, _ = _logps_and_entropy(logits, index, temperature, False, False, transform)
    return logp


def grpo_loss(
    logits: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    sampling_logps: torch.Tensor | None = None,
    importance_sampling_ratio: torch.Tensor | None = None,
    *,
    backend: str = "auto",
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    logit_softcap: float | None = None,
    inplace_backward: bool = False,
    **config: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO policy loss from logits; equals ``r1fast.reference.grpo_loss``.

    logits: [B, T, V] bf16/fp16/fp32 (fp64 on the reference backend); row t scores completion_ids[:, t]. A view
    such as ``model_logits[:, :-1]`` is read in place. completion_ids: [B, T] integer in [0, V);
    completion_mask: [B, T] (any dtype, 1 = completion token); advantages: [B], [B, 1] or [B, T];
    old_logps, ref_logps: [B, T] float or None (None old = on-policy; ref needed when beta != 0). sampling_logps:
    [B, T], the sampler's log-probs for the off-policy mask (default old_logps); importance_sampling_ratio: [B],
    [B, 1] or [B, T], the sampler correction (TRL's importance_sampling_ratio input). All on one device.
    logit_scale, logit_softcap: the model's logit transform (module docstring).
    config: the reference's options (loss_type, beta, epsilon, epsilon_high, delta, importance_sampling_level,
    max_completion_length, num_items_in_batch, gradient_accumulation_steps, steps_per_generation, num_processes,
    use_bias_correction_kl, sapo_temperature_pos, sapo_temperature_neg, top_entropy_quantile, off_policy_mask_threshold,
    entropy_coef, vespo_k_pos, vespo_lambda_pos, vespo_k_neg, vespo_lambda_neg), TRL's defaults and meanings.
    inplace_backward: write d(loss)/d(logits) into the logits' memory in the backward (saves a [B, T, V] buffer;
    the logits must not be used after backward, and backward must run once).
    Returns (scalar float32 loss, metrics dict of floats incl. "entropy"); d(loss)/d(logits) has logits' dtype.
    Raises TypeError (dtype, unknown option) / ValueError (shape, device, id out of range, config value).
    """
    _check_float("logits", logits)
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, T, V], got shape {tuple(logits.shape)}")
    _check_loss_inputs(
        tuple(logits.shape[:2]), logits.device, logits.shape[2], completion_ids, completion_mask, advantages,
        old_logps, ref_logps, sampling_logps, importance_sampling_ratio,
    )  # fmt: skip
    _check_temperature(temperature)
    transform = _transform(logit_scale, logit_softcap)
    cfg = _loss_config(config, ref_logps is not None)
    importance_sampling_ratio = _per_sequence(importance_sampling_ratio)
    if not _use_triton(backend, logits):
        return reference.grpo_loss(
            logits, completion_ids.long(), completion_mask, advantages, old_logps, ref_logps, sampling_logps,
            importance_sampling_ratio, temperature=temperature, **transform, **config,
        )  # fmt: skip
    logps, entropy = _logps_and_entropy(logits, completion_ids, temperature, True, inplace_backward, transform)
    loss, metrics = reference.policy_loss(logps, completion_mask, advantages, old_logps, ref_logps, entropy,
                                          sampling_logps, importance_sampling_ratio, **cfg)  # fmt: skip
    metrics["entropy"] = reference._global_masked_mean(entropy.detach(), completion_mask.to(entropy.dtype))
    return loss, metrics


# ------------------------------------------------------------------------------------------------------------------
# Fused with the LM head
# ------------------------------------------------------------------------------------------------------------------


def _chunk_size(n_tokens: int, vocab: int, dtype: torch.dtype, device: torch.device, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if not (isinstance(chunk_size, int) and chunk_size > 0):
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        return chunk_size
    row_bytes = vocab * torch.empty((), dtype=dtype).element_size()
    if device.type == "cuda":
        budget = min(_CHUNK_BYTES_CUDA, torch.cuda.mem_get_info(device)[0] // 8)
        rows = budget // row_bytes // 128 * 128  # tensor-core friendly M
    else:
        rows = _CHUNK_BYTES_CPU // row_bytes
    return max(1, min(max(rows, 128 if device.type == "cuda" else 1), n_tokens))


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, fp32_head: bool = False) -> torch.Tensor:
    """h @ W^T (+ b): [n, V] in h's dtype (float32 accumulation inside the matmul); fp32_head: in float32, the
    operands as given (bf16 products are exact in float32), accumulated and stored in float32."""
    if fp32_head and h.dtype != torch.float32:
        return lm_head_fp32(h, weight, bias)
    return h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())


def _linear_backward(dlogits: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, s: int, e: int,
                     grad_h: torch.Tensor | None, grad_w: torch.Tensor | None, grad_b: torch.Tensor | None) -> None:
    """d(loss)/d(logits) [e - s, V] of rows s:e of hidden [N, H] into grad_h[s:e] (written), grad_w [V, H] and grad_b
    [V] (float32, accumulated); None skips one. An fp32 head's float32 d(loss)/d(logits) meets the operands in their
    dtype (tensor-core GEMMs): the float32 is for the softmax, as in the forward."""
    dlogits = dlogits.to(hidden.dtype)
    if grad_h is not None:
        torch.mm(dlogits, weight, out=grad_h[s:e])
    if grad_w is not None:
        _accumulate_dweight(grad_w, dlogits, hidden[s:e])
    if grad_b is not None:
        grad_b.add_(dlogits.sum(0, dtype=torch.float32))


_MM_OUT_DTYPE_OK = True


def lm_head_fp32(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The LM head's logits in float32 from low-precision operands: h [n, H] @ weight [V, H]^T (+ bias [V]) with
    float32 accumulation and a float32 [n, V] result, never rounded to h's dtype. On CUDA one cuBLAS GEMM with
    bf16/fp16 operands and a float32 output (tensor cores, no float32 copy of the weight); elsewhere the operands are
    upcast (exact). For the fp32 head of the loss and of the sampler's last projection."""
    global _MM_OUT_DTYPE_OK
    if h.is_cuda and _MM_OUT_DTYPE_OK:
        try:
            out = torch.mm(h, weight.t(), out_dtype=torch.float32)
            return out if bias is None else out.add_(bias)
        except (RuntimeError, TypeError, NotImplementedError) as err:
            _MM_OUT_DTYPE_OK = False
            warnings.warn(f"mm with out_dtype=float32 unavailable ({err}); upcasting the LM head", stacklevel=2)
    out = h.float() @ weight.float().t()
    return out if bias is None else out.add_(bias)


_MIXED_ADDMM_OK = True


def _accumulate_dweight(grad_w: torch.Tensor, dlogits: torch.Tensor, h: torch.Tensor) -> None:
    """grad_w (float32) += dlogits^T @ h without rounding the chunk's product to dlogits' dtype."""
    if dlogits.dtype == grad_w.dtype:
        grad_w.addmm_(dlogits.t(), h)
        return
    global _MIXED_ADDMM_OK
    if dlogits.is_cuda and _MIXED_ADDMM_OK:
        try:  # cuBLAS bf16/fp16 operands, float32 output and accumulator
            torch.addmm(grad_w, dlogits.t(), h, out_dtype=torch.float32, out=grad_w)
            return
        except (RuntimeError, TypeError, NotImplementedError) as err:
            _MIXED_ADDMM_OK = False
            warnings.warn(f"addmm with out_dtype=float32 unavailable ({err}); upcasting dW operands", stacklevel=2)
    grad_w.addmm_(dlogits.t().float(), h.float())


def _aggregation_weights(mask: torch.Tensor, cfg: dict[str, Any]) -> torch.Tensor:
    """d(aggregate_loss)/d(per_token_loss) [B, T]: exact, since every aggregation is linear in the per-token loss."""
    with torch.enable_grad():
        per_token_loss = torch.zeros_like(mask, requires_grad=True)
        loss = reference.aggregate_loss(
            per_token_loss, mask, loss_type=cfg["loss_type"], **{k: cfg[k] for k in _AGGREGATE_KEYS}
        )
        (weights,) = torch.autograd.grad(loss, per_token_loss)
    return weights


def _token_objective_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The per-token objective's parameters (r1fast.reference.per_token_objective's names) for row_loss_grad."""
    return dict(
        loss_type=cfg["loss_type"],
        epsilon_low=cfg["epsilon"],
        epsilon_high=cfg["epsilon"] if cfg["epsilon_high"] is None else cfg["epsilon_high"],
        delta=cfg["delta"],
        beta=cfg["beta"],
        use_bias_correction_kl=cfg["use_bias_correction_kl"],
        sapo_temperature_pos=cfg["sapo_temperature_pos"],
        sapo_temperature_neg=cfg["sapo_temperature_neg"],
    )


def _objective_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """All of r1fast.reference.per_token_objective's options but the entropy mask."""
    return dict(
        _token_objective_config(cfg),
        importance_sampling_level=cfg["importance_sampling_level"],
        off_policy_mask_threshold=cfg["off_policy_mask_threshold"],
        **{k: cfg[k] for k in ("vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg", "vespo_lambda_neg")},
    )


def _entropy_weights(mask: torch.Tensor, cfg: dict[str, Any]) -> torch.Tensor:
    """d(loss)/d(entropy) [B, T] of the entropy bonus without an entropy mask: -entropy_coef * d(entropy_bonus)/dH."""
    with torch.enable_grad():
        entropies = torch.zeros_like(mask, requires_grad=True)
        bonus = reference.entropy_bonus(entropies, mask, None, cfg["gradient_accumulation_steps"])
        (weights,) = torch.autograd.grad(-cfg["entropy_coef"] * bonus, entropies)
    return weights


def _rows_objective_grad(
    logps: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    data: tuple[torch.Tensor | None, ...],
    weights: torch.Tensor,
    cfg: dict[str, Any],
    rows: slice,
) -> torch.Tensor:
    """g = d(loss)/d(logp) for the whole sequences `rows`: d(sum weights * per_token_objective)/d(logp) over those
    rows only, exact when no term couples sequences (the aggregation is linear, with weights [B, T] from the whole
    mask; the off-policy mask, vespo's phi and sequence-level ratios are per sequence). logps, mask: [B, T] float32
    (only `rows` is read); data: (old, ref, sampling log-probs, importance ratio). Returns float32 [rows * T]."""
    old, ref, sampling, is_ratio = (None if x is None else x[rows] for x in data)
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    with torch.enable_grad():
        leaf = logps[rows].detach().requires_grad_()
        per_token_loss, _, _ = reference.per_token_objective(
            leaf, mask[rows], adv[rows].to(leaf.dtype), old, ref, importance_sampling_ratio=is_ratio,
            sampling_logps=sampling, **_objective_config(cfg),
        )  # fmt: skip
        (g,) = torch.autograd.grad((per_token_loss * weights[rows]).sum(), leaf, allow_unused=True)
    g = torch.zeros_like(leaf) if g is None else g
    return g.reshape(-1).to(torch.float32).contiguous()


class _FusedLinearGRPO(torch.autograd.Function):
    """hidden [N, H], weight [V, H], bias [V] | None -> scalar loss; metrics written into ``metrics_out``.

    The gradients of hidden / weight / bias are computed in the forward (see the module docstring) and scaled by the
    incoming gradient in the backward. data: (old_logps, ref_logps, sampling_logps, importance_sampling_ratio).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, mask, advantages, data, temperature, transform, fp32_head, chunk, cfg,
                wants, metrics_out):  # fmt: skip
        kernels = _kernels()
        b, t = mask.shape
        n = hidden.shape[0]
        want_h, want_w, want_b = wants
        any_grad = want_h or want_w or want_b
        old_logps, ref_logps, sampling_logps, is_ratio = data
        # What each token's g needs: its own logp (token level, the one-kernel path), its sequence's logps
        # (sequence-level ratios, the off-policy mask, vespo's phi), or every token's entropy (the entropy mask's
        # quantile over the batch).
        global_terms = cfg["top_entropy_quantile"] < 1.0
        sequence_terms = (cfg["importance_sampling_level"] == "sequence" or cfg["loss_type"] == "vespo"
                          or cfg["off_policy_mask_threshold"] is not None)  # fmt: skip
        bonus = cfg["entropy_coef"] != 0.0
        mask_f = mask.to(torch.float32)
        adv_tok = (advantages.unsqueeze(1) if advantages.dim() == 1 else advantages).expand(b, t).reshape(-1)

        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        entropy = torch.empty_like(logp)
        grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if want_b else None

        def head(s: int, e: int) -> torch.Tensor:
            return _linear(hidden[s:e], weight, bias, fp32_head)

        def backprop_chunk(dlogits: torch.Tensor, s: int, e: int) -> None:
            _linear_backward(dlogits, hidden, weight, s, e, grad_h, grad_w, grad_b)

        def stats(s: int, e: int, logits_c: torch.Tensor) -> None:
            lse[s:e], logp[s:e], entropy[s:e] = kernels.row_stats(logits_c, ids[s:e], temperature, True, **transform)

        one_kernel = any_grad and not global_terms and not sequence_terms
        whole_sequences = any_grad and not global_terms and sequence_terms and chunk >= t
        entropy_w = _entropy_weights(mask_f, cfg).reshape(-1).contiguous() if bonus and not global_terms else None
        if one_kernel:  # the gradient is known in the forward: one kernel per chunk, no recompute (6NHV)
            weights = _aggregation_weights(mask_f, cfg).reshape(-1).contiguous()
            f32 = lambda x: None if x is None else x.to(torch.float32).contiguous()  # noqa: E731
            adv_f, old_f = f32(adv_tok), f32(None if old_logps is None else old_logps.reshape(-1))
            ref_f = f32(ref_logps.reshape(-1)) if cfg["beta"] != 0.0 else None
            ratio_f = None if is_ratio is None else f32(is_ratio.expand(b, t).reshape(-1))
            objective = _token_objective_config(cfg)
            pick = lambda x, sl: None if x is None else x[sl]  # noqa: E731
            for s, e in _chunks(n, chunk):
                sl = slice(s, e)
                logits_c = head(s, e)
                lse[sl], logp[sl], entropy[sl] = kernels.row_loss_grad(
                    logits_c, ids[sl], temperature, adv_f[sl], weights[sl], pick(old_f, sl), pick(ref_f, sl),
                    **objective, **transform, importance_sampling_ratio=pick(ratio_f, sl),
                    entropy_weights=pick(entropy_w, sl),
                )  # fmt: skip
                backprop_chunk(logits_c, s, e)  # logits_c now holds d(loss)/d(logits)
                del logits_c
        elif whole_sequences:
            # Chunks of whole sequences: a sequence's g needs only its own logps, so each chunk's gradient is known
            # as soon as its logits are. One pass, 6NHV, as at token level.
            weights = _aggregation_weights(mask_f, cfg)
            logps = logp.view(b, t)
            rows = chunk // t
            for r in range(0, b, rows):
                s, e = r * t, min(r + rows, b) * t
                logits_c = head(s, e)
                stats(s, e, logits_c)
                g_c = _rows_objective_grad(logps, mask_f, advantages, data, weights, cfg, slice(r, r + rows))
                dlogits = kernels.row_grad(logits_c, ids[s:e], lse[s:e], g_c, temperature, out=logits_c, **transform,
                                           grad_entropy=None if entropy_w is None else entropy_w[s:e],
                                           entropy=entropy[s:e])  # fmt: skip
                backprop_chunk(dlogits, s, e)
                del logits_c, dlogits
        else:  # no gradient, or a first pass for the statistics every token's g needs
            for s, e in _chunks(n, chunk):
                stats(s, e, head(s, e))

        logps, entropies = logp.view(b, t), entropy.view(b, t)
        if any_grad and not (one_kernel or whole_sequences):
            # A second pass over the recomputed logits (8NHV): g and d(loss)/d(entropy) by autograd through the
            # reference's policy loss, which now has every logp and entropy.
            with torch.enable_grad():
                leaf = logps.detach().requires_grad_()
                entropy_leaf = entropies.detach().requires_grad_(bonus)
                loss, metrics = reference.policy_loss(leaf, mask, advantages, old_logps, ref_logps, entropy_leaf,
                                                      sampling_logps, is_ratio, **cfg)  # fmt: skip
                leaves = [leaf, entropy_leaf] if bonus else [leaf]
                grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            flat = lambda g, like: (torch.zeros_like(like) if g is None else g).reshape(-1).float().contiguous()  # noqa: E731
            g = flat(grads[0], leaf)
            g_entropy = flat(grads[1], entropy_leaf) if bonus else None
            for s, e in _chunks(n, chunk):
                logits_c = head(s, e)
                dlogits = kernels.row_grad(logits_c, ids[s:e], lse[s:e], g[s:e], temperature, out=logits_c,
                                           **transform, grad_entropy=None if g_entropy is None else g_entropy[s:e],
                                           entropy=entropy[s:e])  # fmt: skip
                backprop_chunk(dlogits, s, e)
                del logits_c, dlogits
            loss = loss.detach()
        else:
            loss, metrics = reference.policy_loss(logps, mask, advantages, old_logps, ref_logps, entropies,
                                                  sampling_logps, is_ratio, **cfg)  # fmt: skip
        metrics["entropy"] = reference._global_masked_mean(entropies, mask_f)
        metrics_out.update(metrics)
        ctx.grads = (grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, grad_b = ctx.grads
        ctx.grads = None  # one backward; free the buffers with it
        scaled = lambda g, dtype: None if g is None else g.mul_(grad_loss).to(dtype)
        grads = tuple(scaled(g, dtype) for g, dtype in zip((grad_h, grad_w, grad_b), ctx.dtypes, strict=True))
        return grads + (None,) * 11


def _fused_reference(hidden, weight, bias, completion_ids, completion_mask, advantages, data, temperature, transform,
                     fp32_head, config):  # fmt: skip
    if fp32_head and hidden.dtype != torch.float32:
        hidden, weight, bias = hidden.float(), weight.float(), None if bias is None else bias.float()
    logits = hidden @ weight.t() if bias is None else hidden @ weight.t() + bias
    return reference.grpo_loss(logits, completion_ids.long(), completion_mask, advantages, *data,
                               temperature=temperature, **transform, **config)  # fmt: skip


def _check_linear(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    _check_float("hidden", hidden)
    _check_float("weight", weight)
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must be [V, H={hidden.shape[-1]}], got shape {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight dtype {weight.dtype} differs from hidden dtype {hidden.dtype}")
    if weight.device != hidden.device:
        raise ValueError(f"weight is on {weight.device}, hidden on {hidden.device}")
    if bias is not None:
        _check_float("bias", bias)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must be [V={weight.shape[0]}], got shape {tuple(bias.shape)}")
        if bias.dtype != hidden.dtype or bias.device != hidden.device:
            raise TypeError(f"bias must be {hidden.dtype} on {hidden.device}, got {bias.dtype} on {bias.device}")


def fused_linear_grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    sampling_logps: torch.Tensor | None = None,
    importance_sampling_ratio: torch.Tensor | None = None,
    *,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    logit_softcap: float | None = None,
    fp32_head: bool = False,
    **config: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO policy loss of the LM head's logits ``hidden @ weight.T + bias``, never holding a [B*T, V] tensor.

    hidden: [B, T, H] bf16/fp16/fp32 (row t predicts completion_ids[:, t]); weight: [V, H] (the LM head; tied
    embeddings work), same dtype and device; bias: [V] or None. logit_scale, logit_softcap: the model's transform
    of the head's output (module docstring). The other arguments and config as in ``grpo_loss``.
    chunk_size: tokens per chunk (default: logits of a chunk <= 256 MiB and <= 1/8 of free memory).
    fp32_head: the logits in float32 from bf16/fp16 operands (lm_head_fp32: float32 accumulation and output, no
    rounding to bf16 before the softmax), so the log-probs are those of an fp32 head; the backward GEMMs take
    d(loss)/d(logits) rounded to the operands' dtype. Off by default (a chunk's logits take twice the bytes).
    Returns (scalar float32 loss, metrics incl. "entropy"); gradients of hidden / weight / bias in their dtypes (dW
    accumulated in float32). The reference backend materialises the logits (it is the specification).
    Raises TypeError / ValueError on bad input as ``grpo_loss``.
    """
    _check_float("hidden", hidden)
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, H], got shape {tuple(hidden.shape)}")
    _check_linear(hidden, weight, bias)
    vocab = weight.shape[0]
    _check_loss_inputs(
        tuple(hidden.shape[:2]), hidden.device, vocab, completion_ids, completion_mask, advantages, old_logps,
        ref_logps, sampling_logps, importance_sampling_ratio,
    )  # fmt: skip
    _check_temperature(temperature)
    transform = _transform(logit_scale, logit_softcap)
    cfg = _loss_config(config, ref_logps is not None)
    data = (old_logps, ref_logps, sampling_logps, _per_sequence(importance_sampling_ratio))
    if not _use_triton(backend, hidden):
        return _fused_reference(hidden, weight, bias, completion_ids, completion_mask, advantages, data, temperature,
                                transform, fp32_head, config)  # fmt: skip
    b, t, h = hidden.shape
    chunk = _chunk_size(b * t, vocab, torch.float32 if fp32_head else hidden.dtype, hidden.device, chunk_size)
    grad_on = torch.is_grad_enabled()
    wants = tuple(grad_on and x is not None and x.requires_grad for x in (hidden, weight, bias))
    metrics: dict[str, float] = {}
    loss = _FusedLinearGRPO.apply(
        hidden.reshape(b * t, h), weight, bias, completion_ids.reshape(-1).to(torch.int64).contiguous(),
        completion_mask, advantages, data, temperature, transform, fp32_head, chunk, cfg, wants, metrics,
    )  # fmt: skip
    return loss, metrics


class _FusedLinearLogprobs(torch.autograd.Function):
    """hidden [N, H], weight [V, H], bias [V] | None -> (logp [N], entropy [N] | None) float32 of the Triton path,
    both differentiable.

    The forward keeps only the per-token lse (and entropy) ([N] float32); the backward recomputes each chunk's
    logits, writes d(loss)/d(logits) for both outputs into them (row_grad) and feeds them into the two matmuls (8NHV
    in all, no [N, V] tensor). For SFT's cross-entropy (-logp of the label) and verl's fused log-probs + entropy."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, temperature, transform, fp32_head, chunk, with_entropy):
        ctx.set_materialize_grads(False)
        kernels = _kernels()
        n = hidden.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        entropy = torch.empty_like(logp) if with_entropy else None
        for s, e in _chunks(n, chunk):
            lse[s:e], logp[s:e], ent = kernels.row_stats(_linear(hidden[s:e], weight, bias, fp32_head), ids[s:e],
                                                         temperature, with_entropy, **transform)  # fmt: skip
            if with_entropy:
                entropy[s:e] = ent
        ctx.save_for_backward(hidden, weight, bias, ids, lse, lse if entropy is None else entropy)
        ctx.options = (temperature, transform, fp32_head, chunk, with_entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, bias, ids, lse, entropy = ctx.saved_tensors
        temperature, transform, fp32_head, chunk, with_entropy = ctx.options
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        none = (None,) * 6
        if (grad_logp is None and grad_entropy is None) or not (want_h or want_w or want_b):
            return None, None, None, *none
        grad_logp = torch.zeros_like(lse) if grad_logp is None else grad_logp.to(torch.float32).contiguous()
        grad_entropy = None if grad_entropy is None else grad_entropy.to(torch.float32).contiguous()
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if want_b else None
        for s, e in _chunks(hidden.shape[0], chunk):
            logits_c = _linear(hidden[s:e], weight, bias, fp32_head)
            dlogits = _kernels().row_grad(
                logits_c, ids[s:e], lse[s:e], grad_logp[s:e], temperature, out=logits_c, **transform,
                grad_entropy=None if grad_entropy is None else grad_entropy[s:e],
                entropy=entropy[s:e] if with_entropy else None,
            )  # fmt: skip
            _linear_backward(dlogits, hidden, weight, s, e, grad_h, grad_w, grad_b)
            del logits_c, dlogits
        to = lambda g, like: None if g is None else g.to(like.dtype)  # noqa: E731
        return grad_h, to(grad_w, weight), to(grad_b, bias), *none


def fused_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    index: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    logit_softcap: float | None = None,
    return_entropy: bool = False,
    backend: str = "auto",
    chunk_size: int | None = None,
    fp32_head: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (and entropies) of softmax(transform(hidden @ weight.T + bias) / temperature) at ``index``.

    For the old-policy and reference-model log-probs, and (with a gradient) SFT's cross-entropy, -logp of the label.
    hidden: [..., H] float; weight: [V, H] same dtype/device;
    bias: [V] or None; index: [...] integer in [0, V); logit_scale, logit_softcap: the model's logit transform.
    Tokens are processed in chunks on every backend, so no [tokens, V] tensor is ever allocated (the reference
    backend keeps each chunk's logits for its backward). fp32_head: the logits in float32 from low-precision operands
    (see fused_linear_grpo_loss). Returns logps [...] float32 (float64 for float64 inputs on the reference backend),
    and entropy [...] of the same dtype when return_entropy. Both are differentiable with respect to hidden, weight
    and bias when grad mode is on and one of them requires grad (the Triton backward recomputes each chunk's logits:
    8NHV in all).
    Raises TypeError / ValueError on bad input.
    """
    _check_float("hidden", hidden)
    if hidden.dim() < 1:
        raise ValueError("hidden must be [..., H], got a 0-d tensor")
    _check_linear(hidden, weight, bias)
    vocab = weight.shape[0]
    _check_index("index", index, tuple(hidden.shape[:-1]), vocab, hidden.device)
    _check_temperature(temperature)
    transform = _transform(logit_scale, logit_softcap)
    use_triton = _use_triton(backend, hidden)
    rows = hidden.reshape(-1, hidden.shape[-1])
    ids = index.reshape(-1).to(torch.int64).contiguous()
    n = rows.shape[0]
    chunk = _chunk_size(n, vocab, torch.float32 if fp32_head else hidden.dtype, hidden.device, chunk_size)
    grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (hidden, weight, bias))
    if grad:
        if use_triton:
            logp, entropy = _FusedLinearLogprobs.apply(rows, weight, bias, ids, temperature, transform, fp32_head,
                                                       chunk, return_entropy)  # fmt: skip
        else:  # the reference, differentiated by autograd chunk by chunk
            logps, entropies = [], []
            for s, e in _chunks(n, chunk):
                logits_c = _linear(rows[s:e], weight, bias, fp32_head)
                logps.append(reference.selective_log_softmax(logits_c, ids[s:e], temperature, **transform))
                if return_entropy:
                    entropies.append(reference.entropy_from_logits(logits_c, temperature, **transform))
            logp, entropy = torch.cat(logps), torch.cat(entropies) if return_entropy else None
        logp = logp.view(index.shape)
        return (logp, entropy.view(index.shape)) if return_entropy else logp
    out_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logp = torch.empty(n, dtype=out_dtype, device=hidden.device)
    entropy = torch.empty_like(logp) if return_entropy else None
    for s, e in _chunks(n, chunk):
        logits_c = _linear(rows[s:e], weight, bias, fp32_head)
        if use_triton:
            _, logp[s:e], ent = _kernels().row_stats(logits_c, ids[s:e], temperature, return_entropy, **transform)
        else:
            logp[s:e] = reference.selective_log_softmax(logits_c, ids[s:e], temperature, **transform)
            ent = reference.entropy_from_logits(logits_c, temperature, **transform) if return_entropy else None
        if return_entropy:
            entropy[s:e] = ent
    logp = logp.view(index.shape)
    return (logp, entropy.view(index.shape)) if return_entropy else logp


# ------------------------------------------------------------------------------------------------------------------
# Module
# ------------------------------------------------------------------------------------------------------------------


class GRPOLoss(nn.Module):
    """The GRPO loss as a module holding its config, for use inside other trainers.

    ``GRPOLoss(loss_type="dapo", beta=0.04, temperature=0.9)(logits, ids, mask, adv, old_logps, ref_logps)`` runs
    ``grpo_loss``; passing ``weight=`` (and ``bias=``) makes the first argument the hidden states [B, T, H] and runs
    ``fused_linear_grpo_loss`` (with fp32_head). logit_scale / logit_softcap: the model's logit transform
    (``r1fast.logit_transform.LogitTransform.from_config(model.config).kwargs()``). The config is validated at
    construction. Returns (loss, metrics).
    """

    def __init__(
        self,
        *,
        backend: str = "auto",
        temperature: float = 1.0,
        logit_scale: float = 1.0,
        logit_softcap: float | None = None,
        chunk_size: int | None = None,
        inplace_backward: bool = False,
        fp32_head: bool = False,
        **config: Any,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        _check_temperature(temperature)
        self.transform = _transform(logit_scale, logit_softcap)
        # beta != 0 needs ref_logps at call time; validate the rest now.
        _loss_config(config, ref_logps_given=True)
        self.backend, self.temperature, self.chunk_size = backend, temperature, chunk_size
        self.inplace_backward, self.fp32_head = inplace_backward, fp32_head
        self.config = dict(config)

    def forward(
        self,
        input: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        advantages: torch.Tensor,
        old_logps: torch.Tensor | None = None,
        ref_logps: torch.Tensor | None = None,
        sampling_logps: torch.Tensor | None = None,
        importance_sampling_ratio: torch.Tensor | None = None,
        *,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        common = dict(backend=self.backend, temperature=self.temperature, **self.transform, **self.config)
        if weight is None:
            if bias is not None:
                raise ValueError("bias given without weight: pass weight= to use the fused LM-head path")
            return grpo_loss(
                input, completion_ids, completion_mask, advantages, old_logps, ref_logps, sampling_logps,
                importance_sampling_ratio, inplace_backward=self.inplace_backward, **common,
            )  # fmt: skip
        return fused_linear_grpo_loss(
            input, weight, completion_ids, completion_mask, advantages, old_logps, ref_logps, sampling_logps,
            importance_sampling_ratio, bias=bias, chunk_size=self.chunk_size, fp32_head=self.fp32_head, **common,
        )  # fmt: skip

    def extra_repr(self) -> str:
        transform = "".join(f", {k}={v}" for k, v in self.transform.items() if v not in (1.0, None))
        return f"backend={self.backend!r}, temperature={self.temperature}{transform}, config={self.config}"
