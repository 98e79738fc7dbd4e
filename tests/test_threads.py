"""The BLAS thread count: one thread per core other processes leave idle, LLMX_THREADS to override."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmx.engine import InputError
from llmx.engine.threads import blas_threads, busy_cores, idle_cores, parse_threads


@pytest.mark.parametrize("cores,busy,expected", [
    (2, 0, 2),  # a quiet 2-core machine: both cores
    (2, 1, 1),  # one core kept busy by another process: one thread, not two waiting on each other
    (2, 0.4, 2),  # a passing process is not a busy core
    (2, 3, 1),  # more busy processes than cores: still one thread
    (8, 2, 6),
    (1, 0, 1),
])
def test_one_thread_per_idle_core_and_at_least_one(cores, busy, expected):
    assert idle_cores(cores, busy) == expected


def test_llmx_threads_overrides_and_the_blas_own_variables_are_left_alone():
    assert blas_threads({"LLMX_THREADS": "3"}) == 3
    assert blas_threads({"LLMX_THREADS": "3", "OMP_NUM_THREADS": "8"}) == 3
    assert blas_threads({"OPENBLAS_NUM_THREADS": "4"}) is None
    assert 1 <= blas_threads({}) <= (os.cpu_count() or 1)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_llmx_threads_says_what_to_set(value):
    with pytest.raises(InputError, match=f"LLMX_THREADS='{value}' is not a positive whole number: set it to e.g. 1"):
        parse_threads(value)


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="counts runnable tasks in Linux's /proc/loadavg")
def test_a_process_spinning_on_a_core_counts_as_busy():
    spinner = subprocess.Popen([sys.executable, "-c", "print(flush=True)\nwhile True: pass"], stdout=subprocess.PIPE)
    try:
        spinner.stdout.readline()  # it has started and is spinning from here on
        assert busy_cores() >= 1
    finally:
        spinner.kill()
        spinner.wait()


def run_llmx_threads(**env) -> subprocess.CompletedProcess:
    """The BLAS thread count `llmx` sets up, as NumPy's BLAS reports it (through threadpoolctl)."""
    script = ("import sys\nfrom llmx.main import set_blas_threads\nset_blas_threads(False)\n"
              "import numpy, threadpoolctl\nprint(threadpoolctl.threadpool_info()[0]['num_threads'])")
    clean = {k: v for k, v in os.environ.items() if k not in ("LLMX_THREADS", "OPENBLAS_NUM_THREADS",
                                                               "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.run([sys.executable, "-c", script], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)


def test_the_cli_gives_numpy_the_chosen_thread_count():
    assert run_llmx_threads(LLMX_THREADS="1").stdout.strip() == "1"
    assert 1 <= int(run_llmx_threads().stdout) <= (os.cpu_count() or 1)


def test_a_bad_llmx_threads_is_a_one_line_error():
    done = run_llmx_threads(LLMX_THREADS="many")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("Error: LLMX_THREADS='many' is not a positive whole number: set it to e.g. 1, or unset it "
                           "to use one thread per idle core\n")


def test_with_numpy_loaded_the_count_goes_through_threadpoolctl():
    import numpy  # noqa: F401  (loaded before llmx sets the count, as when llmx is used from Python)
    import threadpoolctl

    from llmx.engine.threads import use_blas_threads

    with threadpoolctl.threadpool_limits(None):  # restores this process's count afterwards
        use_blas_threads(1)
        assert {lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"} == {1}
