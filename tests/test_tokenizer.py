"""Layer 5 and tokenizer parity: GPT-2's tokenizer built from vocab.json + merges.txt."""

import pytest

from llmx.engine.hf_tokenizer import gpt2_tokenizer

TEXTS = [
    "Hullo, my name is",
    "", " ", "   leading spaces", "trailing spaces   ", "tabs\tand\nnewlines\n\n\nthree",
    "unicode: naïve café, Ελληνικά, русский, 日本語のテキスト",
    "emoji 👍🏽 and 🤖🤖 and flags 🇫🇷", "digits 1234567890 3.14159 1,000,000",
    "code: def f(x):\n    return x**2  # comment", "contractions: don't, I'll, we've, they're, it's",
    "runs     of      spaces\r\nand CRLF", "<|endoftext|> is just text here", "ALLCAPS and MiXeD",
]


@pytest.fixture(scope="module")
def tokenizer(gpt2_vocab):
    return gpt2_tokenizer(gpt2_vocab, 50257)


def test_known_gpt2_ids(tokenizer):
    assert tokenizer.encode("Hullo, my name is") == [39, 724, 78, 11, 616, 1438, 318]
    assert tokenizer.encode(" John") == [1757]
    assert tokenizer.encode(" H") == [367]


def test_parity_with_transformers(tokenizer, gpt2_vocab):
    from transformers import GPT2TokenizerFast

    reference = GPT2TokenizerFast.from_pretrained(gpt2_vocab)
    assert reference.encode("Hullo") == [39, 724, 78]  # the reference really loaded the files
    for text in TEXTS:
        if "<|endoftext|>" in text:
            continue  # transformers makes it the special token; llmx keeps it text (below)
        assert tokenizer.encode(text) == reference.encode(text), text
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_endoftext_literal_is_ordinary_text_unless_asked(tokenizer):
    ids = tokenizer.encode("<|endoftext|>")
    assert 50256 not in ids and len(ids) > 1
    assert tokenizer.encode("<|endoftext|>", special=True) == [50256]


def test_pieces_are_bytes_of_partial_characters(tokenizer):
    ids = tokenizer.encode("🤖")
    assert b"".join(tokenizer.piece(i) for i in ids) == "🤖".encode()


def test_a_vocabulary_out_of_merge_order_is_refused():
    from llmx.engine import TokenizerError
    from llmx.engine.tokenizer import byte_decoder, ranks_from_vocab

    vocab = {c: i for i, c in enumerate(byte_decoder())}
    vocab.update({"ab": 256, "abc": 257})
    assert len(ranks_from_vocab(vocab, ["a b", "ab c"], set(), "test")) == 258
    with pytest.raises(TokenizerError, match="'ab c' does not follow"):
        ranks_from_vocab({**vocab, "abc": 255}, ["a b", "ab c"], set(), "test")
    with pytest.raises(TokenizerError, match="'x y' does not follow"):
        ranks_from_vocab(vocab, ["a b", "x y"], set(), "test")


@pytest.mark.parametrize("kind", ["gpt2", "tokenizer.json", "tokenizer.json with NFC"])
def test_a_folders_tokenizer_is_built_once_then_read_from_the_cache(kind, tmp_path, monkeypatch, tiny_gpt2,
                                                                     tiny_llama, gpt2_vocab):
    """GPT-2's vocab.json + merges.txt and a tokenizer.json are ranked on the first load only; later loads read
    llmx's cache (engine/tokenizer_cache.py) and give the same tokenizer, its normalization included."""
    import dataclasses
    import shutil

    from conftest import write_tokenizer_json
    from llmx.engine import hf_tokenizer, load_tokenizer

    monkeypatch.setenv("LLMX_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    shutil.copytree(tiny_gpt2 if kind == "gpt2" else tiny_llama, folder)
    if kind.endswith("NFC"):
        write_tokenizer_json(folder, gpt2_vocab, nfc=True)
    builds = []
    for name in ("gpt2_bpe", "tokenizer_json_bpe"):
        real = getattr(hf_tokenizer, name)
        monkeypatch.setattr(hf_tokenizer, name, lambda *args, real=real: builds.append(1) or real(*args))
    built, cached = load_tokenizer(str(folder)), load_tokenizer(str(folder))
    assert len(builds) == 1 and cached is not built
    assert dataclasses.replace(cached, encoding=None) == dataclasses.replace(built, encoding=None)
    assert cached.normalization == ("NFC" if kind.endswith("NFC") else None)
    for text in [*TEXTS, "cafe\u0301 composed"]:
        assert cached.encode(text) == built.encode(text)
        assert cached.encode(text, special=True) == built.encode(text, special=True)
