"""Progress of ``diffsweep run`` on stderr: a bar on a terminal, log lines anywhere else.

On a terminal, tqdm draws its bar over blocks.  Anywhere else (a batch system's log
file, ``nohup``, ``2>&1 | tee``) a bar is either invisible or a smear of carriage
returns, so a line is logged every few seconds instead::

    14:02:10 INFO progress: 3 of 8 blocks (37%), 192 runs in 20.00 s, 9.6 runs/s, ETA 33.33 s

With ``-v`` every finished block is logged too (above the bar on a terminal).  The
lines go through the ``pipeline.progress`` logger, which logs at INFO whatever the
verbosity, so they share the timestamped format of the other log lines.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import ExitStack
from typing import Any, Literal

from pipeline.compute import BlockSummary

__all__ = ["DEFAULT_INTERVAL", "Mode", "RunProgress", "choose_mode"]

log = logging.getLogger("pipeline.progress")

#: seconds between progress lines when stderr is not a terminal
DEFAULT_INTERVAL = 10.0

#: ``bar``: tqdm on the terminal; ``log``: a line every interval; ``off``: neither
Mode = Literal["bar", "log", "off"]


def choose_mode(progress: bool | None, stderr_is_terminal: bool) -> Mode:
    """``--progress/--no-progress`` (``None`` when not given) and stderr -> how to report.

    Examples
    --------
    >>> choose_mode(None, True), choose_mode(None, False), choose_mode(False, True), choose_mode(True, False)
    ('bar', 'log', 'off', 'bar')
    """
    if progress is None:
        return "bar" if stderr_is_terminal else "log"
    return "bar" if progress else "off"


class RunProgress:
    """Reports the blocks of one run as they finish.

    Parameters
    ----------
    name
        The sweep's name (the bar's label).
    mode
        See :data:`Mode`.
    interval
        Seconds between lines in ``log`` mode.
    each_block
        Also log one line per finished block (``-v``).

    Call :meth:`start` once the blocks to compute are known, :meth:`block_done` for
    each finished block, and :meth:`close` at the end (or use it as a context manager).
    """

    def __init__(self, name: str, *, mode: Mode, interval: float = DEFAULT_INTERVAL, each_block: bool = False) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        log.setLevel(logging.INFO)
        self.name = name
        self.mode = mode
        self.interval = interval
        self.each_block = each_block
        self.blocks_total = 0
        self.blocks_before = 0
        self.blocks_done = 0
        self.runs_done = 0
        self._started: float | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._bar: Any = None
        self._exit = ExitStack()

    # ---- what the runner calls

    def start(self, blocks_to_compute: int, blocks_total: int) -> None:
        """The run is about to compute ``blocks_to_compute`` of the store's ``blocks_total`` blocks."""
        self.blocks_total = blocks_total
        self.blocks_before = blocks_total - blocks_to_compute
        self._started = time.monotonic()
        if self.mode == "bar":
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(
                total=blocks_total, initial=self.blocks_before, unit="block", file=sys.stderr, desc=self.name
            )
            self._exit.callback(self._bar.close)
            # log lines (-v) are written above the bar instead of through it
            self._exit.enter_context(logging_redirect_tqdm([logging.getLogger("pipeline")]))
        elif self.mode == "log" and blocks_to_compute:
            before = f" ({self.blocks_before:,} already stored)" if self.blocks_before else ""
            log.info(
                "computing %s of %s blocks%s; a progress line every %s",
                f"{blocks_to_compute:,}", f"{blocks_total:,}", before, f"{self.interval:g} s",
            )
            self._ticker = threading.Thread(target=self._tick, name="diffsweep progress", daemon=True)
            self._ticker.start()

    def block_done(self, summary: BlockSummary) -> None:
        """One block finished (called in the thread that waits on the blocks)."""
        self.blocks_done += 1
        self.runs_done += summary["runs"]
        if self._bar is not None:
            self._bar.update(1)
        if self.each_block:
            log.info(
                "block %s done: %s runs, kernels %s, write %s (%s of %s blocks)",
                ",".join(map(str, summary["index"])), f"{summary['runs']:,}",
                _seconds(summary["compute_seconds"]), _seconds(summary["write_seconds"]),
                f"{self.blocks_before + self.blocks_done:,}", f"{self.blocks_total:,}",
            )

    def close(self) -> None:
        """Stop the periodic lines and remove the bar."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        self._exit.close()

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- the periodic line

    def line(self, now: float | None = None) -> str:
        """The progress line: blocks done of the store's total, runs, rate and ETA."""
        elapsed = (now if now is not None else time.monotonic()) - (self._started or 0.0)
        stored = self.blocks_before + self.blocks_done
        share = stored / self.blocks_total if self.blocks_total else 1.0
        text = f"{stored:,} of {self.blocks_total:,} blocks ({share:.0%}), {self.runs_done:,} runs in {_seconds(elapsed)}"
        if self.blocks_done and elapsed > 0:
            remaining = self.blocks_total - stored
            eta = elapsed / self.blocks_done * remaining
            text += f", {_rate(self.runs_done / elapsed)} runs/s, ETA {_seconds(eta)}"
        else:
            text += ", no block finished yet"
        return text

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            if self.blocks_before + self.blocks_done >= self.blocks_total:
                return  # the summary follows
            log.info("progress: %s", self.line())


def _seconds(value: float) -> str:
    from dask.utils import format_time

    return str(format_time(value))


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 10 else f"{value:,.0f}"
