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
    recorded after the copies (None where they are done).
    """

    seqs: list[Sequence]
    steps: int
    lengths: np.ndarray
    info: np.ndarray
    tokens: torch.Tensor
    logprobs: torch.Tensor | None
    ready: torch.cuda.Event | None

    @staticmethod
    def to_host(seqs: list[Sequence], lengths: np.ndarray, info: np.ndarray, tokens: torch.Tensor, ends: torch.Tensor,
                logprobs: torch.Tensor | None) -> Chunk:  # fmt: skip
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
        return Chunk(seqs, tokens.shape[1], lengths, info, packed, logprobs, ready)

    def wait(self) -> None:
        """Block until the chunk's outputs are on the host."""
        if self.ready is not None:
            self.ready.synchronize()


class CompletionLogprobs:
    """The log-probs of every completion of one generate() call on the host: [completions, max_tokens] float32 (zeros
    from calloc: a page is committed when a completion reaches it), written a chunk at a time with numpy, read once
    per completion when it finishes (instead of extending a Python list per row and chunk)."""

    def __init__(self, num_completions: int, max_tokens: int) -> None:
        self.values = np.zeros((num_completions, max_tokens), np.float32)

    def write(self, completions: np.ndarray, starts: np.ndarray, counts: np.ndarray, values: np.ndarray) -> None:
        """The first counts[i] of row i's values ([S, K] float32) are completion completions[i]'s from its token
        starts[i] on (completions, starts, counts: [S] int64)."""
        k = np.arange(values.shape[1])
        if (counts == len(k)).all():  # every row took the whole chunk: no mask
            self.values[completions[:, None], starts[:, None] + k] = values
            return
        taken = k < counts[:, None]
        rows = np.broadcast_to(completions[:, None], taken.shape)[taken]
        self.values[rows, (starts[:, None] + k)[taken]] = values[taken]

    def read(self, completion: int, length: int) -> list[float]:
        """The first `length` log-probs of a completion."""
        return self.values[completion, :length].tolist()


class DecodeRows:
    """The rows that decode together, in device order (the scheduler's running order, once the rows that left are
    dropped), and what stays on the device for them between chunks: their SamplingState, their last tokens (the next
    chunk's inputs, [S] int64) and their block tables ([S, W] int32, W: the longest), uploaded from a host mirror
    ([S, M] int32, M: the blocks of max_model_len) that is updated with the blocks appended since the last upload
    instead of being rebuilt from the tables' lists. info: the rows' row_info() on the host."""

    def __init__(self, width: int, device: torch.device) -> None:
        self.device = device
        self.seqs: list[Sequence] = []
        self.state: SamplingState | None = None
        self.last_tokens: torch.Tensor | None = None
        self.tables = np.zeros((0, width), np.int32)
        self.table_lengths = np.zeros(0, np.int64)  # entries of each row's table in `tables`
        self.info = np.zeros((0, 3), np.int64)
        self._device_tables: torch.Tensor | None = None  # the upload of `tables`, while current

    def keep(self, running: list[Sequence]) -> None:
        """Drop the rows that finished or were preempted, with their device state. running: the scheduler's running
        sequences, the rows that stay (a subsequence of the rows: nothing joined since they left)."""
        if len(running) == len(self.seqs):
            return
        keep = [i for i, s in enumerate(self.seqs) if s.status is Status.RUNNING]
        assert len(keep) == len(running), "a row left the scheduler's running sequences but is still running"
        index = np.array(keep, dtype=np.int64)
        self.seqs = [self.seqs[i] for i in keep]
        self.tables, self.table_lengths, self.info = self.tables[index], self.table_lengths[index], self.info[index]
        self._device_tables = None
        if not keep:
            self.state = self.last_tokens = None
            return
        rows = to_device(index, self.device)
        self.state, self.last_tokens = self.state.take(rows), self.last_tokens[rows]

    def join(self, seqs: list[Sequence], state: SamplingState, last_tokens: torch.Tensor) -> None:
        """Append new rows (just prefilled) with their state [S] and last tokens [S] int64 on the device; the rows that
        already finished stay out. Call keep() first."""
        alive = [i for i, s in enumerate(seqs) if s.status is Status.RUNNING]
        if not alive:
            return
        if len(alive) < len(seqs):
            rows = to_device(np.array(alive, dtype=np.int64), self.device)
            state, last_tokens = state.take(rows), last_tokens[rows]
            seqs = [seqs[i] for i in alive]
        self.seqs = self.seqs + seqs
        self.state = state if self.state is None else SamplingState.cat([self.state, state])
        self.last_tokens = last_tokens if self.last_tokens is None else torch.cat([self.last_tokens, last_tokens])
        self.tables = np.concatenate([self.tables, block_tables(seqs, self.tables.shape[1])])
        self.table_lengths = np.concatenate([self.table_lengths, [len(s.block_table) for s in seqs]])
        self.info = np.concatenate([self.info, row_info(seqs)])
        self._device_tables = None

    def device_tables(self, appended: tuple[np.ndarray, np.ndarray, list[int]] | None) -> torch.Tensor:
        """The rows' block tables on the device, [S, W] int32, after the scheduler appended blocks to their lists.
        appended: what it appended (Scheduler.appended: row indices, counts, the blocks in row order), written into
        the host mirror with numpy; None: every row is read again from its list (after a copy-on-write replaced an
        entry, or a preemption)."""
        if appended is None:
            self.tables = block_tables(self.seqs, self.tables.shape[1])
            self.table_lengths = np.fromiter((len(s.block_table) for s in self.seqs), np.int64, count=len(self.seqs))
        else:
            rows, counts, blocks = appended
            if not blocks and self._device_tables is not None:
                return self._device_tables
            if blocks:
                offsets = np.repeat(np.cumsum(counts) - counts - self.table_lengths[rows], counts)
                self.tables[np.repeat(rows, counts), np.arange(len(blocks)) - offsets] = blocks
                self.table_lengths[rows] += counts
        width = int(self.table_lengths.max())
        self._device_tables = to_device(np.ascontiguousarray(self.tables[:, :width]), self.device)
        return self._device_tables
