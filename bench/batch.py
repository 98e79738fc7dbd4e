"""Batches in one weight pass: decode throughput of 16 sequences generated together, against one sequence
at a time (llmx) and against transformers' batched `generate` (left padding with an attention mask).

    python bench/batch.py                 # GPT-2 small shape (the checkpoint bench/bench.py writes)
    python bench/batch.py --smollm2 .cache/test-data/SmolLM2-135M-Instruct.Q4_1.gguf

bench/bench.py prints these rows too. Decode throughput is tokens generated per second after the prompts:
each side's time for N + 1 greedy tokens less its time for 1 (the prompts and the first token), through
the public APIs (`model.complete_batch`, `model.complete`, `generate`). The batch's prompts have ragged
lengths (48 to 80 tokens); llmx prefills each alone, transformers pads them on the left.

The single stream the batch is held against is plain decoding, one pass per token, as the batch's rows and
transformers' `generate` decode. `complete` would use prompt lookup (greedy), which guesses tokens from the
text so far and checks several in one pass: random weights fall into repeating a token, which it then guesses
right, so that rate is printed beside, not used for the ratio (lookup's own rows are bench/longctx.py's).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from pathlib import Path

BATCH, NEW_TOKENS = 16, 32


def prompts(n_vocab: int, batch: int = BATCH) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(1)
    return [rng.integers(0, n_vocab, int(n)).tolist() for n in rng.integers(48, 81, batch)]


def without_eos(model):
    """The model with no end-of-text token, so every run generates all its tokens (as min_new_tokens does)."""
    return dataclasses.replace(model, tokenizer=dataclasses.replace(model.tokenizer, eos_ids=frozenset()))


def decode_seconds(generate, n_new: int) -> float:
    """Seconds for n_new tokens after the first: generate(n_new + 1) less generate(1)."""
    from bench import timed

    return timed(lambda: generate(n_new + 1)) - timed(lambda: generate(1))


def ours_batch(model, batch_prompts):
    from llmx.engine import Sampling

    return lambda n: model.complete_batch(batch_prompts, n, sampling=Sampling(temperature=0))


def ours_single(model, ids, lookup: bool = False):
    from llmx.engine import Sampling

    return lambda n: model.complete(ids, n, sampling=Sampling(temperature=0), lookup=lookup)


def theirs_batch(model, batch_prompts, pad_id: int):
    """transformers' batched greedy generate, prompts padded on the left with an attention mask."""
    import torch

    longest = max(map(len, batch_prompts))
    ids = torch.tensor([[pad_id] * (longest - len(p)) + p for p in batch_prompts])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in batch_prompts])

    def generate(n: int):
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=pad_id)
    return generate


def batch_rows(ours, theirs, repeats: int, pad_id: int) -> dict[str, tuple[float, ...]]:
    """Medians of decode tokens/s: (llmx batch 16, llmx single stream, the same with prompt lookup, transformers
    batch 16)."""
    ours = without_eos(ours)
    batch_prompts = prompts(ours.config.n_vocab)
    runs = ([], [], [], [])
    for _ in range(repeats):
        runs[0].append(BATCH * NEW_TOKENS / decode_seconds(ours_batch(ours, batch_prompts), NEW_TOKENS))
        runs[1].append(NEW_TOKENS / decode_seconds(ours_single(ours, batch_prompts[0]), NEW_TOKENS))
        runs[2].append(NEW_TOKENS / decode_seconds(ours_single(ours, batch_prompts[0], lookup=True), NEW_TOKENS))
        runs[3].append(BATCH * NEW_TOKENS / decode_seconds(theirs_batch(theirs, batch_prompts, pad_id), NEW_TOKENS))
    return tuple(statistics.median(r) for r in runs)


def print_batch_rows(name: str, ours, theirs, repeats: int, pad_id: int) -> None:
    batched, single, looked, hf = batch_rows(ours, theirs, repeats, pad_id)
    print(f"\n{name}: decode of {BATCH} sequences together, {NEW_TOKENS} new tokens each (tokens/s)")
    print(f"  llmx batch {BATCH}        {batched:8.1f}")
    print(f"  llmx single stream   {single:8.1f}   batch / single: {batched / single:5.2f}x   "
          f"(with prompt lookup: {looked:.1f})")
    print(f"  transformers batch {BATCH} {hf:8.1f}   llmx / transformers: {batched / hf:5.2f}x")


def print_gguf_batch_rows(path: Path, repeats: int) -> None:
    import torch
    from llmx.engine import load
    from transformers import AutoModelForCausalLM

    ours = load(str(path))
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    print_batch_rows(f"SmolLM2 ({path.name})", ours, theirs, repeats, pad_id=min(ours.tokenizer.eos_ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per measurement")
    parser.add_argument("--smollm2", type=Path, help="also measure this SmolLM2 GGUF file")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("LLMX_THREADS", os.cpu_count())))
    parser.add_argument("--skip-gpt2", action="store_true", help="only the SmolLM2 rows")
    args = parser.parse_args()
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LLMX_THREADS"):
        os.environ[name] = str(args.threads)
    import torch
    from bench import write_checkpoint

    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, medians of {args.repeats} alternating runs")
    if not args.skip_gpt2:
        from llmx.engine import load
        from transformers import GPT2LMHeadModel

        checkpoint = write_checkpoint("small")
        theirs = GPT2LMHeadModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
        print_batch_rows("GPT-2 small shape", load(str(checkpoint)), theirs, args.repeats, pad_id=50256)
    if args.smollm2:
        print_gguf_batch_rows(args.smollm2, args.repeats)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
