"""The decode batch between chunks: its rows, what stays on the device for them, and a chunk's way back to the host."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from r1fast.sampler.sampling import SamplingState
from r1fast.sampler.sequence import Sequence, Status


def block_tables(seqs: list[Sequence], width: int | None = None) -> np.ndarray:
    """The sequences' block tables as one [S, width] int32 array (default width: the longest; zeros past a table's
    end)."""
    counts = np.fromiter((len(s.block_table) for s in seqs), np.int64, count=len(seqs))
    flat = np.fromiter(itertools.chain.from_iterable(s.block_table for s in seqs), np.int32, count=int(counts.sum()))
    tables = np.zeros((len(seqs), int(counts.max(initial=0)) if width is None else width), np.int32)
    tables[np.arange(tables.shape[1]) < counts[:, None]] = flat
    return tables


MAX_LENGTH, PROMPT_LENGTH, COMPLETION = range(3)  # the columns of row_info()


def row_info(seqs: list[Sequence]) -> np.ndarray:
    """[S, 3] int64: each sequence's max_length, its prompt length, and its completion's index within its generate()
    call (prompt_index * n + child_index)."""
    info = [(s.max_length, s.num_prompt_tokens, s.prompt_index * s.params.n + s.child_index) for s in seqs]
    return np.array(info, dtype=np.int64).reshape(-1, 3)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A copy of a host array on the device, without waiting for the device: staged through pinned memory on CUDA (a
    copy from pageable memory may wait for the work queued before it), which the host may overwrite at once."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device, copy=True)


@dataclass
class Chunk:
    """A chunk of `steps` decode steps of the rows `seqs` (device order) launched on the device (or a prefill's first
    token: steps 1), whose outputs travel to the host while the host prepares the next chunk.

    lengths: [S] int64 on the host, the rows' lengths before the chunk (as if every row went on through the chunks
    launched before it); info: the rows' row_info(). tokens: [S, steps + 1] int64 on the host, the chunk's tokens
    then r1fast.sampler.sampling.chunk_ends'; logprobs: [S, steps] float32 on the host, or None; ready: a CUDA event
    recorded after the copies (None where they are done). rows_left: the scheduler's num_left when the chunk was
    launched (while it is unchanged, every row of the chunk is still running).
    """

    seqs: list[Sequence]
    steps: int
    lengths: np.ndarray
    info: np.ndarray
    tokens: torch.Tensor
    logprobs: torch.Tensor | None
    ready: torch.cuda.Event | None
    rows_left: int

    @staticmethod
    def to_host(seqs: list[Sequence], lengths: np.ndarray, info: np.ndarray, tokens: torch.Tensor, ends: torch.Tensor,
                logprobs: torch.Tensor | None, rows_left: int) -> Chunk:  # fmt: skip
        """Start copying a chunk's tokens [S, K] int64, ends [S] int64 and logprobs [S, K] float32 (or None) to the
        host: on CUDA without blocking, into pinned memory, with an event to wait on."""
        packed = torch.cat([tokens, ends[:, None]], 1)
        ready = None
        if packed.device.type == "cuda":
            pinned = lambda t: torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)  # noqa: E731
            packed, logprobs = pinned(packed), None if logprobs is None else pinned(logprobs)
            ready = torch.cuda.Event()
            ready.record()
        else:
            packed, logprobs = packed.cpu(), None if logprobs is None else logprobs.cpu()
        return Chunk(seqs, tokens.shape[1], lengths, info, packed, logprobs, ready, rows_left)

    def wait(self) -> None:
        """Block until the chunk's outputs are on the host."""
        if self.ready is not None:
            self.ready.synchronize()


class CompletionBuffer:
    """One value per completion token of one generate() call on the host: values [completions, max_tokens] (zeros
    from calloc: a page is committed when a completion reaches it), written a chunk at a time with numpy, instead of
    extending a Python list per row and chunk; filled [completions] int64: the tokens written of each completion."""

    def __init__(self, num_completions: int, max_tokens: int, dtype: type) -> None:
        self.values = np.zeros((num_completions, max_tokens), dtype)
        self.filled = np.zeros(num_completions, np.int64)

    def write(self, completions: np.ndarray, starts: np.ndarray, counts: np.ndarray, values: np.ndarray) -> None:
        """The first counts[i] of row i's values ([S, K]) are completion completions[i]'s from its token starts[i] on
        (completions, starts, counts: [S] int64; a row with count 0 writes nothing)."""
        k = np.arange(values.shape[1])
        flat = self.values.reshape(-1)
        base = completions * self.values.shape[1] + starts
        if (counts == len(k)).all():  # every row took the whole chunk: no mask
            flat[base[:, None] + k] = values
            self.filled[completions] = starts + counts
            return
        taken = k < counts[:, None]
        flat[(base[:, None] + k)[taken]] = values[taken]
        wrote = counts > 0
        self.filled[completions[wrote]] = (starts + counts)[wrote]

    def read(self, completions: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> list[list]:
        """Each completion's values of its tokens [starts[i], stops[i]), as lists (completions, starts, stops: [R]
        int64): one gather and one tolist for all of them."""
        counts = np.maximum(stops - starts, 0)
        ends = np.cumsum(counts)
        index = np.repeat(completions * self.values.shape[1] + starts - (ends - counts), counts)
        flat = self.values.reshape(-1)[index + np.arange(len(index))].tolist()
        bounds = [0, *ends.tolist()]
        return [flat[a:b] for a, b in itertools.pairwise(bounds)]


class CompletionTokens(CompletionBuffer):
    """The completions' tokens (int32), the host's record of what the decode rows generated: a decoding sequence's
    token_ids list is brought up to date from it only where the host reads that list (stop strings, preemption, the
    finished completion), not after every chunk."""

    def __init__(self, num_completions: int, max_tokens: int) -> None:
        super().__init__(num_completions, max_tokens, np.int32)

    def bring_up_to_date(self, seqs: list[Sequence], completions: np.ndarray) -> None:
        """Append to each sequence's token_ids the tokens written since it was last brought up to date (completions:
        [R] int64, the sequences' completion indices); its K/V is then cached up to its new last token (num_cached =
        len - 1), as a decoding row's is."""
        have = np.fromiter((len(s.token_ids) - s.num_prompt_tokens for s in seqs), np.int64, count=len(seqs))
        filled = self.filled[completions]
        behind = np.flatnonzero(filled > have)
        if not len(behind):
            return
        news = self.read(completions[behind], have[behind], filled[behind])
        for i, new in zip(behind.tolist(), news, strict=True):
            seq = seqs[i]
            seq.token_ids += new
            seq.num_cached = len(seq.token_ids) - 1

    def cut(self, seq: Sequence, completion: int, length: int) -> None:
        """End seq's completion (index `completion`) at `length` tokens (a stop string), in its list and here."""
        del seq.token_ids[seq.num_prompt_tokens + length :]
        self.filled[completion] = length


class DecodeRows:
    """The rows that decode together, in device order (the scheduler's running order, once the rows that left are
    dropped), with what the host keeps of them in numpy, so that a chunk costs no Python per row:

    - lengths [S] int64: each row's length as if it went on through every chunk launched (the chunk in flight
      included), so that its K/V up to length - 1 is written when those chunks are done;
    - info [S, 3] int64: row_info();
    - tables [S, M] int32 (M: the blocks of max_model_len), table_lengths [S] int64: a mirror of the rows' block
      tables, to which the scheduler writes the blocks it appends (blocks_appended) instead of it being rebuilt from
      every row's list;
    - tokens: the completions' tokens (CompletionTokens), which the rows' token_ids lists catch up with where the
      host reads them (sync);

    and what stays on the device between chunks: their SamplingState, their last tokens (the next chunk's inputs,
    [S] int64) and their block tables ([S, W] int32, W: the longest), uploaded from the mirror when it changed.
    """

    def __init__(self, width: int, device: torch.device, num_completions: int, max_tokens: int) -> None:
        self.device = device
        self.seqs: list[Sequence] = []
        self.state: SamplingState | None = None
        self.last_tokens: torch.Tensor | None = None
        self.lengths = np.zeros(0, np.int64)
        self.info = np.zeros((0, 3), np.int64)
        self.tables = np.zeros((0, width), np.int32)
        self.table_lengths = np.zeros(0, np.int64)  # entries of each row's table in `tables`
        self.tokens = CompletionTokens(num_completions, max_tokens)
        self._stale = False  # the mirror is to be read again from the rows' lists (tables_replaced)
        self._device_tables: torch.Tensor | None = None  # the upload of `tables`, while current

    @property
    def max_lengths(self) -> np.ndarray:
        """[S] int64: the length at which each row ends at the latest."""
        return self.info[:, MAX_LENGTH]

    def keep(self, running: list[Sequence]) -> None:
        """Drop the rows that finished or were preempted, with their device state. running: the scheduler's running
        sequences, the rows that stay (a subsequence of the rows: nothing joined since they left)."""
        if len(running) == len(self.seqs):
            return
        keep = [i for i, s in enumerate(self.seqs) if s.status is Status.RUNNING]
        assert len(keep) == len(running), "a row left the scheduler's running sequences but is still running"
        index = np.array(keep, dtype=np.int64)
        self.seqs = [self.seqs[i] for i in keep]
        self.lengths, self.info = self.lengths[index], self.info[index]
        self.tables, self.table_lengths = self.tables[index], self.table_lengths[index]
        self._device_tables = None
        if not keep:
            self.state = self.last_tokens = None
            return
        rows = to_device(index, self.device)
        self.state, self.last_tokens = self.state.take(rows), self.last_tokens[rows]

    def join(self, seqs: list[Sequence], state: SamplingState, last_tokens: torch.Tensor, lengths: np.ndarray) -> None:
        """Append new rows (just prefilled) with their state [S] and last tokens [S] int64 on the device and their
        lengths [S] int64 (their first token included); the rows that already finished stay out. Call keep()
        first."""
        alive = [i for i, s in enumerate(seqs) if s.status is Status.RUNNING]
        if not alive:
            return
        if len(alive) < len(seqs):
            rows = to_device(np.array(alive, dtype=np.int64), self.device)
            state, last_tokens = state.take(rows), last_tokens[rows]
            seqs, lengths = [seqs[i] for i in alive], lengths[alive]
        self.seqs = self.seqs + seqs
        self.state = state if self.state is None else SamplingState.cat([self.state, state])
        self.last_tokens = last_tokens if self.last_tokens is None else torch.cat([self.last_tokens, last_tokens])
        self.lengths = np.concatenate([self.lengths, lengths])
        self.info = np.concatenate([self.info, row_info(seqs)])
        self.tables = np.concatenate([self.tables, block_tables(seqs, self.tables.shape[1])])
        self.table_lengths = np.concatenate([self.table_lengths, [len(s.block_table) for s in seqs]])
        self._device_tables = None

    def sync(self) -> None:
        """Bring every row's token_ids (and num_cached) up to date, for code that reads the sequences themselves."""
        self.tokens.bring_up_to_date(self.seqs, self.info[:, COMPLETION])

    # -- block tables -----------------------------------------------------------------------------------------

    def _read_tables(self) -> None:
        self.tables = block_tables(self.seqs, self.tables.shape[1])
        self.table_lengths = np.fromiter((len(s.block_table) for s in self.seqs), np.int64, count=len(self.seqs))
        self._stale, self._device_tables = False, None

    def blocks_appended(self, rows: np.ndarray, counts: np.ndarray, blocks: list[int]) -> None:
        """The scheduler appended counts[i] blocks to row rows[i]'s list (rows, counts: [R] int64; blocks: in row
        order): the same, to the mirror, with numpy."""
        if not blocks or self._stale:
            return
        offsets = np.repeat(np.cumsum(counts) - counts - self.table_lengths[rows], counts)
        self.tables[np.repeat(rows, counts), np.arange(len(blocks)) - offsets] = blocks
        self.table_lengths[rows] += counts
        self._device_tables = None

    def tables_replaced(self) -> None:
        """The scheduler changed the rows' lists otherwise (a copy-on-write replaced an entry, or a preemption): the
        mirror is read again from every list before it is next used."""
        self._stale, self._device_tables = True, None

    def last_blocks(self, rows: np.ndarray) -> np.ndarray:
        """[R] int32: the last block of each row in rows ([R] int64, rows with a block)."""
        if self._stale:
            self._read_tables()
        return self.tables[rows, self.table_lengths[rows] - 1]

    def device_tables(self) -> torch.Tensor:
        """The rows' block tables on the device, [S, W] int32 (uploaded again only when the mirror changed)."""
        if self._stale:
            self._read_tables()
        if self._device_tables is None:
            width = int(self.table_lengths.max())
            self._device_tables = to_device(np.ascontiguousarray(self.tables[:, :width]), self.device)
        return self._device_tables
