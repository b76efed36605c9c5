"""Progress that survives nohup, SLURM and CI logs: a tqdm bar on a terminal, elsewhere a plain line
every ``$FDM_PROGRESS_EVERY`` seconds (default 30) and at the end, never a carriage return.

A bar redraws itself with ``\\r``, which turns a log file into one enormous line; and a bar simply
switched off when the output is not a terminal leaves a long job silent for hours.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

DEFAULT_EVERY = 30.0


def interval() -> float:
    """Seconds between plain progress lines (``$FDM_PROGRESS_EVERY``; 0 prints every update)."""
    try:
        return float(os.environ.get("FDM_PROGRESS_EVERY", DEFAULT_EVERY))
    except ValueError:
        return DEFAULT_EVERY


class Progress:
    """``tqdm``'s ``update`` / ``set_postfix`` / ``close`` for a terminal or a log file alike."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        leave: bool = False,
    ):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.enabled, self.postfix, self._bar = enabled, "", None
        self.every, self.t0, self.n0 = interval(), time.time(), initial
        self.last, self._n_printed = self.t0, initial
        if enabled and _isatty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True, file=self.stream
            )

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(**values, refresh=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.time() - self.last >= self.every:
            self._line()

    def close(self) -> None:
        """End the bar; in a log, a last line when earlier ones were written (a short job needs none)."""
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.last != self.t0 and self.n != self._n_printed:
            self._line()
        self._bar, self.enabled = None, False

    def _line(self) -> None:
        now = time.time()
        rate = (self.n - self.n0) / max(now - self.t0, 1e-9)
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(
            f"{self.desc}: {self.n}{of} {self.unit}{pct}, {rate:.3g} {self.unit}/s, {_clock(now - self.t0)} elapsed"
            + (f", {self.postfix}" if self.postfix else ""),
            file=self.stream,
            flush=True,
        )
        self.last, self._n_printed = now, self.n

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
