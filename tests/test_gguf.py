"""GGUF files: the real SmolLM2 Q4_1 against transformers reading the same file, tiny Llama and GPT-2
GGUFs written here against their Hugging Face directories, and bad files failing with one-line errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import conftest
import float64
from conftest import GPT2_EOT
from llmx.engine import CheckpointError, LlmxError, Sampling, TokenizerError, load, load_tokenizer
from llmx.engine.describe import describe

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["Hello", "def fib(n):\n    return", "Les élèves 🙂 ont 12345 678"]
TEXTS = [
    "Hullo, my name is",
    "  leading spaces and trailing   ",
    "numbers: 12345 678, 3.14159 and 1,000,000",
    "new\nlines\n\n\n  indented\r\nwindows",
    "unicode: naïve café, Ελληνικά, 日本語のテキスト, emoji 🙂👍🏽 and 🇫🇷",
    "I'll say it's DON'T we've THEY'RE",
    "def f(x):\n    return x ** 2  # square\n",
]
# transformers turns the GGUF's "smollm" pre-tokenizer into plain ByteLevel, which splits spaces before a
# digit differently from llama.cpp and from SmolLM2's own tokenizer.json (Digits first, then ByteLevel).
SPACES_BEFORE_DIGITS = ["x  1", "a   12 b", "\n\n 1", "tab\t\t22", "1 2  3   4"]
ODD_BYTES = ["control\x04byte", "plane 4: \U00040000"]  # bytes SmolLM2 has no token for


# The real SmolLM2 file, loaded once per session by llmx and by transformers.

@pytest.fixture(scope="session")
def smollm_path():
    return conftest.test_data(SMOLLM2)


@pytest.fixture(scope="session")
def smollm(smollm_path):
    return load(str(smollm_path))


@pytest.fixture(scope="session")
def reference(smollm_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm_path.parent, gguf_file=smollm_path.name,
                                                dtype="float32").eval()


@pytest.fixture(scope="session")
def reference_tokenizer(smollm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_path.parent, gguf_file=smollm_path.name)


@pytest.fixture(scope="module")
def smollm64(smollm):
    return float64.llmx_float64(smollm)


@pytest.fixture(scope="module")
def reference64(reference):
    return float64.transformers_float64(reference)


# How far float32 logits may be from the exact ones (see tests/float64.py for why float64 is the reference).
# SmolLM2 has massive activations: on some tokens (the lone space, id 216, in PROMPTS[2]) the residual stream
# reaches a norm of ~860 in block 3 and later mostly cancels, and block 11's MLP amplifies what is left of the
# rounding about tenfold. There float32 rounding alone moves a logit by up to a few 1e-3, and how much depends
# on the BLAS's accumulation order, so on the CPU and the thread count. Measured at that position on a 2-core
# AVX-512 EPYC: llmx on OpenBLAS's SkylakeX kernels 2.4e-3, on its Haswell (AVX2) kernels 8.3e-4 with 2
# threads and 1.9e-4 with 1, Sandybridge (AVX) 1.5e-3, Nehalem (SSE) 1.1e-3 (OPENBLAS_CORETYPE=...);
# transformers on MKL 1.7e-4; llmx with its products re-ordered (k-blocks of 8 to 384 columns, one
# matrix-vector product per row, torch's matmul) 1.1e-4 to 3.2e-3. Every other position stays below 2e-4.
# 1e-2 is three times the worst order seen, and still tight for what users see: a logit error d moves every
# log-probability by at most 2d, so probabilities stay within 2%. A real mistake in the math (a norm's eps,
# a rotary base, a float16 intermediate) is caught by the float64 test below, whose bound is 2**29 times smaller.
SMOLLM2_FLOAT32_TOLERANCE = 1e-2


def test_smollm2_float64_logits_match_transformers_float64(smollm, smollm64, reference64):
    tolerance = float64.float64_tolerance(SMOLLM2_FLOAT32_TOLERANCE)  # ~2e-11
    for prompt in PROMPTS:
        ids = smollm.tokenizer.encode(prompt)
        logits, _ = smollm64.forward(ids, all_logits=True)
        assert logits.dtype == np.float64
        assert np.abs(logits - float64.logits(reference64, ids)).max() < tolerance, prompt


def test_smollm2_float32_logits_are_the_float64_ones_up_to_rounding(smollm, smollm64):
    for prompt in PROMPTS:
        ids = smollm.tokenizer.encode(prompt)
        logits, _ = smollm.forward(ids, all_logits=True)
        exact, _ = smollm64.forward(ids, all_logits=True)
        assert logits.dtype == np.float32
        assert np.abs(logits - exact).max() < SMOLLM2_FLOAT32_TOLERANCE, prompt


def test_smollm2_greedy_tokens_match_transformers(smollm, reference):
    import torch

    for prompt in ["Once upon a time"]:
        ids = smollm.tokenizer.encode(prompt)
        generation = smollm.generate(ids, 20, sampling=Sampling(temperature=0))
        ours = [step.id for step in generation]
        with torch.no_grad():
            out = reference.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[0, len(ids):].tolist()
        expected = [t for t in out if t not in smollm.tokenizer.eos_ids][:len(out)]
        assert ours == expected[:len(ours)] and len(ours) == len(expected), prompt


def test_smollm2_knows_the_capital_of_france(smollm):
    generation = smollm.generate(smollm.prompt_ids("The capital of France is"), 5, sampling=Sampling(temperature=0))
    assert "".join(step.text for step in generation).startswith(" Paris")


def test_smollm2_tokens_match_transformers(smollm, reference_tokenizer):
    for text in TEXTS + ODD_BYTES:
        assert smollm.tokenizer.encode(text) == reference_tokenizer.encode(text), text
    chat = "<|im_start|>user\nHi there<|im_end|>\n"
    assert smollm.tokenizer.encode(chat, special=True) == reference_tokenizer.encode(chat)
    assert 1 not in smollm.tokenizer.encode(chat)  # <|im_start|> is plain text unless asked for
    assert (smollm.tokenizer.bos_id, smollm.tokenizer.eos_ids, smollm.tokenizer.add_bos) == (1, {2}, False)


def test_smollm2_tokens_match_its_own_pre_tokenizer(smollm, reference_tokenizer):
    from tokenizers import Tokenizer, pre_tokenizers

    original = Tokenizer.from_str(reference_tokenizer.backend_tokenizer.to_str())
    original.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                      pre_tokenizers.ByteLevel(add_prefix_space=False)])
    for text in TEXTS + SPACES_BEFORE_DIGITS + ODD_BYTES:
        assert smollm.tokenizer.encode(text) == original.encode(text).ids, text
    assert [smollm.tokenizer.piece(i) for i in smollm.tokenizer.encode("x  1")] == [b"x", b"  ", b"1"]


def test_describe_smollm2(smollm_path):
    info = describe(smollm_path)
    assert info == dict(format="gguf", architecture="llama", parameters=134_515_008, quantization="Q4_1 (+Q8_0, F32)",
                        context_length=8192, n_layer=30, n_embd=576, n_head=9, n_kv_head=3, vocab_size=49152,
                        file_size=smollm_path.stat().st_size)


# Tiny GGUFs written here with gguf's GGUFWriter, the way llama.cpp's converter lays them out.

def gpt2_tokenizer_metadata(vocab_dir, pre: str | None = "gpt-2") -> dict:
    vocab = json.loads((vocab_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = [line for line in (vocab_dir / "merges.txt").read_text(encoding="utf-8").split("\n")
              if line and not line.startswith("#version")]
    tokens = sorted(vocab, key=vocab.get)
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.merges": merges, "tokenizer.ggml.token_type": [3 if t == GPT2_EOT else 1 for t in tokens],
            "tokenizer.ggml.bos_token_id": vocab[GPT2_EOT], "tokenizer.ggml.eos_token_id": vocab[GPT2_EOT]}
    return {key: value for key, value in meta.items() if value is not None}  # pre=None: the file names none


def write_gguf(path, arch: str, meta: dict, tensors: dict, types: dict | None = None):
    """A GGUF file; `types` maps a tensor name to a GGML type to quantize it to (default: as given)."""
    from gguf import GGUFWriter
    from gguf.quants import quantize

    writer = GGUFWriter(str(path), arch)
    for key, value in meta.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    for name, array in tensors.items():
        kind = (types or {}).get(name)
        if kind is None:
            writer.add_tensor(name, array)
        elif kind.name == "F64":  # a type llmx does not read
            writer.add_tensor(name, array.astype(np.float64))
        else:
            writer.add_tensor(name, quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's converter does to query/key rows: each head's rotary halves interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_gguf_tensors(directory, *, permute: bool = True) -> dict:
    """A tiny Llama-family folder's tensors under GGUF's names, biases included (Qwen2 has q/k/v biases);
    with `permute`, query/key rows interleaved as llama.cpp's converter does for llama (not for qwen2)."""
    from safetensors.numpy import load_file

    hf = load_file(directory / "model.safetensors")
    tensors = {"token_embd.weight": hf["model.embed_tokens.weight"], "output_norm.weight": hf["model.norm.weight"]}
    if "lm_head.weight" in hf:
        tensors["output.weight"] = hf["lm_head.weight"]
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(2):
        for hf_name, gguf_name in names.items():
            for kind in ("weight", "bias"):
                if f"model.layers.{i}.{hf_name}.{kind}" in hf:
                    tensors[f"blk.{i}.{gguf_name}.{kind}"] = hf[f"model.layers.{i}.{hf_name}.{kind}"]
        if permute:
            tensors[f"blk.{i}.attn_q.weight"] = llama_cpp_permute(tensors[f"blk.{i}.attn_q.weight"], 4)
            tensors[f"blk.{i}.attn_k.weight"] = llama_cpp_permute(tensors[f"blk.{i}.attn_k.weight"], 2)
    return tensors


LLAMA_META = {"llama.context_length": 64, "llama.embedding_length": 64, "llama.block_count": 2,
              "llama.feed_forward_length": 128, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
              "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.freq_base": 10000.0,
              "llama.rope.dimension_count": 16}


def write_tiny_llama_gguf(path, tiny_llama, gpt2_vocab, types=None, **meta):
    metadata = {**LLAMA_META, **gpt2_tokenizer_metadata(gpt2_vocab), **meta}
    return write_gguf(path, "llama", metadata, llama_gguf_tensors(tiny_llama), types)


def test_llama_gguf_matches_its_hf_directory(tmp_path, tiny_llama, gpt2_vocab):
    """Q and K rows permuted as llama.cpp does: the loader must undo it for the logits to agree."""
    gguf_model = load(str(write_tiny_llama_gguf(tmp_path / "tiny.gguf", tiny_llama, gpt2_vocab)))
    hf_model = load(str(tiny_llama))
    ids = [464, 3139, 286, 4881, 318, 6342, 13]
    np.testing.assert_allclose(gguf_model.forward(ids, all_logits=True)[0], hf_model.forward(ids, all_logits=True)[0],
                               atol=1e-5)
    assert gguf_model.tokenizer.encode("Hullo, my name is") == [39, 724, 78, 11, 616, 1438, 318]
    assert np.shares_memory(gguf_model.weights.unembed, gguf_model.weights.embed) == ("output.weight" not in
                                                                                    llama_gguf_tensors(tiny_llama))


@pytest.mark.parametrize("kind,tolerance", [("F16", 2e-3), ("BF16", 2e-2), ("Q8_0", 2e-2), ("Q4_0", 0.3),
                                            ("Q4_1", 0.3)])
def test_llama_gguf_quantized_types(tmp_path, tiny_llama, gpt2_vocab, kind, tolerance):
    from gguf import GGMLQuantizationType

    matrices = {name: GGMLQuantizationType[kind] for name in llama_gguf_tensors(tiny_llama) if "norm" not in name}
    path = write_tiny_llama_gguf(tmp_path / f"tiny-{kind}.gguf", tiny_llama, gpt2_vocab, matrices)
    assert describe(path)["quantization"] == f"{kind} (+F32)"
    ids = [464, 3139, 286, 4881, 318]
    quantized, _ = load(str(path)).forward(ids, all_logits=True)
    exact, _ = load(str(tiny_llama)).forward(ids, all_logits=True)
    assert np.abs(quantized - exact).max() < tolerance


def gpt2_gguf_tensors(directory, dtype) -> dict:
    """A Hugging Face GPT-2 in GGUF names: Conv1D matrices transposed to [out, in] as llama.cpp does."""
    from safetensors.numpy import load_file

    hf = {name.removeprefix("transformer."): t for name, t in load_file(directory / "model.safetensors").items()}
    tensors = {"token_embd.weight": hf["wte.weight"].astype(dtype), "position_embd.weight": hf["wpe.weight"],
               "output_norm.weight": hf["ln_f.weight"], "output_norm.bias": hf["ln_f.bias"]}
    names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for i in range(2):
        for hf_name, gguf_name in names.items():
            weight, bias = hf[f"h.{i}.{hf_name}.weight"], hf[f"h.{i}.{hf_name}.bias"]
            matrix = weight.ndim == 2
            tensors[f"blk.{i}.{gguf_name}.weight"] = np.ascontiguousarray(weight.T).astype(dtype) if matrix else weight
            tensors[f"blk.{i}.{gguf_name}.bias"] = bias
    return tensors


@pytest.mark.parametrize("dtype,tolerance", [(np.float32, 1e-5), (np.float16, 2e-3)])
def test_gpt2_gguf_matches_its_hf_directory(tmp_path, tiny_gpt2, gpt2_vocab, dtype, tolerance):
    meta = {"gpt2.context_length": 64, "gpt2.embedding_length": 64, "gpt2.feed_forward_length": 256,
            "gpt2.block_count": 2, "gpt2.attention.head_count": 4, "gpt2.attention.layer_norm_epsilon": 1e-5,
            **gpt2_tokenizer_metadata(gpt2_vocab)}
    path = write_gguf(tmp_path / "gpt2.gguf", "gpt2", meta, gpt2_gguf_tensors(tiny_gpt2, dtype))
    gguf_model, hf_model = load(str(path)), load(str(tiny_gpt2))
    ids = gguf_model.tokenizer.encode("Hullo, my name is")
    assert ids == [39, 724, 78, 11, 616, 1438, 318]
    difference = gguf_model.forward(ids, all_logits=True)[0] - hf_model.forward(ids, all_logits=True)[0]
    assert np.abs(difference).max() < tolerance
    assert dataclasses.replace(gguf_model.config, norm_eps=1e-5) == hf_model.config  # GGUF stores eps as float32


# Bad files: each an LlmxError with a one-line message that names the problem.

def assert_one_line(error, *words):
    assert isinstance(error.value, LlmxError)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_truncated_gguf(tmp_path, tiny_llama, gpt2_vocab, smollm_path):
    whole = write_tiny_llama_gguf(tmp_path / "tiny.gguf", tiny_llama, gpt2_vocab).read_bytes()
    with open(smollm_path, "rb") as f:
        header = f.read(500_000)  # in the middle of SmolLM2's vocabulary
    cuts = {"in-tensor-data": whole[:-1000], "in-header": header}
    for name, data in cuts.items():
        path = tmp_path / f"cut-{name}.gguf"
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as error:
            load(str(path))
        assert_one_line(error, str(path), "truncated")
    with pytest.raises(CheckpointError) as error:
        describe(tmp_path / "cut-in-header.gguf")
    assert_one_line(error, "truncated")


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("these are not weights\n" * 100)
    with pytest.raises(CheckpointError) as error:
        load(str(path))
    assert_one_line(error, str(path), "not a readable GGUF file")


def test_unsupported_architecture(tmp_path):
    path = write_gguf(tmp_path / "phi.gguf", "phi3", {"phi3.block_count": 1},
                      {"token_embd.weight": np.zeros((8, 4), np.float32)})
    for call in (load, load_tokenizer):
        with pytest.raises(CheckpointError) as error:
            call(str(path))
        assert_one_line(error, "phi.gguf", "architecture 'phi3' is not supported", "gpt2, llama, qwen2 and gemma3")


def test_a_llama_gguf_without_a_pre_tokenizer_is_refused_not_split_like_gpt2(tmp_path, tiny_llama, gpt2_vocab):
    """GPT-2's split is GPT-2's: a Llama-family file that names no pre-tokenizer cannot be tokenized right."""
    path = write_gguf(tmp_path / "tiny.gguf", "llama", {**LLAMA_META, **gpt2_tokenizer_metadata(gpt2_vocab, pre=None)},
                      llama_gguf_tensors(tiny_llama))
    for call in (load, load_tokenizer):
        with pytest.raises(TokenizerError) as error:
            call(str(path))
        assert_one_line(error, "tiny.gguf has no tokenizer.ggml.pre", "llama-bpe")


def test_unknown_pre_tokenizer(tmp_path, tiny_llama, gpt2_vocab):
    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf", tiny_llama, gpt2_vocab,
                                 **{"tokenizer.ggml.pre": "mystery-bpe"})
    with pytest.raises(TokenizerError) as error:
        load(str(path))
    assert_one_line(error, "'mystery-bpe'", "smollm")


def test_unsupported_tensor_type(tmp_path, tiny_llama, gpt2_vocab):
    from gguf import GGMLQuantizationType

    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf", tiny_llama, gpt2_vocab,
                                 {"blk.0.ffn_up.weight": GGMLQuantizationType.F64})
    with pytest.raises(CheckpointError) as error:
        load(str(path))
    assert_one_line(error, "blk.0.ffn_up.weight", "F64", "Q4_K")


def test_smollm2_has_induction_heads(smollm):
    from llmx.engine.interp import scan_heads

    scan = scan_heads(smollm, seq_len=40, seed=0)
    best = scan.heads[0]
    assert best.induction > 0.5, best
    assert max(h.control_induction for h in scan.heads) < 0.1


def test_llmx_continue_on_the_gguf_file_says_paris(smollm_path):
    from test_cli import run

    r = run("continue", "-m", str(smollm_path), "The capital of France is", "--temperature", "0",
            "--max-tokens", "3")
    assert r.exit_code == 0 and r.stdout.startswith(" Paris"), r


def test_header_reading_agrees_with_ggufs_own_reader(smollm_path):
    """llmx reads GGUF headers with struct (GGUFReader takes seconds on a 49k vocabulary); the two must agree."""
    from gguf import GGUFReader

    from llmx.engine.formats.gguf import read_gguf_header

    ours, theirs = read_gguf_header(smollm_path), GGUFReader(smollm_path)
    assert set(ours.meta) == set(theirs.fields) - {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    for key, field in theirs.fields.items():
        if key.startswith("GGUF."):
            continue
        expected = field.contents()
        assert ours.meta[key] == (pytest.approx(expected) if isinstance(expected, float) else expected), key
    assert [(t.name, t.kind, t.shape, ours.data_start + t.offset) for t in ours.tensors] == \
           [(t.name, t.tensor_type, tuple(int(d) for d in reversed(t.shape)), int(t.data_offset))
            for t in theirs.tensors]


def test_a_gguf_bpe_tokenizer_is_built_once_then_read_from_the_cache(tmp_path, monkeypatch, tiny_llama, gpt2_vocab):
    """The first load reads the vocabulary's arrays and ranks it; later loads take the tokenizer from llmx's cache
    (engine/tokenizer_cache.py) and tokenize the same; a damaged entry is built again; LLMX_PACK=0 keeps none."""
    from llmx.engine.formats import gguf

    monkeypatch.setenv("LLMX_CACHE", str(tmp_path / "cache"))
    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf", tiny_llama, gpt2_vocab,
                                 **{"tokenizer.ggml.add_bos_token": True})
    reads, real = [], gguf.read_gguf_header

    def spy(*args, arrays=True):
        reads.append(arrays)
        return real(*args, arrays=arrays)

    monkeypatch.setattr(gguf, "read_gguf_header", spy)
    texts = [*TEXTS, *ODD_BYTES, f"special {GPT2_EOT} text"]
    built = load_tokenizer(str(path))
    assert reads.count(gguf.TOKENIZER_ARRAYS) == 1
    (entry,) = (tmp_path / "cache").glob("bpe-*.npz")
    for damage in (None, "flip a byte"):
        if damage:
            data = bytearray(entry.read_bytes())
            data[len(data) // 2] ^= 0xFF  # inside the stored arrays
            entry.write_bytes(bytes(data))
        reads.clear()
        cached = load_tokenizer(str(path))
        assert reads.count(gguf.TOKENIZER_ARRAYS) == (1 if damage else 0)
        assert cached is not built and dataclasses.replace(cached, encoding=None) == dataclasses.replace(
            built, encoding=None)  # bos, eos, add_bos, the bytes the vocabulary lacks
        for text in texts:
            assert cached.encode(text) == built.encode(text) and cached.encode(text, special=True) == built.encode(
                text, special=True)
            assert cached.decode(cached.encode(text)) == built.decode(built.encode(text))
    monkeypatch.setenv("LLMX_PACK", "0")
    entry.unlink()
    load_tokenizer(str(path))
    assert not entry.exists()


def test_smollm2s_tokenizer_from_the_cache_is_the_one_built(smollm_path, smollm):
    """The session's first load of the file (`smollm`) stored its tokenizer; this load reads it back, with the
    stand-ins for the bytes SmolLM2 has no token for."""
    from llmx.engine.formats import pack

    assert list(pack.cache_dir().glob("bpe-*.npz"))
    cached = load_tokenizer(str(smollm_path))
    assert cached.dropped_ids and cached.dropped_ids == smollm.tokenizer.dropped_ids
    for text in [*TEXTS, *SPACES_BEFORE_DIGITS, *ODD_BYTES]:
        assert cached.encode(text) == smollm.tokenizer.encode(text)
