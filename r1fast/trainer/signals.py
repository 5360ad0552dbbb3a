"""Clean stops: while a run trains, SIGINT and SIGTERM ask it to stop after the current step (which then writes a
checkpoint); a second signal raises KeyboardInterrupt at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context manager that holds the SIGINT/SIGTERM handlers for its duration and restores the previous ones.
    `signal_name` is the name of the first signal received ("SIGINT"), None before one. Outside the main thread
    (where Python cannot install handlers) it does nothing."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:  # fmt: skip
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt(f"second stop signal ({signal.Signals(signum).name})")
        self.signal_name = signal.Signals(signum).name
