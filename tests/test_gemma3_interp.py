"""The "why" analyses and the SAE commands on Gemma 3: a tiny random Gemma3ForCausalLM (test_gemma3_hf.py's
TINY: 7 blocks, block 5 global, the others local with a 4-position window; sandwich norms, normalized queries
and keys, scaled embeddings) with GPT-2's vocabulary, so that it loads in a second; transformers in float64
is the reference for attribution through the post-norms."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_tokenizer_json
from test_gemma3_hf import TINY


def write_tiny_gemma3(directory: Path, vocab: Path, seed: int = 0) -> Path:
    """test_gemma3_hf.py's tiny Gemma 3 (random weights: embeddings N(0, 1), matrices N(0, 0.2), norm weights
    uniform in [-0.5, 0.5]) over GPT-2's 50257 tokens, with a tokenizer.json that starts each text with
    <|endoftext|> (Gemma's texts start with <bos>)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    settings = {**TINY, "vocab_size": 50257, "bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50256}
    model = Gemma3ForCausalLM(Gemma3TextConfig(**settings))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(-0.5, 0.5)
            else:
                p.normal_(0, 1.0 if "embed" in name else 0.2)
    model.save_pretrained(directory)
    write_tokenizer_json(directory, vocab, bos_template=True)
    return directory


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory, gpt2_vocab) -> Path:
    return write_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3-gpt2-vocab"), gpt2_vocab)


def load_tiny_gemma3(directory: Path):
    """The folder's Gemma 3 weights read by llmx's gemma3 architecture, with the GPT-2 tokenizer beside them
    (llmx reads Gemma's own tokenizer only in its SentencePiece form, which test_gemma3_hf.py tests)."""
    from llmx.engine.arch import llama
    from llmx.engine.arch.common import TensorSource
    from llmx.engine.formats.hf import read_tensors
    from llmx.engine.lm import LanguageModel
    from llmx.engine.loader import hf_config

    arch, config = hf_config(directory)
    tensors, origin = read_tensors(directory)
    weights = arch.weights_from_hf(TensorSource(tensors, origin, arch.TITLE), config)
    return LanguageModel(name="tiny-gemma3", path=directory, config=config, weights=weights,
                         tokenizer=llama.tokenizer(directory, config.n_vocab))


@pytest.fixture(scope="session")
def gemma(tiny_gemma3):
    return load_tiny_gemma3(tiny_gemma3)
