"""engine/memory.py: freed arrays are reused, not faulted in anew; KV cache buffers are zeros mapped as written."""

from __future__ import annotations

import platform
import resource
from pathlib import Path

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


def vm_flags(array: np.ndarray) -> list[str]:
    """The VmFlags of the mapping (in /proc/self/smaps) that holds the array's first byte."""
    address, inside = array.ctypes.data, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                lo, hi = (int(part, 16) for part in fields[0].split("-"))
                inside = lo <= address < hi
            elif inside and fields[0] == "VmFlags:":
                return fields[1:]
    raise AssertionError("no mapping holds the array")


def test_mapped_file_is_the_file_read_only(tmp_path):
    path = tmp_path / "weights.bin"
    data = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8)
    path.write_bytes(data.tobytes())
    mapped = memory.mapped_file(path)
    assert mapped.dtype == np.uint8 and np.array_equal(mapped, data)
    assert not mapped.flags.writeable
    with pytest.raises(ValueError):
        mapped[0] = 1


def test_mapped_file_asks_for_huge_pages(tmp_path):
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.is_file() or "[never]" in thp.read_text() or not Path("/proc/self/smaps").is_file():
        pytest.skip("no transparent huge pages here")
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(4 << 20))
    mapped = memory.mapped_file(path)
    assert "hg" in vm_flags(mapped)  # MADV_HUGEPAGE: Linux's "huge page advise" flag on the mapping
    plain = np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))
    assert "hg" not in vm_flags(plain)  # what the flag tells apart: np.memmap asks for nothing
