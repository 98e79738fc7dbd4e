"""Damaged and hostile model files, written here: each fails at load with one CheckpointError (or another
LlmxError) line naming the problem, quickly, before any work; through the CLI, exit 1 and one `Error:` line."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from conftest import write_tiny_llama
from llmx.engine import CheckpointError, LlmxError, load, load_tokenizer
from llmx.engine.formats.gguf import read_gguf_header
from llmx.engine.hub import cached_models
from llmx.engine.formats.pack import cache_dir
from llmx.engine.formats.safetensors import read_safetensors
from test_cli import run
from test_gguf import LLAMA_META, gpt2_tokenizer_metadata, llama_gguf_tensors, write_gguf


def one_line_error(call, *words, kind=CheckpointError):
    with pytest.raises(kind) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message
    return message


def assert_cli_error(path, *words):
    r = run("predict", "-m", str(path), "Hullo")
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r
    assert "Traceback" not in r.stderr and all(word in r.stderr for word in words), r.stderr


# config.json: a copy of a tiny model's folder (weights linked, not copied) with one value changed.

def hf_variant(source, target, *, config=None, raw_config: str | None = None):
    target.mkdir()
    for item in source.iterdir():
        if item.name != "config.json":
            (target / item.name).symlink_to(item)
    settings = {**json.loads((source / "config.json").read_text()), **(config or {})}
    (target / "config.json").write_text(raw_config if raw_config is not None else json.dumps(settings))
    return target


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, gpt2_vocab):
    return write_tiny_llama(tmp_path_factory.mktemp("llama"), gpt2_vocab, tied=True)


GPT2_CONFIGS = {
    "heads-do-not-divide": ({"n_head": 3}, ["n_embd (64) is not a multiple of n_head (3)"]),
    "zero-heads": ({"n_head": 0}, ["n_head is 0", "whole number"]),
    "negative-layers": ({"n_layer": -1}, ["n_layer is -1"]),
    "layers-as-text": ({"n_layer": "2"}, ["n_layer is '2'"]),
    "layers-as-float": ({"n_layer": 2.5}, ["n_layer is 2.5"]),
    "layers-as-bool": ({"n_layer": True}, ["n_layer is True"]),
    "huge-layer-count": ({"n_layer": 2 ** 40}, ["n_layer is 1099511627776"]),
    "fewer-layers-than-tensors": ({"n_layer": 1}, ["n_layer is 1", "blocks 0..1"]),
    "more-layers-than-tensors": ({"n_layer": 2 ** 31}, ["n_layer is 2147483648", "blocks 0..1"]),
    "zero-vocabulary": ({"vocab_size": 0}, ["vocab_size is 0"]),
    "zero-context": ({"n_positions": 0}, ["n_positions is 0"]),
    "huge-context": ({"n_positions": 10 ** 30}, ["n_positions is 1000000000000000000000000000000"]),
    "negative-epsilon": ({"layer_norm_epsilon": -1}, ["layer_norm_epsilon is -1", "positive"]),
    "eos-outside-vocabulary": ({"eos_token_id": 99999999}, ["eos_token_id is 99999999", "outside the vocabulary"]),
    "eos-list-outside": ({"eos_token_id": [50256, -1]}, ["eos_token_id is [50256, -1]"]),
    "no-model-type": ({"model_type": None}, ["model_type None is not supported"]),
    "heads-as-object": ({"n_head": {"a": 1}}, ["n_head is {'a': 1}"]),
}


@pytest.mark.parametrize("change,words", GPT2_CONFIGS.values(), ids=GPT2_CONFIGS.keys())
def test_gpt2_config_values_are_checked(tmp_path, tiny_gpt2, change, words):
    folder = hf_variant(tiny_gpt2, tmp_path / "model", config=change)
    one_line_error(lambda: load(str(folder)), "config.json", *words)


LLAMA_CONFIGS = {
    "kv-heads-do-not-divide": ({"num_key_value_heads": 3}, ["num_attention_heads (4) is not a multiple of "
                                                            "num_key_value_heads (3)"]),
    "zero-kv-heads": ({"num_key_value_heads": 0}, ["num_key_value_heads is 0"]),
    "odd-head-size": ({"num_attention_heads": 64, "num_key_value_heads": 64, "head_dim": None}, ["is odd"]),
    "zero-rope-theta": ({"rope_theta": 0}, ["rope_theta is 0"]),
    "missing-width": ({"intermediate_size": None}, ["lacks 'intermediate_size'"]),
    "bos-outside-vocabulary": ({"bos_token_id": 50257}, ["bos_token_id is 50257"]),
    "rope-scaling-a-list": ({"rope_scaling": [1]}, ["rope_scaling [1] is not supported"]),
}


@pytest.mark.parametrize("change,words", LLAMA_CONFIGS.values(), ids=LLAMA_CONFIGS.keys())
def test_llama_config_values_are_checked(tmp_path, llama_dir, change, words):
    folder = hf_variant(llama_dir, tmp_path / "model", config=change)
    one_line_error(lambda: load(str(folder)), "config.json", *words)


RAW_CONFIGS = {
    "a-list": ("[1, 2, 3]", "is a JSON list, not an object"),
    "huge-integer": ('{"model_type": "gpt2", "n_layer": ' + "1" * 5000 + "}", "a number too long to read"),
    "deep-nesting": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "not-utf8": (b"\xff\xfe{".decode("latin-1"), "not valid JSON"),
    "truncated": ('{"model_type": "gpt2", ', "not valid JSON"),
}


@pytest.mark.parametrize("text,words", RAW_CONFIGS.values(), ids=RAW_CONFIGS.keys())
def test_config_json_that_python_parses_badly(tmp_path, tiny_gpt2, text, words):
    folder = hf_variant(tiny_gpt2, tmp_path / "model", raw_config=text)
    if text.startswith("\xff"):
        (folder / "config.json").write_bytes(b"\xff\xfe{")
    one_line_error(lambda: load(str(folder)), "config.json", words)


# safetensors headers: offsets inside the file, in order, not overlapping, sized by the shape.

def write_raw_safetensors(path, header, data: bytes = bytes(64)):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def entry(begin, end, shape=(4,), dtype="F32"):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


SAFETENSORS_HEADERS = {
    "overlapping": ({"a": entry(0, 16), "b": entry(8, 24)}, "share bytes"),
    "same-bytes": ({"a": entry(0, 16), "b": entry(0, 16)}, "share bytes"),
    "negative-offset": ({"a": entry(-16, 0)}, "corrupt entry for tensor 'a'"),
    "end-before-begin": ({"a": entry(16, 0)}, "corrupt entry for tensor 'a'"),
    "past-the-end": ({"a": entry(64, 80)}, "truncated"),
    "size-not-the-shape": ({"a": entry(0, 12)}, "corrupt entry for tensor 'a'"),
    "negative-dimension": ({"a": entry(0, 16, shape=(-4,))}, "corrupt entry for tensor 'a'"),
    "offsets-as-text": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, "corrupt entry"),
    "no-dtype": ({"a": {"shape": [4], "data_offsets": [0, 16]}}, "corrupt entry"),
    "huge-integer": (b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 16]}}',
                     "corrupt safetensors header"),
    "deep-nesting": (b"[" * 100_000 + b"]" * 100_000, "corrupt safetensors header"),
}


@pytest.mark.parametrize("header,words", SAFETENSORS_HEADERS.values(), ids=SAFETENSORS_HEADERS.keys())
def test_safetensors_offsets_are_checked(tmp_path, header, words):
    path = write_raw_safetensors(tmp_path / "model.safetensors", header)
    one_line_error(lambda: read_safetensors(path), str(path), words)


def overlapping_copy(tiny_gpt2, target):
    """The tiny GPT-2 whose header points one bias at the bytes of another of the same size."""
    target.mkdir()
    for item in tiny_gpt2.iterdir():
        if item.name != "model.safetensors":
            (target / item.name).symlink_to(item)
    data = (tiny_gpt2 / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["transformer.h.1.ln_1.bias"]["data_offsets"] = header["transformer.h.0.ln_1.bias"]["data_offsets"]
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n
    text = text.ljust(n)  # the header's length is unchanged: JSON allows trailing spaces
    (target / "model.safetensors").write_bytes(data[:8] + text + data[8 + n:])
    return target


def test_overlapping_tensors_do_not_load(tmp_path, tiny_gpt2):
    folder = overlapping_copy(tiny_gpt2, tmp_path / "model")
    one_line_error(lambda: load(str(folder)), "share bytes", "h.0.ln_1.bias", "h.1.ln_1.bias")


SHARD_NAMES = {
    "absolute": "/etc/passwd",
    "climbing": "../other/model.safetensors",
    "climbing-inside": "shards/../../x.safetensors",
    "not-a-string": 7,
}


@pytest.mark.parametrize("shard", SHARD_NAMES.values(), ids=SHARD_NAMES.keys())
def test_shard_indexes_name_only_files_inside_the_folder(tmp_path, tiny_gpt2, shard):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "vocab.json", "merges.txt"):
        (folder / name).symlink_to(tiny_gpt2 / name)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"wte.weight": shard}}))
    words = ["not a file inside the model folder"] if isinstance(shard, str) else ["no valid weight_map"]
    one_line_error(lambda: load(str(folder)), "model.safetensors.index.json", *words)


def test_the_tokenizer_is_checked_before_the_pack_is_written(tmp_path, tiny_gpt2):
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(tiny_gpt2 / "config.json", folder / "config.json")
    shutil.copy(tiny_gpt2 / "merges.txt", folder / "merges.txt")
    (folder / "vocab.json").write_text("{not json")
    tensors = {name: t + 1 for name, t in load_file(tiny_gpt2 / "model.safetensors").items()}  # never packed
    save_file(tensors, folder / "model.safetensors")
    before = sorted(cache_dir().glob("gpt2-*"))
    with pytest.raises(LlmxError):
        load(str(folder))
    assert sorted(cache_dir().glob("gpt2-*")) == before


# GGUF: metadata checked by name, counts checked against the bytes left, tensor offsets checked.

@pytest.fixture(scope="module")
def llama_tensors(llama_dir):
    return llama_gguf_tensors(llama_dir)


@pytest.fixture(scope="module")
def tokenizer_meta(gpt2_vocab):
    return gpt2_tokenizer_metadata(gpt2_vocab)


def llama_gguf(path, tensors, tokenizer_meta, **meta):
    return write_gguf(path, "llama", {**LLAMA_META, **tokenizer_meta, **meta}, tensors)


GGUF_META = {
    "heads-do-not-divide": ({"llama.attention.head_count": 3}, ["llama.embedding_length (64) is not a multiple of "
                                                                "llama.attention.head_count (3)"]),
    "zero-heads": ({"llama.attention.head_count": 0}, ["llama.attention.head_count is 0"]),
    "kv-heads-do-not-divide": ({"llama.attention.head_count_kv": 3}, ["head_count (4) is not a multiple of "
                                                                      "llama.attention.head_count_kv (3)"]),
    "huge-block-count": ({"llama.block_count": 2 ** 31}, ["llama.block_count is 2147483648", "blocks 0..1"]),
    "fewer-blocks": ({"llama.block_count": 1}, ["llama.block_count is 1", "blocks 0..1"]),
    "zero-context": ({"llama.context_length": 0}, ["llama.context_length is 0"]),
    "zero-alignment": ({"general.alignment": 0}, ["general.alignment is 0"]),
    "width-as-text": ({"llama.embedding_length": "64"}, ["llama.embedding_length is '64'"]),
    "bos-outside-vocabulary": ({"tokenizer.ggml.bos_token_id": 10 ** 6}, ["tokenizer.ggml.bos_token_id is 1000000"]),
    "eos-outside-vocabulary": ({"tokenizer.ggml.eos_token_id": 50257}, ["tokenizer.ggml.eos_token_id is 50257"]),
}


@pytest.mark.parametrize("change,words", GGUF_META.values(), ids=GGUF_META.keys())
def test_gguf_metadata_values_are_checked(tmp_path, llama_tensors, tokenizer_meta, change, words):
    path = llama_gguf(tmp_path / "tiny.gguf", llama_tensors, tokenizer_meta, **change)
    one_line_error(lambda: load(str(path)), "tiny.gguf", *words)


def gguf_bytes(n_tensors: int, n_kv: int, body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body + bytes(64)


def gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


HUGE_COUNTS = {
    "key-values": (gguf_bytes(0, 2 ** 60), "truncated"),
    "tensors": (gguf_bytes(2 ** 60, 0), "truncated"),
    "array-items": (gguf_bytes(0, 1, gguf_string(b"k") + struct.pack("<IIQ", 9, 4, 2 ** 40)), "truncated"),
    "array-of-strings": (gguf_bytes(0, 1, gguf_string(b"k") + struct.pack("<IIQ", 9, 8, 2 ** 40)), "truncated"),
    "string-length": (gguf_bytes(0, 1, struct.pack("<Q", 2 ** 60)), "truncated"),
    "dimensions": (gguf_bytes(1, 0, gguf_string(b"t") + struct.pack("<I", 2 ** 31)), "2147483648 dimensions"),
    "tensor-type": (gguf_bytes(1, 0, gguf_string(b"t") + struct.pack("<IQI", 1, 32, 999)), "unknown type number 999"),
    "value-type": (gguf_bytes(0, 1, gguf_string(b"k") + struct.pack("<I", 99)), "unknown type number 99"),
    "empty": (b"", "GGUF magic"),
    "text": (b"these are not weights\n" * 100, "GGUF magic"),
}


@pytest.mark.parametrize("data,words", HUGE_COUNTS.values(), ids=HUGE_COUNTS.keys())
def test_gguf_counts_are_checked_before_any_loop(tmp_path, data, words):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(data)
    message = one_line_error(lambda: load(str(path)), str(path), "not a readable GGUF file", words)
    assert "struct" not in message and "buffer" not in message  # no Python internals


def with_offset(path, tensor: str, offset: int):
    """The GGUF file at `path` with the data offset of `tensor` changed in its tensor description."""
    header = read_gguf_header(path, arrays=False)
    [info] = [t for t in header.tensors if t.name == tensor]
    data = bytearray(path.read_bytes())
    at = data.index(gguf_string(tensor.encode())) + 8 + len(tensor) + 4 + 8 * len(info.shape) + 4
    assert struct.unpack_from("<Q", data, at)[0] == info.offset
    struct.pack_into("<Q", data, at, offset)
    path.write_bytes(bytes(data))
    return {t.name: t.offset for t in header.tensors}


def test_gguf_tensor_offsets_are_checked(tmp_path, llama_tensors, tokenizer_meta):
    path = llama_gguf(tmp_path / "tiny.gguf", llama_tensors, tokenizer_meta)
    original = path.read_bytes()
    offsets = with_offset(path, "blk.1.ffn_down.weight", 0)
    one_line_error(lambda: load(str(path)), "share bytes", "blk.1.ffn_down.weight")
    for offset, words in [(offsets["blk.1.ffn_down.weight"] + 4, "not a multiple of general.alignment"),
                          (2 ** 40, "truncated")]:
        path.write_bytes(original)
        with_offset(path, "blk.1.ffn_down.weight", offset)
        one_line_error(lambda: load(str(path)), "blk.1.ffn_down.weight", words)


def test_only_the_tokenizers_metadata_arrays_are_built(tmp_path, llama_tensors, tokenizer_meta):
    from llmx.engine.formats.gguf import TOKENIZER_ARRAYS

    path = llama_gguf(tmp_path / "tiny.gguf", llama_tensors, tokenizer_meta,
                      **{"general.junk": list(range(100_000)), "general.junk_strings": ["x"] * 1000})
    header = read_gguf_header(path, arrays=TOKENIZER_ARRAYS)
    assert header.meta["general.junk"] is None and header.meta["general.junk_strings"] is None
    assert header.meta["tokenizer.ggml.tokens"] == tokenizer_meta["tokenizer.ggml.tokens"]
    assert load_tokenizer(str(path)).encode("Hullo, my name is") == [39, 724, 78, 11, 616, 1438, 318]


# The Hugging Face cache scan and model names that are not usable paths.

def test_the_cache_scan_survives_a_damaged_cache(tmp_path, tiny_gpt2):
    hub = tmp_path / "hub"
    snapshot = hub / "models--good--model" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (hub / "models--good--model" / "refs").mkdir()
    (hub / "models--good--model" / "refs" / "main").write_text("abc")
    (snapshot / "config.json").symlink_to(tiny_gpt2 / "config.json")
    (hub / "models--a-file--where-a-folder-should-be").write_text("")
    dangling = hub / "models--dangling--link" / "snapshots" / "abc"
    dangling.mkdir(parents=True)
    (dangling / "model.safetensors").symlink_to(hub / "models--dangling--link" / "blobs" / "missing")
    (hub / "models--no--snapshots").mkdir()
    (hub / "models--no--snapshots" / "snapshots").write_text("a file")
    assert [model.repo_id for model in cached_models(hub)] == ["good/model"]
    (tmp_path / "cache-is-a-file").write_text("")
    assert cached_models(tmp_path / "cache-is-a-file") == []
    assert cached_models(tmp_path / ("x" * 300)) == []


# A handful of the above through the CLI: exit 1, one `Error:` line, no traceback.

def test_hostile_files_through_the_cli(tmp_path, tiny_gpt2, llama_tensors, tokenizer_meta):
    assert_cli_error(hf_variant(tiny_gpt2, tmp_path / "three-heads", config={"n_head": 3}), "n_head (3)")
    assert_cli_error(hf_variant(tiny_gpt2, tmp_path / "list", raw_config="[]"), "not an object")
    assert_cli_error(overlapping_copy(tiny_gpt2, tmp_path / "overlap"), "share bytes")
    text = tmp_path / "notes.gguf"
    text.write_text("these are not weights\n")
    assert_cli_error(text, "not a readable GGUF file", "GGUF magic")
    huge = llama_gguf(tmp_path / "huge.gguf", llama_tensors, tokenizer_meta, **{"llama.block_count": 2 ** 31})
    assert_cli_error(huge, "llama.block_count is 2147483648")
    r = run("models", "show", "y" * 300)
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r
    assert "File name too long" in r.stderr and "Traceback" not in r.stderr


TOKENIZER_FILES = {  # (file, its text, words of the error)
    "vocab-huge-integer": ("vocab.json", '{"a": ' + "1" * 5000 + "}", "a number too long to read"),
    "vocab-deep-nesting": ("vocab.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "vocab-a-list": ("vocab.json", "[1, 2]", "is a JSON list, not an object"),
    "merges-not-utf8": ("merges.txt", "\udcff", "is not UTF-8 text"),
}


@pytest.mark.parametrize("name,text,words", TOKENIZER_FILES.values(), ids=TOKENIZER_FILES.keys())
def test_tokenizer_files_that_python_parses_badly(tmp_path, tiny_gpt2, name, text, words):
    folder = hf_variant(tiny_gpt2, tmp_path / "model")
    (folder / name).unlink()
    (folder / name).write_bytes(text.encode("utf-8", errors="surrogateescape"))
    one_line_error(lambda: load_tokenizer(str(folder)), name, words, kind=LlmxError)
