"""The Sampler: G completions per prompt on the trainer's own weights, over a paged KV cache."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from r1fast.sampler.attention import Batch
from r1fast.sampler.block_manager import BlockManager
from r1fast.sampler.model_runner import DecodeInputs, ModelRunner, check_model
from r1fast.sampler.sampling import SEED_BITS, SamplingParams, SamplingState, mix_seed, sample
from r1fast.sampler.scheduler import Scheduler
from r1fast.sampler.sequence import Sequence, Status

CPU_KV_CACHE_BYTES = 64 << 20
GPU_MEMORY_FRACTION = 0.5  # of the free device memory when kv_cache_memory is not given
DECODE_STEPS = 16  # K: decode steps per host round trip, at most (a power of two)


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
    fp32_head). decode_steps: K, the most decode steps run on the device per host round trip (a power of two; 1 =
    the host sees every token before the next step; the tokens are the same). Raises ValueError for an unsupported
    model or a meaningless setting.
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
        decode_steps: int = DECODE_STEPS,
    ) -> None:
        if not (isinstance(decode_steps, int) and decode_steps >= 1 and decode_steps & (decode_steps - 1) == 0):
            raise ValueError(f"decode_steps must be a power of two >= 1, got {decode_steps!r}")
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
        self.decode_steps = decode_steps
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

    @staticmethod
    def _block_tables(seqs: list[Sequence]) -> np.ndarray:
        """The sequences' block tables as one [S, M] int32 array (M: the longest; zeros past a table's end)."""
        counts = np.fromiter((len(s.block_table) for s in seqs), np.int64, count=len(seqs))
        flat = np.fromiter(itertools.chain.from_iterable(s.block_table for s in seqs), np.int32,
                           count=int(counts.sum()))
        tables = np.zeros((len(seqs), int(counts.max())), np.int32)
        tables[np.arange(tables.shape[1]) < counts[:, None]] = flat
        return tables

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
        tables = self._block_tables(seqs)
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

    def _stop_ids(self, params: SamplingParams) -> list[int]:
        """The token ids that end a completion under params (after min_tokens)."""
        return sorted(set(params.stop_token_ids) | (set() if params.ignore_eos else self.eos_token_ids))

    def _decode_inputs(self, seqs: list[Sequence]) -> tuple[DecodeInputs, np.ndarray]:
        """The device inputs of a decode chunk (each row's last token, its position, its block table) and the rows'
        lengths on the host: numpy packing, one host-to-device copy per tensor."""
        lengths = np.fromiter((len(s.token_ids) for s in seqs), np.int64, count=len(seqs))
        last = np.fromiter((s.token_ids[-1] for s in seqs), np.int64, count=len(seqs))
        device = self.runner.device
        to = lambda x: torch.from_numpy(x).to(device, non_blocking=True)  # noqa: E731
        tables = self._block_tables(seqs)
        return DecodeInputs(input_ids=to(last), start=to(lengths - 1), block_tables=to(tables)), lengths

    @staticmethod
    def _chunk_ends(tokens: torch.Tensor, lengths: torch.Tensor, num_prompt: torch.Tensor, params: SamplingParams,
                    stop_ids: torch.Tensor, max_model_len: int) -> torch.Tensor:  # fmt: skip
        """Where each row's chunk of K new tokens ends, detected on the device: [S] int64, the number of its tokens
        that count (k + 1 at the first token k that is a stop id at >= min_tokens, or the last token max_tokens or
        max_model_len allow), negated (-n) where a stop id ended the row, K where the row goes on.
        tokens: [S, K] int64; lengths, num_prompt: [S] int64 (before the chunk); stop_ids: [n] int64."""
        steps = tokens.shape[1]
        k = torch.arange(1, steps + 1, device=tokens.device)
        generated = (lengths - num_prompt)[:, None] + k  # completion length after token k
        hit = (tokens[..., None] == stop_ids).any(-1) & (generated >= params.min_tokens)
        stop_at = torch.where(hit, k, steps + 1).amin(1)
        limit = torch.minimum(params.max_tokens - (lengths - num_prompt), max_model_len - lengths)
        return torch.where(stop_at <= limit.clamp(max=steps), -stop_at, limit.clamp(max=steps))

    def _stop_string_end(self, seq: Sequence, first: int) -> int | None:
        """The length of seq's completion at its first stop string ending at a token past completion index `first`
        (tokens before min_tokens excepted), or None. A stop string of c characters lies within the last c tokens (a
        token decodes to >= 1 character, plus a few tokens of slack for pieces of one multi-byte character)."""
        params, completion = seq.params, seq.completion_ids
        window = max(len(s) for s in params.stop) + 4
        for end in range(max(first + 1, params.min_tokens, 1), len(completion) + 1):
            text = self.tokenizer.decode(completion[max(0, end - window) : end])
            if any(s in text for s in params.stop):
                return end
        return None

    def _take_chunk(self, seqs: list[Sequence], tokens: list[list[int]], logprobs: list[list[float]] | None,
                    ends: list[int], scheduler: Scheduler, finished: list[Sequence]) -> None:  # fmt: skip
        """Append each row's tokens of a chunk (ends: see _chunk_ends), cut at a stop string, and finish the rows that
        ended. The rows' K/V is cached up to their new last token."""
        for seq, row, logps, end in zip(seqs, tokens, logprobs or [None] * len(seqs), ends, strict=True):
            count = abs(end)
            before = len(seq.token_ids) - seq.num_prompt_tokens
            seq.num_cached = len(seq.token_ids) + count - 1
            seq.token_ids.extend(row[:count])
            if logps is not None:
                seq.logprobs.extend(logps[:count])
            reason = "stop" if end < 0 else None
            if seq.params.stop:
                cut = self._stop_string_end(seq, before)
                if cut is not None:
                    del seq.token_ids[seq.num_prompt_tokens + cut :]
                    del seq.logprobs[cut:]
                    seq.num_cached = min(seq.num_cached, len(seq.token_ids) - 1)
                    reason = "stop"
            if reason is None and scheduler.tokens_left(seq) <= 0:
                reason = "length"
            if reason is not None:
                scheduler.finish(seq, reason)
                finished.append(seq)

    def _read_chunk(self, seqs: list[Sequence], tokens: torch.Tensor, logprobs: torch.Tensor, ends: torch.Tensor,
                    scheduler: Scheduler, finished: list[Sequence], want_logprobs: bool) -> None:  # fmt: skip
        """One device-to-host read of a chunk's tokens [S, K], ends [S] (and log-probs [S, K]), then _take_chunk."""
        packed = torch.cat([tokens, ends[:, None]], 1).tolist()
        logps = logprobs.tolist() if want_logprobs else None
        self._take_chunk(seqs, [r[:-1] for r in packed], logps, [r[-1] for r in packed], scheduler, finished)

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
        scheduler = Scheduler(bm, self.max_num_seqs, max_num_batched_tokens=max(8192, self.max_model_len),
                              max_model_len=self.max_model_len)  # fmt: skip
        self.last_scheduler = scheduler
        base_seed = self._base_seed(params)
        for index, prompt in enumerate(prompts):
            seq = Sequence(next(self._seq_ids), index, list(prompt), len(prompt), params,
                           mix_seed(base_seed, index, 0), fork=params.n)  # fmt: skip
            scheduler.add(seq)
        finished: list[Sequence] = []
        device, vocab = self.runner.device, self.vocab_size
        stop_ids = torch.tensor(self._stop_ids(params) or [-1], dtype=torch.int64).to(device)
        ends_of = lambda t, seqs, lengths: self._chunk_ends(  # noqa: E731
            t, lengths, torch.tensor([s.num_prompt_tokens for s in seqs]).to(device), params, stop_ids,
            self.max_model_len)
        # The device-resident sampling state of the rows in `rows` (in that order), kept across chunks.
        rows: list[Sequence] = []
        state: SamplingState | None = None
        while scheduler.has_work():
            seqs = scheduler.schedule(self.decode_steps)
            if not seqs:  # every running sequence was preempted to make room: the next step recomputes them
                continue
            self.runner.copy_blocks(bm.pending_copies)
            bm.pending_copies.clear()
            if scheduler.decoding:
                if seqs != rows:  # rows left (finished, preempted): keep the state of the others, in order
                    index = {id(s): i for i, s in enumerate(rows)}
                    state = state.take(torch.tensor([index[id(s)] for s in seqs]).to(device))
                    rows = seqs
                inputs, lengths = self._decode_inputs(seqs)
                tokens, logprobs = self.runner.decode_steps(inputs, state, scheduler.num_steps, lengths)
                ends = ends_of(tokens, seqs, torch.from_numpy(lengths).to(device))
                self._read_chunk(seqs, tokens, logprobs, ends, scheduler, finished, params.logprobs)
                continue
            # Prefill: the new sequences' prompts (or a preempted sequence's whole context), then one token each.
            logits = self.runner.forward(self._batch(seqs), [len(s.token_ids) for s in seqs])
            new_rows: list[Sequence] = []
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
                new_rows.extend(family)
                row_of.extend([row] * len(family))
            if row_of != list(range(len(seqs))):
                logits = logits[row_of]
            history = [s.token_ids for s in new_rows] if params.repetition_penalty != 1.0 else []
            new_state = SamplingState.build([params] * len(new_rows), [s.seed for s in new_rows],
                                            [len(s.token_ids) for s in new_rows], history, vocab, device)  # fmt: skip
            token, logprob = sample(logits, new_state, kernel=self.runner.triton_sampling)
            new_state.record(token)
            lengths = torch.tensor([len(s.token_ids) for s in new_rows]).to(device)
            ends = ends_of(token[:, None], new_rows, lengths)
            self._read_chunk(new_rows, token[:, None], logprob[:, None], ends, scheduler, finished, params.logprobs)
            # The survivors join the decode rows (a preempted row's old state row is dropped at the next take()).
            alive = [i for i, s in enumerate(new_rows) if s.status is Status.RUNNING]
            if alive:
                kept = new_state if len(alive) == len(new_rows) else new_state.take(torch.tensor(alive).to(device))
                state = kept if state is None else SamplingState.cat([state, kept])
                rows = rows + [new_rows[i] for i in alive]
        groups = [Group(i, list(p), []) for i, p in enumerate(prompts)]
        for seq in sorted(finished, key=lambda s: (s.prompt_index, s.child_index)):
            groups[seq.prompt_index].completions.append(
                Completion(seq.completion_ids, seq.logprobs, seq.finish_reason, seq.prompt_index, seq.child_index)
            )
        return groups
