"""How the engine asks the OS and glibc's malloc for memory, so that passes do not wait on page faults.

Every page of memory a process gets from Linux anew is zeroed and mapped at its first write (a "page fault", a
few microseconds each). A pass's large temporaries (queries, scores, the MLP's hidden layer: megabytes each) are
allocated and freed hundreds of times, and by default glibc hands arrays over 128 KB (later up to 32 MB) back to
the OS when freed and fetches them anew, faulting in every page each time: 59,000 faults per 512-token GPT-2
pass, ~15% of its time, and 120,000 on SmolLM2, ~20% (getrusage's minor faults around `forward`).
`reuse_freed_memory` keeps them in the process instead, which then holds on to about a pass's temporaries
(VmRSS after a 512-token GPT-2 pass, its cache freed: 588 MB against 561 MB without). The KV cache is the
opposite case: buffers of the whole context of which a pass uses a prefix, which `lazy_zeros` maps page by
page as they are first written. Weights are the third case: files mapped read-only (`mapped_file`), whose
pages the OS should map 2 MB at a time, as NumPy asks for its own large arrays.

Each function does nothing where the C library has no mallopt (not glibc), or where it refuses.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
from pathlib import Path

import numpy as np

# glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 32 << 20  # arrays larger than this (all-position logits) still come from the OS and go back to it
TRIM_THRESHOLD = 64 << 20  # free memory kept at the top of the heap before malloc returns it


def mallopt(option: int, value: int) -> bool:
    """glibc's mallopt(option, value); False where there is none or it refuses."""
    try:
        return bool(ctypes.CDLL(None).mallopt(option, value))
    except (OSError, AttributeError, TypeError):  # no such function (macOS), no CDLL(None) (Windows)
        return False


@functools.cache
def reuse_freed_memory() -> None:
    """Keep freed arrays of up to MMAP_THRESHOLD in the process for the next pass to reuse (as the environment
    variables MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ do), rather than returning them to the OS. A
    512-token GPT-2 pass then faults 9,200 pages (its KV cache) instead of 59,000. Called by `load`."""
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


@functools.cache
def one_malloc_arena() -> None:
    """Have glibc's malloc serve every thread from one arena (mallopt M_ARENA_MAX = 1, as MALLOC_ARENA_MAX=1 does).
    By default each new thread gets an arena of its own, which keeps the memory its parts freed: SmolLM2 LoRA,
    4 x 256 tokens, 2 row threads peaked at 3.53 GB with an arena per thread and 2.43 GB with one, at the same
    speed (`/usr/bin/time -v llmx finetune ... --steps 3`; 3.01 GB when set only at the first threaded step, after
    other threads had arenas). Finetune sets it before training."""
    mallopt(M_ARENA_MAX, 1)


def lazy_zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """Zeros whose memory the OS supplies 4 KB page by page as they are first written, so that a cache
    buffer costs only the positions used. (np.zeros asks Linux for 2 MB pages for arrays this large: a
    [n_kv_head, n_ctx, d_head] buffer then costs its whole size, zeroed, at its first write: SmolLM2's cache
    took 377 MB and ~0.4 s for a 64-token prompt.)"""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    if size == 0:
        return np.zeros(shape, dtype)
    private = {"flags": mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS} if hasattr(mmap, "MAP_PRIVATE") else {}  # POSIX
    memory = mmap.mmap(-1, size, **private)  # anonymous memory: zero pages, mapped on first write
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # Linux with transparent huge pages "always"
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype).reshape(shape)


def mapped_file(path: Path) -> np.ndarray:
    """The file's bytes, memory-mapped read-only (a plain ndarray: np.memmap's subclass bookkeeping made small
    operations on results computed from it several times slower), with the OS asked to map them by 2 MB pages
    (MADV_HUGEPAGE; Linux, transparent huge pages "madvise" or "always"). Decoding streams every weight once a
    token, and through 4 KB pages it was slower: GPT-2 small 6% and SmolLM2 17% a token, weights copied to
    4 KB against 2 MB pages, alternating in one process (7 of 7 pairs each). Linux honours the advice where the
    file's pages are read in after it; pages already cached keep the size they were read with."""
    with open(path, "rb") as f:
        memory = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            memory.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # a kernel without transparent huge pages
            pass
    return np.frombuffer(memory, np.uint8)
