"""The Sampler: G completions per prompt on the trainer's own weights, over a paged KV cache."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from r1fast.sampler.attention import Batch
from r1fast.sampler.block_manager import BlockManager
from r1fast.sampler.model_runner import ModelRunner, check_model
from r1fast.sampler.sampling import SEED_BITS, SamplingParams, mix_seed, sample_next
from r1fast.sampler.scheduler import Scheduler
from r1fast.sampler.sequence import Sequence

CPU_KV_CACHE_BYTES = 64 << 20
GPU_MEMORY_FRACTION = 0.5  # of the free device memory when kv_cache_memory is not given


@dataclass
class Completion:
    """One completion: token_ids and logprobs (one per token, float; empty if not asked), why it ended ("stop" or
    "length"), the index of its prompt and its index within the group."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    prompt_index: int
    index: int


@dataclass
class Group:
    """The n completions of one prompt."""

    prompt_index: int
    prompt_token_ids: list[int]
    completions: list[Completion]


class Sampler:
    """Generates GRPO groups with a paged KV cache, reading the wrapped model's parameters in place.

    model: a Hugging Face causal LM of type llama, mistral, qwen2 or qwen3 (a sliding window only if max_model_len
    fits in it; rope types default, linear, dynamic, yarn, llama3). tokenizer: needed only for stop strings.
    block_size: tokens per KV block. kv_cache_memory: bytes for the KV pool (default: half the free GPU memory, or
    64 MiB on CPU). max_num_seqs: sequences decoded together. max_model_len: prompt + completion bound (default: the
    config's max_position_embeddings). cuda_graphs: on CUDA, replay captured CUDA graphs for decode steps (batch
    sizes bucketed; needs the Triton attention path). attention_backend: see r1fast.sampler.attention ("auto":
    Triton kernels on CUDA, vectorised PyTorch elsewhere; "triton", "torch", "reference"). prefix_caching: share
    the K/V of full blocks between prompts with a common prefix within one generate() call. fp32_head: the last
    projection in float32 from low-precision weights (sampling and log-probs from an fp32 head, as the loss's
    fp32_head). Raises ValueError for an unsupported model or a meaningless setting.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        tokenizer=None,
        block_size: int = 16,
        kv_cache_memory: int | None = None,
        max_num_seqs: int = 256,
        max_model_len: int | None = None,
        cuda_graphs: bool = True,
        attention_backend: str = "auto",
        prefix_caching: bool = True,
        fp32_head: bool = False,
    ) -> None:
        if not (isinstance(block_size, int) and block_size >= 1):
            raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
        if not (isinstance(max_num_seqs, int) and max_num_seqs >= 1):
            raise ValueError(f"max_num_seqs must be an int >= 1, got {max_num_seqs!r}")
        config = getattr(model, "config", None)
        max_model_len = max_model_len or getattr(config, "max_position_embeddings", None)
        if not (isinstance(max_model_len, int) and max_model_len >= 2):
            raise ValueError(f"max_model_len must be an int >= 2, got {max_model_len!r}")
        check_model(model, max_model_len)
        self.runner = ModelRunner(model, max_model_len=max_model_len, attention_backend=attention_backend,
                                  cuda_graphs=cuda_graphs, max_num_seqs=max_num_seqs, fp32_head=fp32_head)  # fmt: skip
        if kv_cache_memory is not None and kv_cache_memory < self.runner.bytes_per_block(block_size):
            raise ValueError(
                f"kv_cache_memory={kv_cache_memory} bytes is less than one KV block "
                f"({self.runner.bytes_per_block(block_size)} bytes)"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.kv_cache_memory = kv_cache_memory
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.prefix_caching = prefix_caching
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = config.eos_token_id if eos is None else eos
        self.eos_token_ids = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        self.num_blocks = 0  # of the allocated pool; 0 when freed
        self.block_manager: BlockManager | None = None
        self.last_scheduler: Scheduler | None = None
        self._seq_ids = itertools.count()

    # -- the KV pool ------------------------------------------------------------------------------------------

    def _pool_blocks(self) -> int:
        memory = self.kv_cache_memory
        if memory is None:
            device = self.runner.device
            memory = (
                int(torch.cuda.mem_get_info(device)[0] * GPU_MEMORY_FRACTION)
                if device.type == "cuda"
                else CPU_KV_CACHE_BYTES
            )
        return max(1, memory // self.runner.bytes_per_block(self.block_size))

    def _ensure_pool(self) -> None:
        if not self.num_blocks:
            self.num_blocks = self._pool_blocks()
            self.runner.allocate(self.num_blocks, self.block_size)

    def free(self) -> None:
        """Release the KV pool (e.g. before the training step); the next generate() allocates it again."""
        self.runner.free()
        self.num_blocks = 0
        self.block_manager = None
        if self.runner.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- generation -------------------------------------------------------------------------------------------

    def _check_prompts(self, prompts: list[list[int]], params: SamplingParams) -> None:
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need the Sampler's tokenizer")
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError(f"prompts must be a non-empty list of token-id lists, got {prompts!r:.80}")
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, (str, bytes)) or not hasattr(prompt, "__len__"):
                raise TypeError(f"prompt {i} must be a list of token ids, got {type(prompt).__name__}")
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty")
            if len(prompt) >= self.max_model_len:
                raise ValueError(
                    f"prompt {i} has {len(prompt)} tokens, max_model_len={self.max_model_len}: no room to generate"
                )
            if not all(isinstance(t, int) for t in prompt):
                raise TypeError(f"prompt {i} must hold ints (token ids)")
            if min(prompt) < 0 or max(prompt) >= self.vocab_size:
                raise ValueError(f"prompt {i} holds a token id outside [0, {self.vocab_size})")

    @staticmethod
    def _base_seed(params: SamplingParams) -> int:
        """The seed every completion's seed derives from: params.seed, or one draw of torch's CPU generator."""
        if params.seed is not None:
            return params.seed
        return int(torch.randint(0, (1 << SEED_BITS) - 1, (), dtype=torch.int64))

    def _batch(self, seqs: list[Sequence]) -> Batch:
        """The packed tokens of one forward (see Batch), built on the host with numpy: a decode step of hundreds of
        sequences costs a few hundred microseconds of Python, then one host-to-device copy per tensor."""
        size = self.block_size
        starts_host = np.fromiter((s.num_cached for s in seqs), np.int64, count=len(seqs))
        lengths = np.fromiter((len(s) for s in seqs), np.int64, count=len(seqs))
        counts = lengths - starts_host
        cu = np.zeros(len(seqs) + 1, np.int64)
        np.cumsum(counts, out=cu[1:])
        n = int(cu[-1])
        ids = np.fromiter(itertools.chain.from_iterable(s.token_ids[s.num_cached :] for s in seqs), np.int64, count=n)
        rows = np.repeat(np.arange(len(seqs)), counts)
        positions = np.arange(n, dtype=np.int64) - cu[:-1][rows] + starts_host[rows]
        width = max(len(s.block_table) for s in seqs)
        tables = np.zeros((len(seqs), width), np.int32)
        for row, seq in enumerate(seqs):
            tables[row, : len(seq.block_table)] = seq.block_table
        slots = tables[rows, positions // size].astype(np.int64) * size + positions % size
        device = self.runner.device
        to = lambda x: torch.from_numpy(x).to(device, non_blocking=True)  # noqa: E731
        return Batch(
            input_ids=to(ids),
            positions=to(positions),
            slot_mapping=to(slots),
            block_tables=to(tables),
            context_lens=to(lengths.astype(np.int32)),
            query_start_loc=to(cu.astype(np.int32)),
            max_query_len=int(counts.max()),
            max_context_len=int(lengths.max()),
            fresh=not starts_host.any(),
            decode=n == len(seqs),
        )

    def _stop_ids(self, params: SamplingParams) -> frozenset[int]:
        """The token ids that end a completion under params (after min_tokens)."""
        return frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else frozenset(self.eos_token_ids))

    def _finish_reason(self, seq: Sequence, stop_ids: frozenset[int]) -> str | None:
        params, generated = seq.params, len(seq.token_ids) - seq.num_prompt_tokens
        if generated >= params.min_tokens:
            if seq.token_ids[-1] in stop_ids:
                return "stop"
            if params.stop:
                # A stop string of c characters lies within the last c tokens (a token decodes to >= 1 character,
                # plus a few tokens of slack for pieces of one multi-byte character).
                window = max(len(s) for s in params.stop) + 4
                text = self.tokenizer.decode(seq.completion_ids[-window:])
                if any(s in text for s in params.stop):
                    return "stop"
        if generated >= params.max_tokens or len(seq.token_ids) >= self.max_model_len:
            return "length"
        return None

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Group]:
        """params.n completions of every prompt. prompts: token-id lists (non-empty, < max_model_len tokens).

        Returns one Group per prompt, in order, each with its n completions in order. Every call runs on the
        model's current parameters. Raises TypeError/ValueError on bad input, and ValueError when a single sequence
        cannot fit in the whole KV pool.
        """
        self._check_prompts(prompts, params)
        self._ensure_pool()
        self.runner.check_graphs()
        # A fresh block manager per call: the prefix cache must not outlive the weights it was computed with.
        bm = self.block_manager = BlockManager(self.num_blocks, self.block_size, self.prefix_caching)
        scheduler = Scheduler(bm, self.max_num_seqs, max_num_batched_tokens=max(8192, self.max_model_len))
        self.last_scheduler = scheduler
        base_seed = self._base_seed(params)
        for index, prompt in enumerate(prompts):
            seq = Sequence(next(self._seq_ids), index, list(prompt), len(prompt), params,
                           mix_seed(base_seed, index, 0), fork=params.n)  # fmt: skip
            scheduler.add(seq)
        finished: list[Sequence] = []
        stop_ids = self._stop_ids(params)
        while scheduler.has_work():
            seqs = scheduler.schedule()
            if not seqs:  # every running sequence was preempted to make room: the next step recomputes them
                continue
            self.runner.copy_blocks(bm.pending_copies)
            bm.pending_copies.clear()
            logits = self.runner.forward(self._batch(seqs), [len(s.token_ids) for s in seqs])
            rows: list[Sequence] = []
            row_of: list[int] = []
            for row, seq in enumerate(seqs):
                seq.num_cached = len(seq)
                family = [seq]
                if seq.fork > 1:  # the prompt is in cache: its children share every block of it
                    for child_index in range(1, seq.fork):
                        child = Sequence(next(self._seq_ids), seq.prompt_index, list(seq.token_ids),
                                         seq.num_prompt_tokens, params,
                                         mix_seed(base_seed, seq.prompt_index, child_index),
                                         child_index=child_index, status=seq.status)  # fmt: skip
                        bm.fork(seq, child)
                        family.append(child)
                    scheduler.running.extend(family[1:])
                    seq.fork = 1
                rows.extend(family)
                row_of.extend([row] * len(family))
            if row_of != list(range(len(seqs))):
                logits = logits[row_of]
            tokens, logps = sample_next(logits, [params] * len(rows), [s.seed for s in rows],
                                        [len(s.token_ids) for s in rows], [s.token_ids for s in rows],
                                        kernel=self.runner.triton_sampling)  # fmt: skip
            for seq, token, logp in zip(rows, tokens.tolist(), logps.tolist(), strict=True):
                seq.token_ids.append(token)
                if params.logprobs:
                    seq.logprobs.append(logp)
                reason = self._finish_reason(seq, stop_ids)
                if reason is not None:
                    scheduler.finish(seq, reason)
                    finished.append(seq)
        groups = [Group(i, list(p), []) for i, p in enumerate(prompts)]
        for seq in sorted(finished, key=lambda s: (s.prompt_index, s.child_index)):
            groups[seq.prompt_index].completions.append(
                Completion(seq.completion_ids, seq.logprobs, seq.finish_reason, seq.prompt_index, seq.child_index)
            )
        return groups
