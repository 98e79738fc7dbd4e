"""engine/memory.py: freed arrays are reused, not faulted in anew; KV cache buffers are zeros mapped as written."""

from __future__ import annotations

import platform
import resource

import numpy as np
import pytest

from llmx.engine import memory


def faults_of(fn) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_a_freed_array_is_reused_without_page_faults():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: no mallopt")
    memory.reuse_freed_memory()

    def churn():  # a pass's temporaries: three 12 MB arrays alive at once, written, freed; five times
        for _ in range(5):
            live = [np.empty(3 << 20, np.float32) for _ in range(3)]
            for a in live:
                a.fill(1.0)
            del live

    churn()  # the heap grows once
    # glibc's default returned the 36 MB after each round and faulted it in again: 2,037 faults here (4 KB pages)
    assert faults_of(churn) < 10


def test_lazy_zeros_are_zeros_of_the_shape_and_writable():
    buf = memory.lazy_zeros((3, 1000, 64), np.float32)
    assert buf.shape == (3, 1000, 64) and buf.dtype == np.float32 and not buf.any()
    buf[1, 10:20] = 2.0
    assert buf.sum() == 2.0 * 10 * 64
    assert memory.lazy_zeros((0, 4), np.float64).shape == (0, 4)
