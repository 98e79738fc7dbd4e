"""How many BLAS threads NumPy's matrix products get: one per core that other processes leave idle.

OpenBLAS splits each product between its threads and waits for the slowest. When another process keeps
a core busy, the thread on that core runs only in the scheduler's time slices, and decoding (hundreds of
small products per token) waits on it every time: on a 2-core machine with one busy process, 100 tokens
took 4-27 s with 2 threads against 6 s with 1. So when llmx starts it counts the cores other processes
keep busy and gives the BLAS the rest, at least one. LLMX_THREADS=N overrides that, and so does setting
the BLAS's own variable (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS).

This module does not import NumPy: the count is decided before NumPy loads its BLAS.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Mapping

from .errors import InputError

BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads(env: Mapping[str, str]) -> int | None:
    """The thread count to use: LLMX_THREADS if set; None (leave the BLAS alone) if one of its own
    variables is set; else the cores that other processes leave idle."""
    if env.get("LLMX_THREADS"):
        return parse_threads(env["LLMX_THREADS"])
    if any(env.get(name) for name in BLAS_VARIABLES):
        return None
    return idle_cores(available_cores(), busy_cores())


def idle_cores(cores: int, busy: float) -> int:
    """The policy: one thread per core not kept busy by others, never fewer than one nor more than `cores`."""
    return max(1, min(cores, cores - round(busy)))


def parse_threads(value: str) -> int:
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise InputError(f"LLMX_THREADS={value!r} is not a positive whole number: set it to e.g. 1, or unset it "
                         "to use one thread per idle core")
    return threads


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def busy_cores(samples: int = 5, pause: float = 0.002) -> float:
    """How many cores other processes keep busy now.

    Linux: the fewest runnable tasks over a few samples of /proc/loadavg (its 4th field, "running/total"),
    less this process. A process spinning on a core is runnable in every sample; one passing by is not.
    Elsewhere: the 1-minute load average, or 0 where there is none.
    """
    try:
        counts = []
        for _ in range(samples):
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)  # [3] is "running/total"
            time.sleep(pause)
        return float(max(0, min(counts)))
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (OSError, AttributeError):
            return 0.0


def use_blas_threads(threads: int) -> None:
    """Make NumPy's BLAS use `threads` threads: through its environment variables before NumPy is loaded
    (the command line), through threadpoolctl once it is (llmx used from Python, or from `llm`)."""
    if "numpy" not in sys.modules:
        for name in BLAS_VARIABLES:
            os.environ[name] = str(threads)
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads, user_api="blas")


@functools.cache
def blas_controller():
    """threadpoolctl's handle on NumPy's BLAS, found once (looking for it takes a few milliseconds): call it once
    NumPy is loaded, as the engine's modules do."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def blas_threads_now() -> int:
    """How many threads NumPy's BLAS is set to use now (what `use_blas_threads` chose, or the BLAS's own setting)."""
    return max([lib["num_threads"] for lib in blas_controller().info()] or [1])


def blas_limit(threads: int):
    """A context in which NumPy's BLAS uses `threads` threads, and after which it uses as many as before."""
    return blas_controller().limit(limits=threads)
