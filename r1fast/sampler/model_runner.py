"""A functional forward of Llama-family decoders over a paged KV cache, reading the HF model's parameters in place.

No weights are copied: every call runs the live modules of the wrapped model (its embedding, RMSNorms, projections,
q/k norms and MLPs), so an in-place optimizer step is seen by the next forward. Only rotary embeddings are computed
here, as cos/sin tables from transformers' own rope-init functions (ROPE_INIT_FUNCTIONS), so that the model's
rotary module, which mutates its buffers for dynamic rope, is never called.

Decode runs K steps per host call (decode_steps): each step's forward, its sampling from the rows' device-resident
state (r1fast.sampler.sampling.SamplingState) and the next step's inputs stay on the device; the host reads back one
[S, K] chunk of tokens. On CUDA with cuda_graphs=True that chunk is one replay of a CUDA graph captured per
(batch-size bucket, K, sampling flags) over the same code. A graph holds the addresses of the parameters and of the
KV pool: in-place updates of the parameters are seen, but replacing a parameter tensor (or moving the model) is
detected at the next generate() and the graphs are captured again. With the sampler's async scheduling, the next
chunk is staged into the same buffers before the host has read this one: its copies are queued on the stream after
this chunk's replay and read-back copies, so stream order keeps the chunks apart without double buffers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from r1fast.logit_transform import LogitTransform
from r1fast.loss import lm_head_fp32
from r1fast.sampler.attention import Batch, attention, use_triton
from r1fast.sampler.sampling import SamplingState, counter_uniform, sample

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")


def check_model(model: torch.nn.Module, max_model_len: int):
    """The model's config, after checking that the functional forward computes what the model computes.

    Raises ValueError for an unsupported model type or rope type, a sliding window shorter than max_model_len, or
    a logit transform r1fast does not implement (r1fast.logit_transform).
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"unsupported model type {model_type!r}; the sampler supports {SUPPORTED_MODEL_TYPES}")
    window = getattr(config, "sliding_window", None)
    sliding = (model_type == "mistral" or getattr(config, "use_sliding_window", False)
               or "sliding_attention" in (getattr(config, "layer_types", None) or ()))  # fmt: skip
    if window is not None and sliding and max_model_len > window:
        raise ValueError(f"{model_type} attends over a sliding window of {window} tokens, which the sampler does not "
                         f"implement: use max_model_len <= {window}, got {max_model_len}")  # fmt: skip
    rope_type = rope_parameters(config).get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"unsupported rope type {rope_type!r}; the sampler supports {SUPPORTED_ROPE_TYPES}")
    if rope_parameters(config).get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("partial rotary embeddings (partial_rotary_factor != 1) are not supported")
    LogitTransform.from_config(config)
    return config


def rope_parameters(config) -> dict:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if "rope_type" not in params and "type" in params:  # the older spelling
        params = {**params, "rope_type": params["type"]}
    return params


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rotary:
    """cos/sin of every position < max_len as [max_len, D] tables in the model dtype, computed as transformers does.

    Dynamic NTK rope depends on the sequence length L: positions of a sequence whose context exceeds the config's
    max_position_embeddings use the frequencies for L (what HF's rotary module uses when it generates that sequence
    alone), computed per forward.
    """

    def __init__(self, model: torch.nn.Module, max_len: int, device: torch.device, dtype: torch.dtype) -> None:
        config = model.config
        self.config = config
        self.rope_type = rope_parameters(config).get("rope_type", "default")
        if self.rope_type == "default":
            self.init_fn = type(model.model.rotary_emb).compute_default_rope_parameters
        else:
            self.init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        self.device, self.dtype = device, dtype
        self.original_max = config.max_position_embeddings
        inv_freq, scaling = self.init_fn(config, device=device)
        self.cos, self.sin = self._cos_sin(torch.arange(max_len, device=device), inv_freq, scaling)

    @property
    def is_dynamic(self) -> bool:
        """Whether some sequence may need frequencies other than the tables' (dynamic rope past the original length)."""
        return self.rope_type == "dynamic" and self.cos.shape[0] > self.original_max

    def _cos_sin(self, positions: torch.Tensor, inv_freq: torch.Tensor, scaling: float):
        freqs = positions[:, None].float() * inv_freq.to(device=positions.device, dtype=torch.float)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * scaling).to(self.dtype), (emb.sin() * scaling).to(self.dtype)

    def __call__(self, batch: Batch, seq_lens: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin: [N, 1, D] for the batch's tokens. seq_lens: the host copy of batch.context_lens (dynamic rope)."""
        cos, sin = self.cos[batch.positions], self.sin[batch.positions]
        if self.is_dynamic and seq_lens is not None and max(seq_lens) > self.original_max:
            starts = batch.query_start_loc.tolist()
            for s, length in enumerate(seq_lens):
                if length > self.original_max:
                    inv_freq, scaling = self.init_fn(self.config, device=self.device, seq_len=length)
                    rows = slice(starts[s], starts[s + 1])
                    cos[rows], sin[rows] = self._cos_sin(batch.positions[rows], inv_freq, scaling)
        return cos[:, None, :], sin[:, None, :]


@dataclass
class DecodeInputs:
    """The device inputs of a chunk of decode steps for S rows: input_ids [S] int64 (each row's last token, whose
    K/V the first step computes), start [S] int64 (its position), block_tables [S, M] int32 (blocks for every
    position the chunk writes), live [S] bool or None (False: a padding row of a CUDA-graph bucket, which writes and
    attends to nothing)."""

    input_ids: torch.Tensor
    start: torch.Tensor
    block_tables: torch.Tensor
    live: torch.Tensor | None = None

    def rows(self, b: int) -> DecodeInputs:
        """Views of the first b rows (a CUDA-graph bucket of max-size buffers)."""
        return DecodeInputs(*(None if t is None else t[:b] for t in (self.input_ids, self.start, self.block_tables,
                                                                      self.live)))  # fmt: skip


class WeightStreamer(Protocol):
    """Hands the forward its decoder layers one at a time, each with whole weights only while the forward holds it
    (r1fast.trainer.fsdp.LayerStreamer: a sharded model's layers gathered with a one-layer prefetch)."""

    reserved_bytes: int  # device memory the streamed layers take at most; the KV pool leaves it free

    def layers_gathered(self) -> Iterator[torch.nn.Module]: ...


class ModelRunner:
    """Runs the decoder stack of `model` on packed tokens, storing K/V into per-layer paged caches.

    The caches: per layer, k_cache and v_cache [num_blocks, block_size, H_kv, D] in the model dtype. weight_streamer:
    None (the layers' weights are in place), or a WeightStreamer that every forward takes its layers from (set by
    r1fast.trainer.fsdp.rollout_weights for a sharded model; CUDA graphs are off while it is set).
    """

    def __init__(self, model: torch.nn.Module, *, max_model_len: int, attention_backend: str = "auto",
                 cuda_graphs: bool = False, max_num_seqs: int = 256, fp32_head: bool = False) -> None:  # fmt: skip
        self.config = check_model(model, max_model_len)
        self.fp32_head = fp32_head
        # The model's transform of its head's output: sampled from, and reported in the log-probs, as the trainer's
        # loss computes them (r1fast.loss takes the same transform).
        self.logit_transform = LogitTransform.from_config(self.config)
        use_triton(attention_backend, torch.device("cpu"), 0)  # validates the name
        self.model = model
        self.attention_backend = attention_backend
        self.max_model_len = max_model_len
        self.cuda_graphs = cuda_graphs
        self.max_num_seqs = max_num_seqs
        config = self.config
        self.num_layers = config.num_hidden_layers
        self.num_kv_heads = config.num_key_value_heads
        self.num_heads = config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.k_caches: list[torch.Tensor] = []
        self.v_caches: list[torch.Tensor] = []
        self.block_size = 0
        self._rotary: Rotary | None = None
        self._graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self._graph_outputs: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._graph_inputs: DecodeInputs | None = None
        self._graph_state: SamplingState | None = None
        self._graph_pool = None
        self._graph_key: tuple | None = None
        self.num_graph_replays = 0
        self.weight_streamer: WeightStreamer | None = None

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def triton_sampling(self) -> bool:
        """Whether the next token is sampled by the Triton kernel: where the attention backend runs Triton."""
        return self.attention_backend == "triton" or (self.attention_backend == "auto" and self.device.type == "cuda")

    @property
    def reserved_bytes(self) -> int:
        """Device bytes the forward still allocates for weights (a weight streamer's layers), to keep free of the KV
        pool."""
        return 0 if self.weight_streamer is None else self.weight_streamer.reserved_bytes

    def bytes_per_block(self, block_size: int) -> int:
        element = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.num_layers * block_size * self.num_kv_heads * self.head_dim * element

    def allocate(self, num_blocks: int, block_size: int) -> None:
        """KV caches of num_blocks blocks, plus one scratch block at the end that no sequence owns: the PyTorch
        path's writes to slot -1 (steps past a row's end, which write nothing) land in its last slot."""
        shape = (num_blocks + 1, block_size, self.num_kv_heads, self.head_dim)
        self.k_caches = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]
        self.v_caches = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers)]
        self.block_size = block_size
        self._drop_graphs()

    def free(self) -> None:
        self._drop_graphs()
        self.k_caches, self.v_caches = [], []

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: block dst gets block src's K/V in every layer."""
        if not pairs:
            return
        src = torch.tensor([s for s, _ in pairs], device=self.device)
        dst = torch.tensor([d for _, d in pairs], device=self.device)
        for cache in (*self.k_caches, *self.v_caches):
            cache[dst] = cache[src]

    def rotary(self) -> Rotary:
        r = self._rotary
        if r is None or r.device != self.device or r.dtype != self.dtype:
            self._rotary = r = Rotary(self.model, self.max_model_len, self.device, self.dtype)
        return r

    # -- the forward ------------------------------------------------------------------------------------------

    def _run(self, batch: Batch, seq_lens: list[int] | None) -> torch.Tensor:
        """Logits at the last query of each sequence, transformed as the model does: [S, V] float32. No host sync
        when seq_lens is None."""
        backbone = self.model.model
        cos, sin = self.rotary()(batch, seq_lens)
        hidden = backbone.embed_tokens(batch.input_ids)  # [N, hidden]
        n = hidden.shape[0]
        layers = backbone.layers if self.weight_streamer is None else self.weight_streamer.layers_gathered()
        for layer, k_cache, v_cache in zip(layers, self.k_caches, self.v_caches, strict=True):
            attn = layer.self_attn
            h = layer.input_layernorm(hidden)
            q = attn.q_proj(h).view(n, -1, self.head_dim)
            k = attn.k_proj(h).view(n, -1, self.head_dim)
            v = attn.v_proj(h).view(n, -1, self.head_dim)
            if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over the head dim before rotary
                q, k = attn.q_norm(q), attn.k_norm(k)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            out = attention(q, k, v, k_cache, v_cache, batch, attn.scaling, self.attention_backend)
            hidden = hidden + attn.o_proj(out.reshape(n, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        if not batch.decode:
            hidden = hidden[batch.query_start_loc[1:].long() - 1]
        return self.head(backbone.norm(hidden))

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head's logits of final hidden states [S, H] after the model's logit transform: [S, V] float32.
        fp32_head: computed in float32 from the low-precision weights (r1fast.loss.lm_head_fp32), as the trainer's
        loss computes them with fp32_head, instead of rounded to the model dtype."""
        lm_head = self.model.get_output_embeddings()
        if self.fp32_head and hidden.dtype != torch.float32:
            logits = lm_head_fp32(hidden, lm_head.weight, lm_head.bias)
        else:
            logits = lm_head(hidden).float()
        return logits if self.logit_transform.is_identity else self.logit_transform.apply(logits)

    @torch.no_grad()
    def forward(self, batch: Batch, seq_lens: list[int]) -> torch.Tensor:
        """Logits at the last token of each sequence, after the model's logit transform: [S, V] float32.
        seq_lens: batch.context_lens on the host."""
        return self._run(batch, seq_lens)

    # -- multi-step decode ------------------------------------------------------------------------------------

    def _decode_steps(self, inputs: DecodeInputs, state: SamplingState, steps: int, max_context_len: int,
                      seq_lens: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """`steps` decode steps on the device, each sampling the next step's input (no host reads: the code a CUDA
        graph captures). seq_lens: the rows' host lengths (dynamic rope only). Returns tokens, logprobs [S, steps].

        A row's steps past its last token (state.max_length: it ends inside the chunk) write nothing (slot -1) and
        recompute its last position, so that they read no block past its table; their tokens are the caller's to
        drop."""
        s, size, device = inputs.input_ids.shape[0], self.block_size, inputs.input_ids.device
        unbounded = inputs.start[None, :] + torch.arange(steps, device=device)[:, None]  # [K, S]
        last = (state.max_length - 2).clamp(min=0)  # the position whose K/V samples a row's last token
        positions = torch.minimum(unbounded, last)
        pages = inputs.block_tables.long().gather(1, (positions // size).t()).t().contiguous()  # kernels read rows
        slots = (pages * size + positions % size).masked_fill(unbounded > last, -1)
        context = (positions + 1).to(torch.int32)
        if inputs.live is not None:
            slots = slots.masked_fill(~inputs.live, -1)
            context = context.masked_fill(~inputs.live, 0)
        starts = torch.arange(s + 1, dtype=torch.int32, device=device)
        kernel = self.triton_sampling
        # The CPU draw's uniforms of every step at once: keyed by (seed, position), so known before the chunk runs.
        draws = state.position[:, None] + torch.arange(steps, device=device)
        uniforms = None if kernel else counter_uniform(state.seed[:, None], draws)
        ids, tokens, logprobs = inputs.input_ids, [], []
        for k in range(steps):
            batch = Batch(input_ids=ids, positions=positions[k], slot_mapping=slots[k],
                          block_tables=inputs.block_tables, context_lens=context[k], query_start_loc=starts,
                          max_query_len=1, max_context_len=max_context_len, fresh=False, decode=True)  # fmt: skip
            token, logprob = sample(self._run(batch, None if seq_lens is None else seq_lens + k), state, kernel=kernel,
                                    uniform=None if uniforms is None else uniforms[:, k])  # fmt: skip
            state.record(token)
            tokens.append(token)
            logprobs.append(logprob)
            ids = token
        return torch.stack(tokens, 1), torch.stack(logprobs, 1)

    @torch.no_grad()
    def decode_steps(self, inputs: DecodeInputs, state: SamplingState, steps: int, seq_lens: np.ndarray):
        """`steps` decode steps of S rows, sampled from their state (advanced in place: positions and seen sets).

        inputs: see DecodeInputs (blocks reserved for all `steps` positions); seq_lens: [S] the rows' lengths on the
        host. Every row runs every step (a row that stops early is the caller's to cut). Returns tokens [S, steps]
        int64 and logprobs [S, steps] float32 on the device. On CUDA with cuda_graphs, one graph replay.
        """
        s = inputs.input_ids.shape[0]
        if self._graphs_usable() and s <= self.max_num_seqs:
            return self._replay(inputs, state, steps)
        dynamic = self.rotary().is_dynamic
        return self._decode_steps(inputs, state, steps, int(seq_lens.max()) + steps - 1,
                                  seq_lens if dynamic else None)  # fmt: skip

    # -- CUDA graphs for decode -------------------------------------------------------------------------------

    def _graphs_usable(self) -> bool:
        # A weight streamer gathers the layers with collectives, which a CUDA graph cannot capture.
        return (self.cuda_graphs and self.weight_streamer is None and self.device.type == "cuda"
                and self.triton_sampling and not self.rotary().is_dynamic
                and use_triton(self.attention_backend, self.device, self.head_dim))  # fmt: skip

    def buckets(self) -> list[int]:
        """Decode batch sizes with captured graphs; a batch runs in the smallest bucket that holds it."""
        sizes = [b for b in (1, 2, 4, 8) if b < self.max_num_seqs] + list(range(16, self.max_num_seqs, 16))
        return sorted({*sizes, self.max_num_seqs})

    def _key(self) -> tuple:
        params = tuple(p.data_ptr() for p in self.model.parameters())
        return params, tuple(c.data_ptr() for c in self.k_caches + self.v_caches)

    def check_graphs(self) -> None:
        """Drop the captured graphs if a parameter or cache tensor was replaced since capture (call once per
        generate(): it walks the parameters)."""
        if self._graphs and self._graph_key != self._key():
            self._drop_graphs()

    def _drop_graphs(self) -> None:
        self._graphs, self._graph_outputs, self._graph_key = {}, {}, None
        self._graph_inputs = self._graph_state = self._graph_pool = None

    def static_inputs(self, state: SamplingState) -> tuple[DecodeInputs, SamplingState]:
        """Max-size buffers that captured graphs read (bucket b reads the first b rows): the chunk inputs, and a
        state with state's flags."""
        size, device = self.max_num_seqs, self.device
        width = -(-self.max_model_len // self.block_size)
        inputs = DecodeInputs(input_ids=torch.zeros(size, dtype=torch.int64, device=device),
                              start=torch.zeros(size, dtype=torch.int64, device=device),
                              block_tables=torch.zeros(size, width, dtype=torch.int32, device=device),
                              live=torch.zeros(size, dtype=torch.bool, device=device))  # fmt: skip
        pad = torch.zeros(size, dtype=torch.int64, device=device)
        pad[: state.seed.shape[0]] = torch.arange(state.seed.shape[0], device=device)
        return inputs, state.take(pad)

    def stage(self, inputs: DecodeInputs, state: SamplingState, static: DecodeInputs, static_state: SamplingState
              ) -> int:  # fmt: skip
        """Copy S <= max_num_seqs rows into the static buffers and pad them to their bucket b (returned)."""
        s = inputs.input_ids.shape[0]
        b = next(b for b in self.buckets() if b >= s)
        static.input_ids[:s].copy_(inputs.input_ids)
        static.start[:s].copy_(inputs.start)
        static.start[s:b].zero_()
        static.live[:s].fill_(True)
        static.live[s:b].fill_(False)
        static.block_tables[:s, : inputs.block_tables.shape[1]].copy_(inputs.block_tables)
        static.block_tables[s:b].zero_()
        for name in SamplingState.ROWS:
            source = getattr(state, name)
            if source is not None:
                getattr(static_state, name)[:s].copy_(source)
        return b

    def _replay(self, inputs: DecodeInputs, state: SamplingState, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        device, s = self.device, inputs.input_ids.shape[0]
        if self._graph_state is None or self._graph_state.flags() != state.flags():
            self._graph_inputs, self._graph_state = self.static_inputs(state)
            self._graphs, self._graph_outputs = {}, {}
        static, static_state = self._graph_inputs, self._graph_state
        b = self.stage(inputs, state, static, static_state)
        key = (b, steps)
        if key not in self._graphs:
            view = static_state.rows(b)
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm-up: compiles the kernels outside the capture
                self._decode_steps(static.rows(b), view, steps, self.max_model_len, None)
            torch.cuda.current_stream(device).wait_stream(stream)
            self.stage(inputs, state, static, static_state)  # the warm-up advanced the staged state
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._graph_pool):
                self._graph_outputs[key] = self._decode_steps(static.rows(b), view, steps, self.max_model_len, None)
            self._graphs[key] = graph
            self._graph_key = self._key()
        self._graphs[key].replay()
        self.num_graph_replays += 1
        state.position.copy_(static_state.position[:s])
        if state.seen is not None:
            state.seen.copy_(static_state.seen[:s])
        tokens, logprobs = self._graph_outputs[key]
        return tokens[:s].clone(), logprobs[:s].clone()
