"""Progress bars for the stages that take long (capture, layer choice, fitting, scoring)."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """A tqdm bar on stderr, or nothing.

    `enabled=None` shows the bar only for long stages (`total >= min_total`) on a terminal, so
    logs and tests stay clean; True or False forces it.
    """

    def __init__(self, total: int, enabled: bool | None, desc: str, *, unit: str = "sent", min_total: int = 200) -> None:
        if enabled is None:
            enabled = total >= min_total and sys.stderr.isatty()
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
