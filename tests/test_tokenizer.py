"""Layer 5 and tokenizer parity: GPT-2's tokenizer built from vocab.json + merges.txt."""

import pytest

from llmx.engine.tokenizer import gpt2_tokenizer

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
