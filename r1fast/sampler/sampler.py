"""The Sampler: G completions per prompt on the trainer's own weights, over a paged KV cache."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from r1fast.sampler.attention import Batch
from r1fast.sampler.block_manager import BlockManager
from r1fast.sampler.decode_rows import (
    COMPLETION,
    MAX_LENGTH,
    PROMPT_LENGTH,
    Chunk,
    CompletionBuffer,
    DecodeRows,
    block_tables,
    row_info,
)
from r1fast.sampler.model_runner import DecodeInputs, ModelRunner, check_model
from r1fast.sampler.sampling import SEED_BITS, SamplingParams, SamplingState, chunk_ends, mix_seed, sample
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
    the host sees every token before the next step; the tokens are the same); a chunk runs a power of two <= K
    steps, as many as the row with the most tokens left uses (rounded up where that wastes at most a quarter of the
    chunk), fewer when the pool cannot hold them. async_scheduling: launch the next decode chunk
    before reading the one in flight, so that the host's work for chunk t + 1 overlaps the device's for chunk t
    (None: on CUDA, where the device runs ahead of the host; off elsewhere, where nothing would overlap; the tokens
    are the same either way). Raises ValueError for an unsupported model or a meaningless setting.
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
        async_scheduling: bool | None = None,
    ) -> None:
        if not (isinstance(decode_steps, int) and decode_steps >= 1 and decode_steps & (decode_steps - 1) == 0):
            raise ValueError(f"decode_steps must be a power of two >= 1, got {decode_steps!r}")
        if async_scheduling not in (None, True, False):
            raise ValueError(f"async_scheduling must be None, True or False, got {async_scheduling!r}")
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
        self.async_scheduling = async_scheduling
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
                int((torch.cuda.mem_get_info(device)[0] - self.runner.reserved_bytes) * GPU_MEMORY_FRACTION)
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
        tables = block_tables(seqs)
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

    def _take_chunk(self, chunk: Chunk, params: SamplingParams, scheduler: Scheduler, rows: DecodeRows,
                    finished: list[Sequence], logprobs: CompletionBuffer | None) -> None:  # fmt: skip
        """Wait for a chunk's outputs, write each row's tokens that count (see chunk_ends) and their log-probs to the
        completions' buffers, cut a row at a stop string, and finish the rows that ended (their token lists brought
        up to date, with their log-probs). A row that ended in an earlier chunk (this chunk was launched before the
        host read that one) is skipped: its tokens here are wasted steps. Vectorised over the rows; Python per row
        only for the rows that finish, and for every row when there are stop strings (they need the text)."""
        chunk.wait()
        packed = chunk.tokens.numpy()
        ends = packed[:, -1]
        seqs, info, tokens = chunk.seqs, chunk.info, rows.tokens
        if chunk.rows_left == scheduler.num_left:  # no row left since the chunk was launched
            live = np.ones(len(seqs), bool)
        else:
            live = np.fromiter((s.status is Status.RUNNING for s in seqs), bool, count=len(seqs))
        counts = np.where(live, np.abs(ends), 0)
        stopped = live & (ends < 0)
        ended = stopped | (live & (chunk.lengths + counts >= info[:, MAX_LENGTH]))
        completions, starts = info[:, COMPLETION], chunk.lengths - info[:, PROMPT_LENGTH]
        tokens.write(completions, starts, counts, packed[:, :-1])
        if logprobs is not None:
            logprobs.write(completions, starts, counts, chunk.logprobs.numpy())
        if params.stop:  # Python per row: the text of each row's new tokens
            check = np.flatnonzero(live)
            tokens.bring_up_to_date([seqs[i] for i in check.tolist()], completions[check])
            for i in check.tolist():
                if (cut := self._stop_string_end(seqs[i], int(starts[i]))) is not None:
                    tokens.cut(seqs[i], int(completions[i]), cut)
                    stopped[i] = ended[i] = True
        done = np.flatnonzero(ended)
        finishing = [seqs[i] for i in done.tolist()]
        tokens.bring_up_to_date(finishing, completions[done])
        if logprobs is not None:  # a finished completion's length: the tokens its buffer holds (after any cut)
            lengths = tokens.filled[completions[done]]
            for seq, values in zip(finishing, logprobs.read(completions[done], 0 * lengths, lengths), strict=True):
                seq.logprobs = values
        finished.extend(finishing)
        scheduler.finish(finishing, ["stop" if s else "length" for s in stopped[done].tolist()])

    def _prefill(self, seqs: list[Sequence], params: SamplingParams, base_seed: int, scheduler: Scheduler,
                 rows: DecodeRows, stop_ids: torch.Tensor | None, finished: list[Sequence],
                 logprobs: CompletionBuffer | None) -> None:  # fmt: skip
        """Prefill new sequences (prompts, or a preempted sequence's whole context), fork each group's children off
        its parent, sample every row's first token, and add the rows that go on to the decode rows."""
        logits = self.runner.forward(self._batch(seqs), [len(s.token_ids) for s in seqs])
        new_rows: list[Sequence] = []
        row_of: list[int] = []
        for row, seq in enumerate(seqs):
            seq.num_cached = len(seq)
            family = [seq]
            if seq.fork > 1:  # the prompt is in cache: its children share every block of it
                family += [Sequence(next(self._seq_ids), seq.prompt_index, list(seq.token_ids), seq.num_prompt_tokens,
                                    params, mix_seed(base_seed, seq.prompt_index, child_index),
                                    child_index=child_index, status=seq.status)
                           for child_index in range(1, seq.fork)]  # fmt: skip
                scheduler.fork(seq, family[1:])
                seq.fork = 1
            new_rows.extend(family)
            row_of.extend([row] * len(family))
        if row_of != list(range(len(seqs))):
            logits = logits[row_of]
        lengths = np.fromiter((len(s.token_ids) for s in new_rows), np.int64, count=len(new_rows))
        info = row_info(new_rows)
        history = [s.token_ids for s in new_rows] if params.repetition_penalty != 1.0 else []
        state = SamplingState.build([params] * len(new_rows), [s.seed for s in new_rows], lengths.tolist(), history,
                                    self.vocab_size, self.runner.device,
                                    min_lengths=(info[:, PROMPT_LENGTH] + params.min_tokens).tolist(),
                                    max_lengths=info[:, MAX_LENGTH].tolist())  # fmt: skip
        token, logprob = sample(logits, state, kernel=self.runner.triton_sampling)
        ends = chunk_ends(token[:, None], state.position, state, stop_ids)
        state.record(token)
        chunk = Chunk.to_host(new_rows, lengths, info, token[:, None], ends,
                              logprob[:, None] if params.logprobs else None, scheduler.num_left)  # fmt: skip
        self._take_chunk(chunk, params, scheduler, rows, finished, logprobs)
        rows.join(new_rows, state, token, lengths + 1)

    def _launch(self, rows: DecodeRows, scheduler: Scheduler, stop_ids: torch.Tensor | None,
                logprobs: bool) -> Chunk:  # fmt: skip
        """Start a chunk of decode steps of the decode rows on the device (the steps and blocks the scheduler
        reserved last), from their lengths (rows.lengths: as if every row went on through the chunk in flight, if
        any), and its copy back to the host; the rows' state, last tokens and lengths move on to the chunk's end."""
        assert rows.seqs == scheduler.running, "the decode rows are not the scheduler's running sequences"
        lengths, steps = rows.lengths.copy(), scheduler.num_steps
        start = rows.state.position - 1  # each row's last token: on the device, with or without the host's copy
        inputs = DecodeInputs(input_ids=rows.last_tokens, start=start, block_tables=rows.device_tables())
        tokens, token_logprobs = self.runner.decode_steps(inputs, rows.state, steps, lengths)
        ends = chunk_ends(tokens, start + 1, rows.state, stop_ids)
        rows.last_tokens = tokens[:, -1]
        rows.lengths += steps
        return Chunk.to_host(list(rows.seqs), lengths, rows.info, tokens, ends, token_logprobs if logprobs else None,
                             scheduler.num_left)  # fmt: skip

    def _look_ahead(self) -> bool:
        """Whether the next chunk is launched before the host reads the one in flight (see async_scheduling)."""
        return self.runner.device.type == "cuda" if self.async_scheduling is None else self.async_scheduling

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
        device = self.runner.device
        stop_ids = self._stop_ids(params)
        stop_ids = torch.tensor(stop_ids, dtype=torch.int64).to(device) if stop_ids else None
        max_tokens = min(params.max_tokens, self.max_model_len)
        rows = DecodeRows(-(-self.max_model_len // self.block_size), device, len(prompts) * params.n, max_tokens)
        logprobs = CompletionBuffer(len(prompts) * params.n, max_tokens, np.float32) if params.logprobs else None
        look_ahead = self._look_ahead()
        in_flight: Chunk | None = None  # launched, not yet read
        while in_flight is not None or scheduler.has_work():
            if in_flight is None:  # nothing on the device: admissions, preemptions and copies happen here
                rows.keep(scheduler.running)
                seqs = scheduler.schedule(self.decode_steps, rows)
                self.runner.copy_blocks(bm.pending_copies)
                bm.pending_copies.clear()
                if not scheduler.decoding:  # the admitted sequences are the last of the running ones
                    self._prefill(seqs, params, base_seed, scheduler, rows, stop_ids, finished, logprobs)
                    continue
                rows.keep(scheduler.running)  # without the rows it preempted
                if not seqs:  # every running sequence was preempted to make room: the next step recomputes them
                    continue
                in_flight = self._launch(rows, scheduler, stop_ids, params.logprobs)
            # Async scheduling: while that chunk runs, reserve blocks for the next one and launch it for the same
            # rows, as if every row went on; the host then reads the first chunk, and the rows that ended in it waste
            # their steps of the next. No look-ahead when a waiting sequence could be admitted (seats freed): the
            # host reads the chunk and prefills it.
            following = None
            if look_ahead and not scheduler.can_admit():
                rows.keep(scheduler.running)
                if scheduler.schedule_ahead(self.decode_steps, rows):
                    following = self._launch(rows, scheduler, stop_ids, params.logprobs)
            self._take_chunk(in_flight, params, scheduler, rows, finished, logprobs)
            in_flight = following
        groups = [Group(i, list(p), []) for i, p in enumerate(prompts)]
        for seq in sorted(finished, key=lambda s: (s.prompt_index, s.child_index)):
            groups[seq.prompt_index].completions.append(
                Completion(seq.completion_ids, seq.logprobs, seq.finish_reason, seq.prompt_index, seq.child_index)
            )
        return groups
