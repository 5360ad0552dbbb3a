"""A functional forward of Llama-family decoders over a paged KV cache, reading the HF model's parameters in place.

No weights are copied: every call reads the live parameters of the wrapped model (its own RMSNorm, projection and
MLP modules, and its rotary-embedding module, so every rope scaling the config declares is transformers' own), so
an optimizer step is seen by the next forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1fast import reference

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# auto: Triton kernels on CUDA, the reference elsewhere; triton: always (CPU needs TRITON_INTERPRET=1); reference.
ATTENTION_BACKENDS = ("auto", "triton", "reference")


@dataclass
class Batch:
    """The packed tokens of one forward: S sequences, N tokens.

    input_ids, positions, slot_mapping: [N] int64; block_tables: [S, M] int32; context_lens: [S] int32 (tokens in
    cache after this step); query_start_loc: [S + 1] int32 (sequence s owns tokens query_start_loc[s]:[s + 1]).
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    query_start_loc: torch.Tensor


def _kernel_head_dims() -> tuple[int, ...]:
    from r1fast.kernels.paged_attention import SUPPORTED_HEAD_DIMS  # imports triton: only on CUDA

    return SUPPORTED_HEAD_DIMS


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class ModelRunner:
    """Runs the decoder stack of `model` on packed tokens, storing K/V into per-layer paged caches."""

    def __init__(self, model: torch.nn.Module, attention_backend: str = "auto") -> None:
        if attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {attention_backend!r}")
        self.attention_backend = attention_backend
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model type {model_type!r}; the sampler supports {SUPPORTED_MODEL_TYPES}")
        if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True) and (
            model_type == "mistral"
        ):
            raise ValueError("Mistral configs with a sliding window are not supported yet (set sliding_window=None)")
        self.model = model
        self.config = config
        self.num_layers = config.num_hidden_layers
        self.num_kv_heads = config.num_key_value_heads
        self.num_heads = config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.k_caches: list[torch.Tensor] = []
        self.v_caches: list[torch.Tensor] = []

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def bytes_per_block(self, block_size: int) -> int:
        element = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.num_layers * block_size * self.num_kv_heads * self.head_dim * element

    def allocate(self, num_blocks: int, block_size: int) -> None:
        shape = (num_blocks, block_size, self.num_kv_heads, self.head_dim)
        self.k_caches = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]
        self.v_caches = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]

    def free(self) -> None:
        self.k_caches, self.v_caches = [], []

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: block dst gets block src's K/V in every layer."""
        if not pairs:
            return
        src = torch.tensor([s for s, _ in pairs], device=self.device)
        dst = torch.tensor([d for _, d in pairs], device=self.device)
        for cache in (*self.k_caches, *self.v_caches):
            cache[dst] = cache[src]

    def _attention(self, q, k_cache, v_cache, batch: Batch, scale: float) -> torch.Tensor:
        """On CUDA the Triton paged-attention kernels (decode: one query per sequence); elsewhere the reference."""
        use_triton = self.attention_backend == "triton" or (
            self.attention_backend == "auto" and q.is_cuda and self.head_dim in _kernel_head_dims()
        )
        if use_triton:
            from r1fast.kernels import paged_attention as kernels

            if q.shape[0] == batch.context_lens.shape[0]:  # one query per sequence: its last position
                return kernels.paged_attention_decode(
                    q, k_cache, v_cache, batch.block_tables, batch.context_lens, scale
                )
            return kernels.paged_attention_prefill(
                q, k_cache, v_cache, batch.block_tables, batch.context_lens, batch.query_start_loc, scale
            )
        return reference.paged_attention(
            q, k_cache, v_cache, batch.block_tables, batch.context_lens, batch.query_start_loc, scale
        )

    @torch.no_grad()
    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits at the last token of each sequence: [S, V] float32."""
        backbone = self.model.model
        hidden = backbone.embed_tokens(batch.input_ids)[None]  # [1, N, H]: HF modules expect a batch dim
        cos, sin = backbone.rotary_emb(hidden, batch.positions[None])
        cos, sin = cos[0, :, None, :], sin[0, :, None, :]  # [N, 1, D]
        n = batch.input_ids.shape[0]
        for layer, k_cache, v_cache in zip(backbone.layers, self.k_caches, self.v_caches, strict=True):
            attn = layer.self_attn
            h = layer.input_layernorm(hidden)[0]
            q = attn.q_proj(h).view(n, -1, self.head_dim)
            k = attn.k_proj(h).view(n, -1, self.head_dim)
            v = attn.v_proj(h).view(n, -1, self.head_dim)
            if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over the head dim before rotary
                q, k = attn.q_norm(q), attn.k_norm(k)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            k_cache.view(-1, self.num_kv_heads, self.head_dim)[batch.slot_mapping] = k.to(k_cache.dtype)
            v_cache.view(-1, self.num_kv_heads, self.head_dim)[batch.slot_mapping] = v.to(v_cache.dtype)
            out = self._attention(q, k_cache, v_cache, batch, attn.scaling)
            hidden = hidden + attn.o_proj(out.reshape(1, n, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        last = batch.query_start_loc[1:].long() - 1
        hidden = backbone.norm(hidden[0, last])
        return self.model.get_output_embeddings()(hidden).float()
