"""GPT-2's Conv1D matrices repacked row-major once into llmx's cache (engine/packed.py)."""

import shutil

import numpy as np
import pytest

from llmx.engine import load
from llmx.engine.packed import cache_dir


@pytest.fixture
def fresh_gpt2(tmp_path, tiny_gpt2):
    """A copy of the tiny GPT-2 that has never been loaded, so never packed."""
    return shutil.copytree(tiny_gpt2, tmp_path / "fresh")


def packs():
    return sorted(cache_dir().glob("gpt2-*.safetensors"))


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
    assert all(getattr(block, name).w.flags.c_contiguous for name in ("c_attn", "c_proj", "c_fc", "mlp_c_proj"))
    monkeypatch.setenv("LLMX_PACK", "0")
    views = load(str(fresh_gpt2))
    assert not views.weights.blocks[1].c_fc.w.flags.c_contiguous  # [in, out] on disk, seen as [out, in]
    np.testing.assert_array_equal(views.weights.blocks[1].c_fc.w, block.c_fc.w)
    ids = [39, 724, 78, 11, 616, 1438, 318]
    for model in (first, second):
        np.testing.assert_allclose(model.forward(ids, all_logits=True)[0], views.forward(ids, all_logits=True)[0],
                                   atol=1e-5)


def test_a_changed_checkpoint_gets_a_new_pack(fresh_gpt2):
    load(str(fresh_gpt2))
    before = packs()
    (fresh_gpt2 / "model.safetensors").touch()  # a new modification time: maybe new weights
    load(str(fresh_gpt2))
    assert len(packs()) == len(before) + 1


def test_a_damaged_pack_is_not_used_and_is_rebuilt(fresh_gpt2):
    before = set(packs())
    load(str(fresh_gpt2))
    [pack] = set(packs()) - before
    pack.write_bytes(pack.read_bytes()[:1000])
    model = load(str(fresh_gpt2))
    assert not pack.exists() and not model.weights.blocks[0].c_fc.w.flags.c_contiguous
    notices = []
    load(str(fresh_gpt2), on_notice=notices.append)
    assert pack.exists() and "packing" in notices[0]


def test_an_unwritable_cache_falls_back_to_the_views(fresh_gpt2, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("LLMX_CACHE", str(blocker / "llmx"))
    notices = []
    model = load(str(fresh_gpt2), on_notice=notices.append)
    assert "cannot write" in notices[-1] and not model.weights.blocks[0].c_fc.w.flags.c_contiguous
