"""Shared fixtures: tiny random-weight checkpoints in the Hugging Face layout, written per test session.

GPT-2's real vocabulary (OpenAI's encoder.json / vocab.bpe, byte-identical to the Hub's vocab.json /
merges.txt) and the SmolLM2 GGUF are fetched into .cache/test-data by `.ci/run`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(os.environ.get("LLMX_TEST_DATA", REPO / ".cache" / "test-data"))


def test_data(name: str) -> Path:
    path = TEST_DATA / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash .ci/fetch-test-data` (or .ci/run), which downloads it "
                    "from the package registries", pytrace=False)
    return path


@pytest.fixture(scope="session")
def gpt2_vocab() -> Path:
    """A folder with GPT-2's vocab.json and merges.txt."""
    return test_data("gpt2-vocab")


def write_tiny_gpt2(directory: Path, vocab: Path, *, seed: int = 0, **overrides) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    settings = dict(vocab_size=50257, n_positions=64, n_embd=64, n_layer=2, n_head=4)
    settings.update(overrides)
    model = GPT2LMHeadModel(GPT2Config(**settings))
    model.save_pretrained(directory)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(vocab / name, directory / name)
    return directory


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread_count():
    """Every llmx the tests run uses the same BLAS thread count (LLMX_THREADS=1 unless set): left to itself,
    each command picks its count from the machine's load when it starts, and 1 and 2 threads sum in different
    orders, so two commands' logits could differ by ~1e-8 and the tests that compare commands exactly
    (batch lines against single runs, lens against predict) would depend on the load. tests/test_threads.py
    tests the policy itself, with LLMX_THREADS removed."""
    os.environ.setdefault("LLMX_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def llmx_cache(tmp_path_factory) -> Path:
    """llmx's own cache (packed GPT-2 weights) in a temporary folder, also for the subprocesses tests start."""
    path = tmp_path_factory.mktemp("llmx-cache")
    os.environ["LLMX_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, gpt2_vocab) -> Path:
    """A 2-layer, 64-wide GPT-2 with random weights and GPT-2's real tokenizer, loaded once so that its
    weights are already packed (see engine/packed.py) when tests run commands on it."""
    from llmx.engine import load

    directory = write_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"), gpt2_vocab)
    load(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_gpt2_model(tiny_gpt2):
    """The tiny GPT-2 loaded by llmx, shared by the engine tests."""
    from llmx.engine import load

    return load(str(tiny_gpt2))


@pytest.fixture(scope="session")
def tiny_gpt2_reference(tiny_gpt2):
    """The same files loaded by transformers' GPT2LMHeadModel: the reference the engine is checked against."""
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(tiny_gpt2).eval()


@pytest.fixture(scope="session")
def tiny_llama_model(tmp_path_factory, gpt2_vocab):
    """A tiny Llama with untied embeddings (RMSNorm, SwiGLU, rotary, 4 query heads sharing 2 key/value heads; see
    write_tiny_llama) loaded by llmx, shared by the engine tests (a module may define its own, e.g. a tied one)."""
    from llmx.engine import load

    return load(str(write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), gpt2_vocab, tied=False)))


@pytest.fixture(scope="session")
def pickle_only_repo(tmp_path_factory, tiny_gpt2) -> Path:
    """A repo folder with config.json and pytorch_model.bin (pickle bytes, never loaded) but no safetensors."""
    folder = tmp_path_factory.mktemp("pickle-only")
    shutil.copy(tiny_gpt2 / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04}\x94.")  # pickle.dumps({})
    return folder


@pytest.fixture
def hub_server(tiny_gpt2, pickle_only_repo):
    """A stand-in for the Hugging Face Hub on 127.0.0.1 (tests/hub_server.py), with a fresh request log,
    serving the tiny GPT-2 as `openai-community/gpt2` and `someone/pickle-only`."""
    from hub_server import HubServer

    with HubServer() as hub:
        hub.add_repo("openai-community/gpt2", tiny_gpt2)
        hub.add_repo("someone/pickle-only", pickle_only_repo)
        yield hub


GPT2_EOT = "<|endoftext|>"


def write_random_gemma3(directory: Path, settings: dict, seed: int = 0) -> Path:
    """A Gemma 3 of the given Gemma3TextConfig settings with random weights, saved by transformers: embeddings
    N(0, 1), matrices N(0, 0.2), norm weights on a 2**-10 grid in [-0.5, 0.5], so that llmx's multiplier 1 + w is
    exact in float32 as in float64. The caller adds the tokenizer files."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**settings))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.round(torch.empty_like(p).uniform_(-0.5, 0.5) * 1024) / 1024)
            else:
                p.normal_(0, 1.0 if "embed" in name else 0.2)
    model.save_pretrained(directory)
    return directory


def write_tiny_llama(directory: Path, vocab: Path, *, tied: bool, seed: int = 0, **overrides) -> Path:
    """A 2-layer, 64-wide Llama with grouped-query attention (4 query heads, 2 key/value heads) and
    random weights, saved by transformers, with a tokenizer.json built from GPT-2's vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = dict(vocab_size=50257, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                    rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tied,
                    bos_token_id=50256, eos_token_id=50256)
    settings.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    with torch.no_grad():  # random norm scales, so that a wrongly applied norm weight shows in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(directory)
    write_tokenizer_json(directory, vocab)
    return directory


@pytest.fixture(scope="session", params=[True, False], ids=["tied", "untied"])
def tiny_llama(request, tmp_path_factory, gpt2_vocab) -> Path:
    """A tiny random Llama (see write_tiny_llama), with tied and with separate input/output embeddings."""
    name = "tiny-llama-tied" if request.param else "tiny-llama-untied"
    return write_tiny_llama(tmp_path_factory.mktemp(name), gpt2_vocab, tied=request.param)


def tiny_variant(name: str, gpt2, llama):
    """The tiny model a module's `tiny` fixture is parametrized by: "gpt2", "llama", or "llama-local", Llama with
    Gemma 3's local layers (block 0 sees a window of 6 positions, kept in a ring buffer)."""
    if name == "gpt2":
        return gpt2
    if name == "llama":
        return llama
    local = dataclasses.replace(llama.config, sliding_window=6, local_layers=(0,))
    return dataclasses.replace(llama, config=local)


def write_tokenizer_json(directory: Path, vocab: Path, pre: str = "bytelevel", bos_template: bool = False,
                         nfc: bool = False) -> Path:
    """tokenizer.json + tokenizer_config.json for GPT-2's BPE with one of the pre-tokenizers llmx reads:
    "bytelevel" (GPT-2), "digits" (SmolLM: digits apart, then ByteLevel) or "split" (Llama 3's regex);
    with `nfc`, the NFC normalizer Qwen2's tokenizer has."""
    import json

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE.from_file(str(vocab / "vocab.json"), str(vocab / "merges.txt")))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre != "split")
    llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tokenizer.pre_tokenizer = {
        "bytelevel": byte_level,
        "digits": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]),
        "split": pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(llama3), behavior="isolated"), byte_level]),
    }[pre]
    tokenizer.decoder = decoders.ByteLevel()
    if nfc:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.add_special_tokens([GPT2_EOT])
    if bos_template:
        eot = tokenizer.token_to_id(GPT2_EOT)
        tokenizer.post_processor = processors.TemplateProcessing(single=f"{GPT2_EOT} $A",
                                                                 special_tokens=[(GPT2_EOT, eot)])
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": GPT2_EOT, "eos_token": GPT2_EOT}))
    return directory


def assert_cached_decoding_equals_full_recompute(model) -> None:
    """Three tokens at once, then one at a time through the cache: the same logits as one full pass."""
    import numpy as np

    ids = [464, 3139, 286, 4881, 318, 6342, 13, 383]
    full, _ = model.forward(ids, all_logits=True)
    logits, cache = model.forward(ids[:3], all_logits=True)
    steps = [logits]
    for token in ids[3:]:
        logits, cache = model.forward([token], cache)
        steps.append(logits[None])
    assert cache.length == len(ids)
    np.testing.assert_allclose(np.concatenate(steps), full, atol=1e-5)
