"""Gemma 3 rows of the bench: llmx and transformers reading the same GGUF file (both dequantize it to float32),
decode speed as a share of the float32 bandwidth floor, and start to first token once llmx's cache holds the
model (dequantized weights and tokenizer).

    python bench/bench.py --gemma .cache/test-data/gemma-3-270m-q4_k_m.gguf    # after the GPT-2 rows
    python bench/gemma.py .cache/test-data/gemma-3-270m-q4_k_m.gguf            # these rows alone

The floor: the bytes of float32 weights one decoded token reads (every block matrix and the tied
unembedding, 1.07 GB for Gemma 3 270M) over the bandwidth bench.py measures. transformers takes ~50 s to
load the file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import bench


def report(path: Path, repeats: int, bandwidth: float) -> None:
    import torch
    from llmx.engine import load
    from transformers import AutoModelForCausalLM

    ours = load(str(path))
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    rows = bench.compare(ours, theirs, repeats, prefill_lengths=(128,), contexts=(128, 700))
    floor = sum(a.nbytes for a in bench.weight_arrays(ours)) / bandwidth  # seconds per token
    print(f"\nGemma 3 ({path.name}), both sides dequantized to float32:")
    bench.print_table(rows)
    for name in ("decode, 128-token prompt (tokens/s)", "decode, 700-token prompt (tokens/s)"):
        print(f"{name}: llmx reaches {rows[name][0] * floor:.0%} of the floor ({1 / floor:.1f} tokens/s at "
              f"{bandwidth / 1e9:.1f} GB/s), transformers {rows[name][1] * floor:.0%}")
    layout_row(ours)
    print(f"process start to first token (`llmx continue -m {path.name} Hi --max-tokens 1`, cached), median of "
          f"{repeats}: {first_token_seconds(path, repeats):.2f} s")


def layout_row(model) -> None:
    """One decode step's matrix-vector products with each matrix as the engine holds it and transposed: the
    engine keeps block matrices [out, in] (row-major) and Gemma's unembedding column-major (arch/gemma3.py)."""
    import numpy as np

    matrices = [m.w for b in model.weights.blocks for m in (b.w_qkv, b.w_o, b.w_in, b.w_out)]
    flipped = [np.ascontiguousarray(w) if w.flags.f_contiguous else np.asfortranarray(w) for w in matrices]
    inputs = {w.shape[1]: np.ones((1, w.shape[1]), np.float32) for w in matrices}
    unembed, x = model.weights.unembed, np.ones((1, model.config.n_embd), np.float32)
    other = np.ascontiguousarray(unembed) if unembed.flags.f_contiguous else np.asfortranarray(unembed)

    def products(ws):
        return min(bench.timed(lambda: [inputs[w.shape[1]] @ w.T for w in ws]) for _ in range(5))

    print(f"block matrices of one token: {products(matrices) * 1e3:.1f} ms as held, {products(flipped) * 1e3:.1f} ms "
          f"transposed; unembedding: {products([unembed]) * 1e3:.1f} ms as held (column-major: "
          f"{unembed.flags.f_contiguous}), {min(bench.timed(lambda: x @ other.T) for _ in range(5)) * 1e3:.1f} ms "
          "transposed")


def first_token_seconds(path: Path, repeats: int) -> float:
    command = [sys.executable, "-m", "llmx", "continue", "-m", str(path), "Hi", "--max-tokens", "1"]
    subprocess.run(command, capture_output=True, check=True)  # fills llmx's cache and the page cache
    return statistics.median(bench.timed(lambda: subprocess.run(command, capture_output=True, check=True))
                             for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs per measurement")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("LLMX_THREADS", os.cpu_count())))
    args = parser.parse_args()
    bench.use_threads(args.threads)
    import numpy as np

    print(f"{args.threads} threads, medians of {args.repeats} alternating runs")
    report(args.gguf, args.repeats, bench.measure_bandwidth(np))


if __name__ == "__main__":
    main()
