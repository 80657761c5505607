"""How many threads numpy's BLAS may use while fitting.

OpenBLAS threads spin while they wait for work. Fitting Gemma 3 270M's 500 pairs (contrastive,
layer choice over 18 layers; bench/fit_speed.py) took 28.8 s with two BLAS threads while another
process held one of the two cores, and 10.4 s with one; on the quiet machine the second thread
saved 19% (8.5 s against 10.5 s). So fitting uses half the CPUs this process may run on, at
least one, unless told otherwise.
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
