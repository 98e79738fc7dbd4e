"""SentencePiece models written as a Hugging Face tokenizer.json (Gemma's), read into spm.py's tokenizer.

Hugging Face writes a SentencePiece BPE model (Gemma, Llama 2, Mistral) as a `BPE` with `byte_fallback`, a
normalizer replacing every space with ▁, and a merge for every pair of pieces whose join is in the
vocabulary, listed in order of the joined piece's SentencePiece score (transformers' SentencePieceExtractor).
Applying the merge listed first is then SentencePiece's "merge the highest-scoring piece", so the file gives
the same vocabulary, token types and scores spm.py reads from a GGUF file:
    score   minus the position of the first merge that makes the piece (single characters: 0, unused)
    type    added tokens: CONTROL if special (whole only when asked), else USER_DEFINED (always whole, found
            before BPE, as Hugging Face matches added tokens in the raw text); <0xXX> pieces: BYTE;
            longer pieces no merge makes: UNUSED (BPE never produces them); the rest NORMAL
A tokenizer.json of another kind is refused with a message rather than read approximately.
"""

from __future__ import annotations

from pathlib import Path

from .errors import TokenizerError
from .formats.checks import check_token_ids
from .spm import BYTE, CONTROL, NORMAL, SPACE, UNUSED, USER_DEFINED, SentencePieceTokenizer, sentencepiece
from .hf_tokenizer import _config_eos, _read_json, _template_bos, _token_text

SPACES_TO_METASPACE = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}


def tokenizer_json_sentencepiece(directory: Path, n_vocab: int) -> SentencePieceTokenizer:
    """The folder's tokenizer.json, with tokenizer_config.json's BOS/EOS and config.json's eos_token_id."""
    where = str(directory / "tokenizer.json")
    data = _read_json(directory / "tokenizer.json")
    check_kind(data, where)
    tokens, types = vocabulary(data, n_vocab, where)
    scores = merge_scores(data["model"]["merges"], tokens, types, where)
    config = _read_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
    ids = {text: i for i, text in enumerate(tokens)}
    template_bos = _template_bos(data.get("post_processor"))
    bos = ids.get(_token_text(config.get("bos_token")) or template_bos)
    eos = {ids[t] for t in [_token_text(config.get("eos_token"))] if t in ids} | _config_eos(directory)
    check_token_ids({"eos_token_id": sorted(eos)}, n_vocab, where)
    return sentencepiece(tokens, types, scores, n_vocab, where, bos=bos, eos=eos,
                         add_bos=bool(config.get("add_bos_token", template_bos is not None)))


def check_kind(data: dict, where: str) -> None:
    """A BPE with byte fallback whose only text processing is spaces written as ▁ (see the top)."""
    model, pre = data.get("model") or {}, data.get("pre_tokenizer")
    plain_bpe = (model.get("type") == "BPE" and model.get("byte_fallback") is True and not model.get("dropout")
                 and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix")
                 and isinstance(model.get("vocab"), dict) and isinstance(model.get("merges"), list))
    normalizer = {key: (data.get("normalizer") or {}).get(key) for key in SPACES_TO_METASPACE}
    # Splitting at spaces after they became ▁ splits nothing (transformers writes this for GGUF files).
    no_split = pre is None or pre == {**pre, "type": "Split", "pattern": {"String": " "}, "invert": False}
    if not (plain_bpe and normalizer == SPACES_TO_METASPACE and no_split):
        raise TokenizerError(f"{where}: a {model.get('type')} model (byte_fallback {model.get('byte_fallback')}) with "
                             f"normalizer {str(data.get('normalizer'))[:80]} and pre-tokenizer {str(pre)[:80]} is not "
                             "supported; llmx reads SentencePiece-style tokenizer.json files like Gemma's (a BPE "
                             "with byte_fallback, spaces replaced with ▁, no pre-tokenizer)")


def vocabulary(data: dict, n_vocab: int, where: str) -> tuple[list[str], list[int]]:
    """Every token's text by id (0..n-1, no gaps) and its GGUF-style type (see the top)."""
    added = {token.get("id"): token for token in data.get("added_tokens") or [] if isinstance(token, dict)}
    texts = {i: text for text, i in data["model"]["vocab"].items()} | {
        i: token.get("content") for i, token in added.items()}
    if set(texts) != set(range(len(texts))) or len(texts) > n_vocab or not all(isinstance(t, str) for t in texts.values()):
        raise TokenizerError(f"{where}: the vocabulary's ids are not 0..{len(texts) - 1} without gaps, or exceed the "
                             f"model's {n_vocab} embedding rows: download the tokenizer again")
    tokens = [texts[i] for i in range(len(texts))]

    def kind(i: int, text: str) -> int:
        if i in added:
            return CONTROL if added[i].get("special") else USER_DEFINED
        return BYTE if len(text) == 6 and text.startswith("<0x") and text.endswith(">") else NORMAL

    return tokens, [kind(i, text) for i, text in enumerate(tokens)]


def merge_scores(merges: list, tokens: list[str], types: list[int], where: str) -> list[float]:
    """Each token's score, minus the position of the first merge that makes it; multi-character NORMAL pieces
    that no merge makes become UNUSED (types is changed in place)."""
    ids = {text: i for i, text in enumerate(tokens)}
    scores = [0.0] * len(tokens)
    made = [False] * len(tokens)
    for n, merge in enumerate(merges):
        pair = merge.split(" ") if isinstance(merge, str) else merge  # "a b" (older files) or ["a", "b"]
        token = ids.get("".join(pair)) if isinstance(pair, list) and len(pair) == 2 else None
        if token is None:
            raise TokenizerError(f"{where}: the merge {str(merge)[:60]!r} does not make a piece of the vocabulary: "
                                 "the file is damaged; download it again")
        if not made[token]:
            made[token], scores[token] = True, -float(n)
    for i, (text, kind) in enumerate(zip(tokens, types)):
        if kind == NORMAL and len(text) > 1 and not made[i]:
            types[i] = UNUSED
    return scores
