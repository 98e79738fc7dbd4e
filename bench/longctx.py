"""Rows for real workloads on SmolLM2 (issue 14), printed by `bench/bench.py --smollm2 FILE`; alone:

    python bench/longctx.py .cache/test-data/SmolLM2-135M-Instruct.Q4_1.gguf --repeats 3

- prefill at 128, 512 and 4,096 tokens (128 and 512 in three times the rounds), measured as users get it: the
  same float32 weights and thread count on both sides, each side warmed up first (weights paged in, threads
  started), the engine's own `forward` (chunked as the CLI runs it) against transformers' forward with its
  default attention (SDPA);
- peak RSS of one 8,000-token prefill, in a process of its own, against weights + KV cache + 256 MB;
- prompt-lookup decoding on the README's RAG recipe (a context, a question, greedy): tokens/s with it and
  without it;
- decoding while one other process keeps a core busy: llmx with the thread count engine/threads.py picks
  then, transformers with its default (every core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench

RAG_CONTEXT = """\
Mt. Everest is 8,849 m high. It lies in the Mahalangur Himal, on the border between Nepal and China.
The summit was first reached on 29 May 1953 by Tenzing Norgay and Edmund Hillary, of a British expedition.
The Nile is about 6,650 km long. It flows north through eleven countries into the Mediterranean Sea.
K2 is 8,611 m high, the second highest mountain on Earth, in the Karakoram range on the border of Pakistan.
Lake Baikal in Siberia is the deepest lake in the world, 1,642 m at its deepest point.
The Mariana Trench in the Pacific Ocean reaches 10,984 m below sea level at the Challenger Deep.
"""
RAG_QUESTIONS = ("Q: Who first reached the summit of Mt. Everest, and when?\nA:",
                 "Q: What does the context say about K2?\nA:",
                 "Q: What is the deepest lake in the world?\nA:")
BUSY = "while True: pass"
SHORT = 512  # prefill rows of up to this many tokens take three times the rounds (prefill_rows)


def print_rows(path: Path, repeats: int, threads: int) -> None:
    import torch
    from llmx.engine import load
    from transformers import AutoModelForCausalLM

    ours = load(str(path))
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    print(f"\nSmolLM2 long prompts and lookup ({threads} threads, transformers' attention: "
          f"{theirs.config._attn_implementation}):")
    bench.print_table(prefill_rows(ours, theirs, repeats, (128, 512, 4096)))
    print_peak_rss(path, ours, 8000)
    print_lookup(ours, repeats)
    print_busy(ours, theirs, repeats)


def prefill_rows(ours, theirs, repeats: int, lengths) -> dict[str, tuple[float, float, float]]:
    """Medians of prefill tokens/s and of the rounds' ratios (bench.paired), each side warmed up on the same length
    first. Prompts of up to SHORT tokens, whose passes take under a second, get three times the rounds: a round's
    ratio there moves 0.88-1.36x from one round to the next (SmolLM2 at 512 tokens, 15 rounds in one process)."""
    import numpy as np

    rng, rows = np.random.default_rng(0), {}
    for n in lengths:
        ids = rng.integers(0, ours.config.n_vocab, n).tolist()
        ours.forward(ids)
        bench.torch_prefill(theirs, ids)
        runs = ([], [])
        for _ in range(3 * repeats if n <= SHORT else repeats):
            runs[0].append(n / bench.timed(lambda: ours.forward(ids)))
            runs[1].append(n / bench.timed(lambda: bench.torch_prefill(theirs, ids)))
        rows[f"prefill, {n} tokens (tokens/s)"] = bench.paired(*runs)
    return rows


PREFILL = """
import sys
import numpy as np
from llmx.engine import load
model = load(sys.argv[1])
model.forward(np.random.default_rng(0).integers(0, model.config.n_vocab, int(sys.argv[2])).tolist())
"""


def print_peak_rss(path: Path, model, n: int) -> None:
    """Peak RSS of a process that loads the model and runs one n-token prefill, against its budget."""
    rss = bench.peak_rss([sys.executable, "-c", PREFILL, str(path), str(n)])
    weights = sum(a.nbytes for a in bench.weight_arrays(model))
    cfg = model.config
    kv = 2 * cfg.n_layer * cfg.n_kv_head * n * cfg.d_head * 4
    print(f"\npeak RSS of a {n}-token prefill: {rss / 1e6:.0f} MB; weights {weights / 1e6:.0f} MB + KV cache "
          f"{kv / 1e6:.0f} MB + {(rss - weights - kv) / 1e6:.0f} MB (budget: + 256 MB)")


def print_lookup(model, repeats: int) -> None:
    """Greedy answers to questions about a context, as `llmx continue --context` builds them."""
    from llmx.engine import Sampling, with_context

    prompts = [with_context(model.tokenizer, RAG_CONTEXT, q, model.config.n_ctx - 64).ids for q in RAG_QUESTIONS]
    runs = ([], [])
    for _ in range(repeats):
        for lookup, out in ((True, runs[0]), (False, runs[1])):
            out.append(statistics.mean(decode_rate(model, ids, lookup) for ids in prompts))
    on, off, ratio = bench.paired(*runs)
    same = all(model.complete(ids, 48, sampling=Sampling(temperature=0)).ids ==
               model.complete(ids, 48, sampling=Sampling(temperature=0), lookup=False).ids for ids in prompts)
    print(f"\nRAG answers, greedy, 48 tokens after the prompt (mean of {len(prompts)} questions): "
          f"{on:.1f} tokens/s with prompt lookup, {off:.1f} without: {ratio:.2f}x (median of the rounds' ratios); "
          f"same tokens: {same}")


def decode_rate(model, ids, lookup: bool) -> float:
    """Tokens/s from the first generated token to the last (the prompt's pass excluded)."""
    from llmx.engine import Sampling

    bench.settle()
    steps = iter(model.generate(ids, 48, sampling=Sampling(temperature=0), lookup=lookup))
    next(steps)
    start, n = time.perf_counter(), 0
    for _ in steps:
        n += 1
    return n / (time.perf_counter() - start)


def print_busy(ours, theirs, repeats: int) -> None:
    """Decode tokens/s while a `while True: pass` process runs: llmx with engine/threads.py's count."""
    from llmx.engine.threads import blas_threads, use_blas_threads

    env = {k: v for k, v in os.environ.items() if k not in ("LLMX_THREADS", *bench_blas_variables())}
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(1.0)
        chosen = blas_threads(env)
        use_blas_threads(chosen)
        ids = list(range(1000, 1128))
        ours_runs = [64 / bench.ours_decode(ours, ids, 64) for _ in range(repeats)]
        theirs_runs = [64 / bench.torch_decode(theirs, ids, 64) for _ in range(repeats)]
    finally:
        busy.kill()
        busy.wait()
        use_blas_threads(int(os.environ.get("LLMX_THREADS", os.cpu_count())))
    print(f"\ndecode, 128-token prompt, one busy process: llmx {statistics.median(ours_runs):.1f} tokens/s "
          f"({chosen} BLAS thread{'s' * (chosen != 1)}, its own choice), transformers "
          f"{statistics.median(theirs_runs):.1f} ({theirs_threads()} threads)")


def bench_blas_variables():
    from llmx.engine.threads import BLAS_VARIABLES

    return BLAS_VARIABLES


def theirs_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("smollm2", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("LLMX_THREADS", os.cpu_count())))
    args = parser.parse_args()
    bench.use_threads(args.threads)
    print_rows(args.smollm2, args.repeats, args.threads)


if __name__ == "__main__":
    main()
