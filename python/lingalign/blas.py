"""How many threads numpy's BLAS may use while fitting.

OpenBLAS threads spin while they wait for work. With another process on one of two cores, a
contrastive fit with two BLAS threads ran 3x slower than with one, while on a quiet machine the
second thread gained at most 15% at these widths (d up to 1536; bench/fit_speed.py). So fitting
uses half the CPUs this process may run on, at least one, unless told otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def default_fit_threads() -> int:
    """Half the CPUs this process may run on, at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


@contextmanager
def blas_threads(threads: int | None = None) -> Iterator[int]:
    """Limit numpy's BLAS to `threads` threads (default: `default_fit_threads()`) inside the block."""
    from threadpoolctl import threadpool_limits

    n = default_fit_threads() if threads is None else max(1, int(threads))
    with threadpool_limits(limits=n, user_api="blas"):
        yield n
