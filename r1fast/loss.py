"""The GRPO loss, public API: validation, backend dispatch and the autograd Functions around kernels/grpo_loss.py.

How the work is split. The policy loss is a function of per-token log-probs ([B, T], cheap): it is
``r1fast.reference.policy_loss``, called as is, so every loss type, both importance-sampling levels, the KL term and
the metrics are the specification's own code. The [tokens, vocab] work is the Triton row passes:

- logits given (``grpo_loss``): forward = one ``row_stats`` pass (lse, logp, entropy); autograd through the
  reference's policy loss yields g = d(loss)/d(logp) per token; backward = one ``row_grad`` pass writing
  g * (onehot - softmax) / temperature. Three passes over the logits in all (read; read + write).
- fused with the LM head (``fused_linear_grpo_loss``): tokens in chunks, logits_c = H_c @ W^T (+ b). At token-level
  importance sampling each token's loss depends on its own logp only, and the aggregation is linear with weights
  that depend on the mask alone, so g is known as soon as the chunk's logp is: one ``row_loss_grad`` kernel per
  chunk computes lse, logp, entropy, g and overwrites the chunk's logits with d(loss)/d(logits); the gradients are
  formed in the forward (logits 2NHV, dH 2NHV, dW 2NHV = 6NHV) and the backward only scales them. At sequence
  level g needs the whole sequence: when a chunk holds whole sequences (chunk >= T) each chunk's g is known from
  its own logps and one pass does it all (6NHV, g from autograd through the reference's per-token objective on the
  chunk's rows); otherwise a first no-grad pass gets every logp (and lse), then a second pass recomputes each
  chunk's logits and writes the gradients (8NHV). dW is accumulated in float32.

Backends: "auto" = Triton on CUDA tensors of dtype bf16/fp16/fp32, the reference otherwise; "triton" forces the
kernels (CPU tensors need TRITON_INTERPRET=1); "reference" forces r1fast.reference.
"""

from __future__ import annotations

import inspect
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
    )
    return cfg


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


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
    for name, x in (("old_logps", old_logps), ("ref_logps", ref_logps)):
        if x is None:
            continue
        _check_float(name, x)
        if tuple(x.shape) != (b, t):
            raise ValueError(f"{name} must have shape {(b, t)}, got {tuple(x.shape)}")
        if x.device != device:
            raise ValueError(f"{name} is on {x.device}, expected {device}")


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
    """logits [B, T, V] or [N, V] (unit stride along V) -> (logp, entropy or None), float32 of the leading shape."""

    @staticmethod
    def forward(ctx, logits, index, temperature, with_entropy, inplace_backward):
        ctx.set_materialize_grads(False)
        flat_index = index.reshape(-1).to(torch.int64).contiguous()
        lse, logp, entropy = _kernels().row_stats(logits, flat_index, temperature, with_entropy)
        ctx.save_for_backward(logits, flat_index, lse)
        ctx.temperature, ctx.inplace_backward = temperature, inplace_backward
        if entropy is not None:
            ctx.mark_non_differentiable(entropy)
            entropy = entropy.view(index.shape)
        return logp.view(index.shape), entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        if grad_logp is None:
            return None, None, None, None, None
        logits, flat_index, lse = ctx.saved_tensors
        grad_logp = grad_logp.reshape(-1).to(torch.float32).contiguous()
        out = logits if ctx.inplace_backward else None
        dlogits = _kernels().row_grad(logits, flat_index, lse, grad_logp, ctx.temperature, out=out)
        return dlogits, None, None, None, None


def _logps_and_entropy(
    logits: torch.Tensor, index: torch.Tensor, temperature: float, with_entropy: bool, inplace_backward: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    vocab = logits.shape[-1]
    rows = logits if logits.dim() == 3 else logits.reshape(-1, vocab)
    return _SelectiveLogSoftmax.apply(_rowwise(rows), index, temperature, with_entropy, inplace_backward)


def selective_log_softmax(
    logits: torch.Tensor, index: torch.Tensor, temperature: float = 1.0, *, backend: str = "auto"
) -> torch.Tensor:
    """log softmax(logits / temperature) gathered at ``index``, without a [..., V] float32 copy of the logits.

    logits: [..., V] bf16/fp16/fp32 (fp64 on the reference backend), any device; index: [...] integer in [0, V),
    same device. Returns [...] float32 (float64 for float64 logits on the reference backend); differentiable
    (the Triton backward writes d/d(logits) in logits' dtype). Raises TypeError / ValueError on bad input.
    """
    _check_float("logits", logits)
    if logits.dim() < 1:
        raise ValueError("logits must have a vocabulary dimension, got a 0-d tensor")
    _check_index("index", index, tuple(logits.shape[:-1]), logits.shape[-1], logits.device)
    _check_temperature(temperature)
    if not _use_triton(backend, logits):
        return reference.selective_log_softmax(logits, index.long(), temperature)
    logp, _ = _logps_and_entropy(logits, index, temperature, False, False)
    return logp


def grpo_loss(
    logits: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    *,
    backend: str = "auto",
    temperature: float = 1.0,
    inplace_backward: bool = False,
    **config: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO policy loss from logits; equals ``r1fast.reference.grpo_loss``.

    logits: [B, T, V] bf16/fp16/fp32 (fp64 on the reference backend); row t scores completion_ids[:, t]. A view
    such as ``model_logits[:, :-1]`` is read in place. completion_ids: [B, T] integer in [0, V);
    completion_mask: [B, T] (any dtype, 1 = completion token); advantages: [B], [B, 1] or [B, T];
    old_logps, ref_logps: [B, T] float or None (None old = on-policy; ref needed when beta != 0). All on one device.
    config: the reference's options (loss_type, beta, epsilon, epsilon_high, delta, importance_sampling_level,
    max_completion_length, num_items_in_batch, gradient_accumulation_steps, steps_per_generation, num_processes,
    use_bias_correction_kl, sapo_temperature_pos, sapo_temperature_neg).
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
        old_logps, ref_logps,
    )  # fmt: skip
    _check_temperature(temperature)
    cfg = _loss_config(config, ref_logps is not None)
    if not _use_triton(backend, logits):
        return reference.grpo_loss(
            logits, completion_ids.long(), completion_mask, advantages, old_logps, ref_logps,
            temperature=temperature, **config,
        )  # fmt: skip
    logps, entropy = _logps_and_entropy(logits, completion_ids, temperature, True, inplace_backward)
    loss, metrics = reference.policy_loss(logps, completion_mask, advantages, old_logps, ref_logps, **cfg)
    metrics["entropy"] = reference._global_masked_mean(entropy, completion_mask.to(entropy.dtype))
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


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """h @ W^T (+ b): [n, V] in h's dtype (float32 accumulation inside the matmul)."""
    return h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())


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


def _sequence_chunk_grad(
    logps: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    weights: torch.Tensor,
    cfg: dict[str, Any],
    rows: slice,
) -> torch.Tensor:
    """g = d(loss)/d(logp) for the sequences `rows` at sequence-level IS: d(sum weights * per_token_objective)/d(logp)
    over those rows only (the aggregation is linear, with weights [B, T] from the whole mask). logps, mask: [B, T]
    float32 (only `rows` is read); returns float32 [rows * T], contiguous."""
    pick = lambda x: None if x is None else x[rows]  # noqa: E731
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    with torch.enable_grad():
        leaf = logps[rows].detach().requires_grad_()
        per_token_loss, _, _ = reference.per_token_objective(
            leaf, mask[rows], adv[rows].to(leaf.dtype), pick(old_logps), pick(ref_logps),
            importance_sampling_level="sequence", **_token_objective_config(cfg),
        )  # fmt: skip
        (g,) = torch.autograd.grad((per_token_loss * weights[rows]).sum(), leaf)
    return g.reshape(-1).to(torch.float32).contiguous()


class _FusedLinearGRPO(torch.autograd.Function):
    """hidden [N, H], weight [V, H], bias [V] | None -> scalar loss; metrics written into ``metrics_out``.

    The gradients of hidden / weight / bias are computed in the forward (see the module docstring) and scaled by the
    incoming gradient in the backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, mask, advantages, old_logps, ref_logps, temperature, chunk, cfg,
                wants, metrics_out):  # fmt: skip
        kernels = _kernels()
        b, t = mask.shape
        n = hidden.shape[0]
        want_h, want_w, want_b = wants
        any_grad = want_h or want_w or want_b
        token_level = cfg["importance_sampling_level"] == "token"
        mask_f = mask.to(torch.float32)
        adv_tok = (advantages.unsqueeze(1) if advantages.dim() == 1 else advantages).expand(b, t).reshape(-1)
        flat = lambda x: None if x is None else x.reshape(-1)
        old_tok, ref_tok = flat(old_logps), flat(ref_logps)

        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(logp)
        entropy = torch.empty_like(logp)
        grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if want_b else None

        def backprop_chunk(dlogits: torch.Tensor, s: int, e: int) -> None:
            if want_h:
                torch.mm(dlogits, weight, out=grad_h[s:e])
            if want_w:
                _accumulate_dweight(grad_w, dlogits, hidden[s:e])
            if want_b:
                grad_b.add_(dlogits.sum(0, dtype=torch.float32))

        if any_grad and token_level:  # the gradient is known in the forward: one kernel per chunk, no recompute
            weights = _aggregation_weights(mask_f, cfg).reshape(-1).contiguous()
            f32 = lambda x: None if x is None else x.to(torch.float32).contiguous()
            adv_f, old_f, ref_f = f32(adv_tok), f32(old_tok), f32(ref_tok) if cfg["beta"] != 0.0 else None
            objective = _token_objective_config(cfg)
        # Sequence level with whole sequences per chunk: its own single pass below.
        whole_sequences = any_grad and not token_level and chunk >= t
        for s, e in () if whole_sequences else _chunks(n, chunk):
            logits_c = _linear(hidden[s:e], weight, bias)
            if any_grad and token_level:
                sl = slice(s, e)
                lse[sl], logp[sl], entropy[sl] = kernels.row_loss_grad(
                    logits_c, ids[sl], temperature, adv_f[sl], weights[sl], None if old_f is None else old_f[sl],
                    None if ref_f is None else ref_f[sl], **objective,
                )  # fmt: skip
                backprop_chunk(logits_c, s, e)  # logits_c now holds d(loss)/d(logits)
            else:
                lse[s:e], logp[s:e], entropy[s:e] = kernels.row_stats(logits_c, ids[s:e], temperature, True)
            del logits_c

        logps = logp.view(b, t)
        if whole_sequences:
            # Sequence level, chunks of whole sequences: a sequence's g needs only its own logps, so each chunk's
            # gradient is known as soon as its logits are. One pass, 6NHV, as at token level.
            weights = _aggregation_weights(mask_f, cfg)
            rows = chunk // t
            for r in range(0, b, rows):
                s, e = r * t, min(r + rows, b) * t
                logits_c = _linear(hidden[s:e], weight, bias)
                lse[s:e], logp[s:e], entropy[s:e] = kernels.row_stats(logits_c, ids[s:e], temperature, True)
                g_c = _sequence_chunk_grad(logps, mask_f, advantages, old_logps, ref_logps, weights, cfg,
                                           slice(r, r + rows))  # fmt: skip
                backprop_chunk(kernels.row_grad(logits_c, ids[s:e], lse[s:e], g_c, temperature, out=logits_c), s, e)
                del logits_c
            loss, metrics = reference.policy_loss(logps, mask, advantages, old_logps, ref_logps, **cfg)
        elif any_grad and not token_level:  # sequence level, a sequence spans chunks: a second pass (8NHV)
            with torch.enable_grad():
                leaf = logps.detach().requires_grad_()
                loss, metrics = reference.policy_loss(leaf, mask, advantages, old_logps, ref_logps, **cfg)
                (g,) = torch.autograd.grad(loss, leaf)
            g = g.reshape(-1).to(torch.float32).contiguous()
            for s, e in _chunks(n, chunk):
                logits_c = _linear(hidden[s:e], weight, bias)
                backprop_chunk(kernels.row_grad(logits_c, ids[s:e], lse[s:e], g[s:e], temperature, out=logits_c), s, e)
            loss = loss.detach()
        else:
            loss, metrics = reference.policy_loss(logps, mask, advantages, old_logps, ref_logps, **cfg)
        metrics["entropy"] = reference._global_masked_mean(entropy.view(b, t), mask_f)
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
        return grads + (None,) * 10


def _fused_reference(
    hidden, weight, bias, completion_ids, completion_mask, advantages, old_logps, ref_logps, temperature, config
):
    logits = hidden @ weight.t() if bias is None else hidden @ weight.t() + bias
    return reference.grpo_loss(
        logits, completion_ids.long(), completion_mask, advantages, old_logps, ref_logps, temperature=temperature,
        **config,
    )  # fmt: skip


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
    *,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
    temperature: float = 1.0,
    **config: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO policy loss of the LM head's logits ``hidden @ weight.T + bias``, never holding a [B*T, V] tensor.

    hidden: [B, T, H] bf16/fp16/fp32 (row t predicts completion_ids[:, t]); weight: [V, H] (the LM head; tied
    embeddings work), same dtype and device; bias: [V] or None. The other arguments and config as in
    ``grpo_loss``. chunk_size: tokens per chunk (default: logits of a chunk <= 256 MiB and <= 1/8 of free memory).
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
        ref_logps,
    )  # fmt: skip
    _check_temperature(temperature)
    cfg = _loss_config(config, ref_logps is not None)
    if not _use_triton(backend, hidden):
        return _fused_reference(
            hidden, weight, bias, completion_ids, completion_mask, advantages, old_logps, ref_logps, temperature,
            config,
        )  # fmt: skip
    b, t, h = hidden.shape
    chunk = _chunk_size(b * t, vocab, hidden.dtype, hidden.device, chunk_size)
    grad_on = torch.is_grad_enabled()
    wants = tuple(grad_on and x is not None and x.requires_grad for x in (hidden, weight, bias))
    metrics: dict[str, float] = {}
    loss = _FusedLinearGRPO.apply(
        hidden.reshape(b * t, h), weight, bias, completion_ids.reshape(-1).to(torch.int64).contiguous(),
        completion_mask, advantages, old_logps, ref_logps, temperature, chunk, cfg, wants, metrics,
    )  # fmt: skip
    return loss, metrics


@torch.no_grad()
def fused_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    index: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (and entropies) of softmax((hidden @ weight.T + bias) / temperature) at ``index``; no grad.

    For the old-policy and reference-model log-probs. hidden: [..., H] float; weight: [V, H] same dtype/device;
    bias: [V] or None; index: [...] integer in [0, V). Tokens are processed in chunks on every backend, so no
    [tokens, V] tensor is ever allocated. Returns logps [...] float32 (float64 for float64 inputs on the
    reference backend), and entropy [...] of the same dtype when return_entropy.
    Raises TypeError / ValueError on bad input.
    """
    _check_float("hidden", hidden)
    if hidden.dim() < 1:
        raise ValueError("hidden must be [..., H], got a 0-d tensor")
    _check_linear(hidden, weight, bias)
    vocab = weight.shape[0]
    _check_index("index", index, tuple(hidden.shape[:-1]), vocab, hidden.device)
    _check_temperature(temperature)
    use_triton = _use_triton(backend, hidden)
    rows = hidden.reshape(-1, hidden.shape[-1])
    ids = index.reshape(-1).to(torch.int64).contiguous()
    n = rows.shape[0]
    chunk = _chunk_size(n, vocab, hidden.dtype, hidden.device, chunk_size)
    out_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logp = torch.empty(n, dtype=out_dtype, device=hidden.device)
    entropy = torch.empty_like(logp) if return_entropy else None
    for s, e in _chunks(n, chunk):
        logits_c = _linear(rows[s:e], weight, bias)
        if use_triton:
            _, logp[s:e], ent = _kernels().row_stats(logits_c, ids[s:e], temperature, return_entropy)
        else:
            logp[s:e] = reference.selective_log_softmax(logits_c, ids[s:e], temperature)
            ent = reference.entropy_from_logits(logits_c, temperature) if return_entropy else None
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
    ``fused_linear_grpo_loss``. The config is validated at construction. Returns (loss, metrics).
    """

    def __init__(
        self,
        *,
        backend: str = "auto",
        temperature: float = 1.0,
        chunk_size: int | None = None,
        inplace_backward: bool = False,
        **config: Any,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        _check_temperature(temperature)
        # beta != 0 needs ref_logps at call time; validate the rest now.
        _loss_config(config, ref_logps_given=True)
        self.backend, self.temperature, self.chunk_size = backend, temperature, chunk_size
        self.inplace_backward = inplace_backward
        self.config = dict(config)

    def forward(
        self,
        input: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        advantages: torch.Tensor,
        old_logps: torch.Tensor | None = None,
        ref_logps: torch.Tensor | None = None,
        *,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        common = dict(backend=self.backend, temperature=self.temperature, **self.config)
        if weight is None:
            if bias is not None:
                raise ValueError("bias given without weight: pass weight= to use the fused LM-head path")
            return grpo_loss(
                input, completion_ids, completion_mask, advantages, old_logps, ref_logps,
                inplace_backward=self.inplace_backward, **common,
            )  # fmt: skip
        return fused_linear_grpo_loss(
            input, weight, completion_ids, completion_mask, advantages, old_logps, ref_logps, bias=bias,
            chunk_size=self.chunk_size, **common,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, temperature={self.temperature}, config={self.config}"
