"""Progress lines for job logs: what tqdm shows (done/total, elapsed, time left), one line per update and no
carriage returns, so a log file of a running job (`tail -f results/logs/<rule>/…`) reads cleanly."""

from __future__ import annotations

import time


def _clock(seconds: float) -> str:
    if seconds != seconds:  # NaN: nothing done yet
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``line(note)`` counts one more unit of ``total`` and returns
    ``"<what> 3/8 (38%) [0:12 elapsed, ~0:20 left] <note>"``; the time left extrapolates the mean so far."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.done, self.start = max(int(total), 1), what, 0, time.monotonic()

    def line(self, note: str = "", n: int = 1) -> str:
        self.done += n
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        text = (f"{self.what} {self.done}/{self.total} ({100 * self.done / self.total:.0f}%) "
                f"[{_clock(elapsed)} elapsed, ~{_clock(left)} left]")
        return f"{text} {note}" if note else text
