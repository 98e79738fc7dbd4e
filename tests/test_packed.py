"""GPT-2's Conv1D matrices repacked row-major once into llmx's cache (engine/packed.py)."""

import itertools
import os
import shutil

import numpy as np
import pytest

from llmx.engine import load
from llmx.engine.packed import cache_dir

SEEDS = itertools.count(1)


def perturbed_copy(source, target, seed):
    """A copy of a checkpoint folder whose weights differ (so its pack is not in the cache yet)."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(source, target, dirs_exist_ok=True)
    tensors = load_file(source / "model.safetensors")
    rng = np.random.default_rng(seed)
    tensors = {name: t + rng.normal(0, 0.01, t.shape).astype(t.dtype) for name, t in tensors.items()}
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.fixture
def fresh_gpt2(tmp_path, tiny_gpt2):
    """A variant of the tiny GPT-2 that has never been loaded, so never packed."""
    return perturbed_copy(tiny_gpt2, tmp_path / "fresh", next(SEEDS))


def packs():
    return sorted(cache_dir().glob("gpt2-*.safetensors"))


def logits(model, ids=(39, 724, 78, 11, 616, 1438, 318)):
    return model.forward(list(ids), all_logits=True)[0]


def test_first_load_packs_later_loads_map_the_pack(fresh_gpt2, monkeypatch):
    before = packs()
    notices = []
    first = load(str(fresh_gpt2), on_notice=notices.append)
    [new] = sorted(set(packs()) - set(before))
    assert len(notices) == 1 and "packing the weights" in notices[0]
    again = []
    second = load(str(fresh_gpt2), on_notice=again.append)
    assert again == [] and packs() == sorted([*before, new])
    block = second.weights.blocks[1]
    assert all(getattr(block, name).w.flags.c_contiguous for name in ("w_qkv", "w_o", "w_in", "w_out"))
    monkeypatch.setenv("LLMX_PACK", "0")
    views = load(str(fresh_gpt2))
    assert not views.weights.blocks[1].w_in.w.flags.c_contiguous  # [in, out] on disk, seen as [out, in]
    np.testing.assert_array_equal(views.weights.blocks[1].w_in.w, block.w_in.w)
    for model in (first, second):
        np.testing.assert_allclose(logits(model), logits(views), atol=1e-5)


def test_the_pack_follows_the_content_not_the_modification_time(fresh_gpt2, tmp_path, tiny_gpt2, monkeypatch):
    load(str(fresh_gpt2))
    before = packs()
    (fresh_gpt2 / "model.safetensors").touch()  # a new modification time, the same bytes: the same pack
    notices = []
    load(str(fresh_gpt2), on_notice=notices.append)
    assert packs() == before and notices == []
    # Rewritten in place with other weights of the same size, and the old modification time put back.
    weights = fresh_gpt2 / "model.safetensors"
    stat = weights.stat()
    other = perturbed_copy(tiny_gpt2, tmp_path / "other", next(SEEDS))
    weights.write_bytes((other / "model.safetensors").read_bytes())
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    rewritten = load(str(fresh_gpt2))
    assert len(packs()) == len(before) + 1
    monkeypatch.setenv("LLMX_PACK", "0")
    np.testing.assert_allclose(logits(rewritten), logits(load(str(other))), atol=1e-5)


def test_a_damaged_pack_is_not_used_and_is_rebuilt(fresh_gpt2):
    before = set(packs())
    load(str(fresh_gpt2))
    [pack] = set(packs()) - before
    pack.write_bytes(pack.read_bytes()[:1000])
    notices = []
    model = load(str(fresh_gpt2), on_notice=notices.append)
    assert pack.exists() and "packing" in notices[0] and model.weights.blocks[0].w_in.w.flags.c_contiguous


def test_a_pack_whose_data_was_overwritten_is_not_used(fresh_gpt2, monkeypatch):
    before = set(packs())
    expected = logits(load(str(fresh_gpt2)))
    [pack] = set(packs()) - before
    data = bytearray(pack.read_bytes())
    data[-4000:] = np.full(1000, np.nan, np.float32).tobytes()  # same size, header intact
    pack.write_bytes(bytes(data))
    notices = []
    model = load(str(fresh_gpt2), on_notice=notices.append)
    assert "packing" in notices[0]
    np.testing.assert_allclose(logits(model), expected, atol=1e-5)


def test_a_damaged_pack_in_a_read_only_cache_falls_back_to_the_views(fresh_gpt2, monkeypatch):
    import errno
    import pathlib

    expected = logits(load(str(fresh_gpt2)))
    pack = max(packs(), key=lambda p: p.stat().st_mtime_ns)
    pack.write_bytes(pack.read_bytes()[:1000])

    def read_only(path, missing_ok=False):  # what unlink does on a read-only file system, even for root
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    notices = []
    model = load(str(fresh_gpt2), on_notice=notices.append)
    assert len(notices) == 1 and "damaged and cannot be removed (Read-only file system)" in notices[0], notices
    assert not model.weights.blocks[0].w_in.w.flags.c_contiguous
    np.testing.assert_allclose(logits(model), expected, atol=1e-5)


def test_an_unwritable_cache_falls_back_to_the_views(fresh_gpt2, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("LLMX_CACHE", str(blocker / "llmx"))
    notices = []
    model = load(str(fresh_gpt2), on_notice=notices.append)
    assert "cannot write" in notices[-1] and not model.weights.blocks[0].w_in.w.flags.c_contiguous


def test_partial_files_of_killed_writers_are_removed(fresh_gpt2, tmp_path, monkeypatch):
    from llmx.engine.packed import host_tag

    monkeypatch.setenv("LLMX_CACHE", str(tmp_path / "cache"))
    cache_dir().mkdir()
    dead = _dead_pid()
    killed = cache_dir() / f"gpt2-abc.safetensors.{dead}.{host_tag()}.partial"
    old = cache_dir() / "gpt2-def.safetensors.12345.partial"  # an old-style name, untouched for two hours
    live = cache_dir() / f"gpt2-ghi.safetensors.{os.getpid()}.{host_tag()}.partial"  # this process: alive
    for path in (killed, old, live):
        path.write_bytes(b"half a pack")
    os.utime(old, (os.stat(old).st_atime - 7200, os.stat(old).st_mtime - 7200))
    load(str(fresh_gpt2))
    assert (killed.exists(), old.exists(), live.exists()) == (False, False, True)


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
