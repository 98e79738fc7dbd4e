"""GPT-2's Conv1D matrices repacked row-major once into llmx's cache (engine/packed.py)."""

import itertools
import os
import re
import shutil

import numpy as np
import pytest

from llmx.engine import load
from llmx.engine.formats.pack import cache_dir

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
    for model in (first, second):  # the tied embedding column-major from the pack (packed.column_major)
        assert model.weights.embed.flags.f_contiguous and not model.weights.embed.flags.c_contiguous
        assert model.weights.unembed is model.weights.embed
        np.testing.assert_array_equal(model.weights.embed, views.weights.embed)
        np.testing.assert_allclose(logits(model), logits(views), atol=1e-5)
    assert views.weights.embed.flags.c_contiguous  # as in the file


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


def test_writing_a_pack_removes_those_of_older_layouts_of_its_kind(fresh_gpt2, fresh_gguf):
    from llmx.engine.packed import GGUF_LAYOUT, LAYOUT

    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = "0a1b2c3d4e5f60718293a4b5"
    gpt2_old = [f"gpt2-{key}.safetensors", *(f"gpt2-v{n}-{key}.safetensors" for n in range(2, LAYOUT))]
    gguf_old = [f"gguf-v{n}-{key}.safetensors" for n in range(1, GGUF_LAYOUT)]
    kept = [f"gpt2-v{LAYOUT + 1}-{key}.safetensors", f"gguf-v{GGUF_LAYOUT + 1}-{key}.safetensors",  # a later llmx's
            f"spm-{key}.npz", "gguf-added.safetensors"]  # and what is no pack
    for name in [*gpt2_old, *gguf_old, *kept]:
        (folder / name).write_bytes(b"x")
    assert gpt2_old and gguf_old
    load(str(fresh_gguf))
    assert not any((folder / name).exists() for name in gguf_old)
    assert all((folder / name).exists() for name in [*gpt2_old, *kept])
    load(str(fresh_gpt2))
    assert not any((folder / name).exists() for name in gpt2_old)
    assert all((folder / name).exists() for name in kept) and packs() and gguf_packs()
    for name in kept:
        (folder / name).unlink()


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
    from llmx.engine.formats.pack import host_tag

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


# GGUF files: their weights dequantized (and un-permuted, fused) once, then memory-mapped from the pack.

def gguf_packs():
    return sorted(cache_dir().glob("gguf-*.safetensors"))


def write_llama_gguf(path, tiny_llama, gpt2_vocab, seed=None):
    """The tiny Llama as a GGUF file, two matrices quantized; `seed`: its weights perturbed (same size)."""
    from gguf import GGMLQuantizationType as T
    from test_gguf import LLAMA_META, gpt2_tokenizer_metadata, llama_gguf_tensors, write_gguf

    tensors = llama_gguf_tensors(tiny_llama)
    if seed is not None:
        rng = np.random.default_rng(seed)
        tensors = {name: t + rng.normal(0, 0.01, t.shape).astype(t.dtype) for name, t in tensors.items()}
    types = {"blk.0.attn_q.weight": T.Q8_0, "blk.1.ffn_up.weight": T.Q4_1}
    return write_gguf(path, "llama", {**LLAMA_META, **gpt2_tokenizer_metadata(gpt2_vocab)}, tensors, types)


@pytest.fixture
def fresh_gguf(tmp_path, tiny_llama, gpt2_vocab):
    """A tiny Llama GGUF file never loaded before (its weights perturbed by a new seed), so never packed."""
    return write_llama_gguf(tmp_path / "fresh.gguf", tiny_llama, gpt2_vocab, next(SEEDS))


def no_dequantizing(monkeypatch):
    from llmx.engine.formats import gguf

    def refuse(*args):
        raise AssertionError("dequantized, but the pack should have been used")

    monkeypatch.setattr(gguf, "dequantize_tensor", refuse)


def test_a_gguf_file_is_dequantized_once_and_mapped_after(fresh_gguf, monkeypatch):
    from llmx.engine.packed import flatten

    before = gguf_packs()
    notices = []
    first = load(str(fresh_gguf), on_notice=notices.append)
    [pack] = sorted(set(gguf_packs()) - set(before))
    assert len(notices) == 1 and "storing the dequantized weights" in notices[0], notices
    assert re.search(r"once: \d+ MB into ", notices[0]), notices
    no_dequantizing(monkeypatch)
    again = []
    second = load(str(fresh_gguf), on_notice=again.append)
    assert again == [] and gguf_packs() == sorted([*before, pack])
    np.testing.assert_array_equal(logits(second), logits(first))  # bit-identical
    for name, array in flatten(second.weights).items():
        assert array.flags.c_contiguous and not array.flags.writeable, name  # a read-only map of the pack
        assert array.ctypes.data % 64 == 0, name
    assert (second.weights.unembed is second.weights.embed) == (first.weights.unembed is first.weights.embed)
    monkeypatch.undo()
    for name, array in flatten(first.weights).items():
        np.testing.assert_array_equal(array, flatten(second.weights)[name])


def test_a_gguf_file_rewritten_in_place_with_the_same_mtime_gets_a_new_pack(fresh_gguf, tmp_path, tiny_llama,
                                                                             gpt2_vocab, monkeypatch):
    load(str(fresh_gguf))
    before = gguf_packs()
    stat = fresh_gguf.stat()
    other = write_llama_gguf(tmp_path / "other.gguf", tiny_llama, gpt2_vocab, next(SEEDS))
    fresh_gguf.write_bytes(other.read_bytes())
    os.utime(fresh_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (fresh_gguf.stat().st_size, fresh_gguf.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    notices = []
    rewritten = load(str(fresh_gguf), on_notice=notices.append)
    assert len(gguf_packs()) == len(before) + 1 and "storing" in notices[0]
    monkeypatch.setenv("LLMX_PACK", "0")
    np.testing.assert_array_equal(logits(rewritten), logits(load(str(other))))


def test_a_gguf_file_s_tied_embedding_is_column_major_packed_or_not(fresh_gguf, monkeypatch):
    """For the unembedding's matrix-vector product (packed.column_major), and the pack keeps that layout; a separate
    output matrix and the embedding stay row-major."""
    first, second = load(str(fresh_gguf)), load(str(fresh_gguf))  # the first writes the pack, the second maps it
    monkeypatch.setenv("LLMX_PACK", "0")
    built = load(str(fresh_gguf))
    for model in (first, second, built):
        w = model.weights
        assert (w.unembed is w.embed) == model.config.tied and w.embed.shape == (model.config.n_vocab, 64)
        assert w.embed.flags.f_contiguous == model.config.tied and w.embed.flags.c_contiguous != model.config.tied
        assert w.unembed.flags.c_contiguous != model.config.tied
        np.testing.assert_array_equal(w.embed, built.weights.embed)
        np.testing.assert_array_equal(logits(model), logits(built))


def test_llmx_pack_0_dequantizes_a_gguf_file_and_writes_no_pack(fresh_gguf, monkeypatch):
    from llmx.engine.formats import gguf

    monkeypatch.setenv("LLMX_PACK", "0")
    calls = []
    dequantize = gguf.dequantize_tensor
    monkeypatch.setattr(gguf, "dequantize_tensor", lambda *args: calls.append(args) or dequantize(*args))
    before, notices = gguf_packs(), []
    model = load(str(fresh_gguf), on_notice=notices.append)
    assert gguf_packs() == before and notices == [] and calls
    assert model.weights.blocks[0].w_qkv.w.flags.writeable  # built in memory, not mapped


def test_an_unwritable_cache_dequantizes_the_gguf_file_with_one_notice(fresh_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMX_PACK", "0")
    expected = logits(load(str(fresh_gguf)))
    monkeypatch.delenv("LLMX_PACK")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("LLMX_CACHE", str(blocker / "llmx"))
    notices = []
    model = load(str(fresh_gguf), on_notice=notices.append)
    assert len(notices) == 1 and "cannot write" in notices[0] and "dequantizing them on every load" in notices[0]
    np.testing.assert_array_equal(logits(model), expected)
