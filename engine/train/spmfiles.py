"""A GGUF file's SentencePiece tokenizer (Gemma's: `tokenizer.ggml.model` "llama") written as the tokenizer.json
that engine/spm_json.py reads and transformers' fast tokenizers run.

That file is a BPE with byte fallback (see spm_json.py): spaces become ▁, and a merge is listed for every way of
joining two pieces into a third, in order of the joined piece's SentencePiece score, best first (transformers'
SentencePieceExtractor does the same). Applying the first listed merge that applies is then SentencePiece's
"merge the highest-scoring piece", so the file tokenizes as the GGUF file does. The file's control tokens
become special added tokens (whole only when asked) and its user-defined ones (Gemma's runs of spaces and
newlines) non-special added tokens, which both readers find whole before BPE, as SentencePiece does.
"""

from __future__ import annotations

from ..errors import InputError
from ..spm import CONTROL, NORMAL, SPACE, USER_DEFINED

SPM_DECODER = {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                                                 {"type": "ByteFallback"}, {"type": "Fuse"}]}


def sentencepiece_merges(tokens: list[str], types: list[int], scores: list[float]) -> list[list[str]]:
    """[left, right] for each split of each NORMAL piece into two pieces of the vocabulary, best score first
    (within a piece, by the ids of its parts, as SentencePieceExtractor orders them)."""
    ids = {t: i for i, t in enumerate(tokens) if types[i] == NORMAL}
    found = []
    for i, piece in enumerate(tokens):
        if types[i] != NORMAL or len(piece) < 2:
            continue
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in ids and piece[k:] in ids]
        found += [(-scores[i], ids[a], ids[b], a, b) for a, b in splits]
    found.sort()  # by score, best first; then by the parts' ids
    return [[a, b] for _, _, _, a, b in found]


def added_tokens(tokens: list[str], types: list[int]) -> list[dict]:
    return [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": kind == CONTROL} for i, (t, kind) in enumerate(zip(tokens, types))
            if kind in (CONTROL, USER_DEFINED)]


def sentencepiece_tokenizer_json(meta: dict, post_processor: dict | None, where: str) -> dict:
    """tokenizer.json for the SentencePiece model in a GGUF file's tokenizer.ggml.* metadata."""
    if meta.get("tokenizer.ggml.add_space_prefix", False):
        raise InputError(f"{where}: its SentencePiece tokenizer adds a space before the text, which llmx cannot "
                         "write as a tokenizer.json yet: save the LoRA adapter (without --merge) instead")
    tokens, types = meta["tokenizer.ggml.tokens"], list(meta["tokenizer.ggml.token_type"])
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens(tokens, types),
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}, "pre_tokenizer": None,
            "post_processor": post_processor, "decoder": SPM_DECODER,
            "model": {"type": "BPE", "dropout": None, "unk_token": tokens[unk] if unk is not None else None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                      "byte_fallback": True, "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tokens)},
                      "merges": sentencepiece_merges(tokens, types, meta["tokenizer.ggml.scores"])}}
