"""Progress of long work (training steps, images embedded) for a person watching: a tqdm bar
on a terminal; in a log file or under a scheduler (no terminal), or with
`progress_bar=False`, a plain line after the first step, then one every `interval_s`, instead of
a bar's carriage returns. Either way, once a few steps after the first (which pays for warm-up)
have been timed, one line estimates the whole job's time."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


ESTIMATE_AFTER = 3  # timed steps (after the first) before the whole job's time is estimated


class Progress:
    def __init__(self, total: int, initial: int, enabled: bool, bar: bool, interval_s: float,
                 stream=None, job: str = "train", unit: str = "step"):
        self.total, self.done, self.enabled = total, initial, enabled
        self._stream = stream or sys.stderr
        self._bar = None
        if enabled and bar and self._stream.isatty():
            self._bar = tqdm(total=total, initial=initial, desc=job, unit=unit,
                             dynamic_ncols=True, file=self._stream)
        self._interval_s = interval_s
        self._start = self._last_line = time.monotonic()
        self._start_step = initial
        self._values: dict = {}
        self._job, self._unit = job, unit
        self._lines = 0
        self._timed_from: tuple[int, float] | None = None  # (step, time) after the first step
        self._estimated = False

    @property
    def is_bar(self) -> bool:
        return self._bar is not None

    def update(self, done: int) -> None:
        """Step `done` finished (dispatched)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done = done
        now = time.monotonic()
        if self._bar is None and (not self._lines or now - self._last_line >= self._interval_s):
            self._last_line = now
            self._line(now)
        self._estimate(now)

    def _estimate(self, now: float) -> None:
        """After ESTIMATE_AFTER steps past the first: the whole job's time, once."""
        if self._timed_from is None:
            self._timed_from = (self.done, now)
            return
        step, start = self._timed_from
        if self._estimated or self.done - step < ESTIMATE_AFTER or self.done >= self.total:
            return
        self._estimated = True
        each = (now - start) / (self.done - step)
        left = each * (self.total - self.done)
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        line = (f"{self._job}: about {each:.3g} s a {self._unit}: {_duration(left)} for the "
                f"{self.total - self.done} {self._unit}s left (done around {finish})")
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def note(self, **values: float) -> None:
        """The latest metrics (loss, learning rate, ...) to show."""
        self._values = values
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})

    def _line(self, now: float) -> None:
        rate = (self.done - self._start_step) / max(now - self._start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        shown = "".join(f", {k} {v:.4g}" for k, v in self._values.items())
        eta_text = _duration(eta) if eta == eta else "?"
        self._lines += 1
        print(f"{self._job}: {self._unit} {self.done}/{self.total} "
              f"({self.done / self.total:.0%}), {rate:.2f} {self._unit}s/s, eta {eta_text}{shown}",
              file=self._stream, flush=True)

    def write(self, line: str) -> None:
        """A line for the user (on stdout), kept clear of the bar."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
