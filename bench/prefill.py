"""Where a prefill pass's time goes, beside transformers' whole pass: what bounds prompt processing on a CPU.

    python bench/prefill.py                                                   # GPT-2 small shape, 512 tokens
    python bench/prefill.py --smollm2 .cache/test-data/SmolLM2-135M-Instruct.Q4_1.gguf --tokens 512 4096
    (bench/bench.py --smollm2 FILE prints these rows after its own)

llmx's pass is timed whole as `forward` runs it (in lanes, engine/lanes.py, where it runs so) and, alternating
with it, without lanes, whole and by part, through wrappers around the engine's functions:
- matrix products with the weights (`linear`, `by_feature`, the unembedding; a bias add included), and the rate
  they reach against this machine's peak for one product of the MLP's shape;
- attention: the scores, softmax and weighted values (`weighted_values`), and the KV cache writes (`remember`);
- everything else: norms, the MLP's activation, rotations, residual adds, embedding.
The last line says how long the parts other than the weights' products could take for llmx to reach 1.0x and
1.2x transformers' pass: the products run at the BLAS's peak already, so that is the whole margin.

`report_decode` splits a decoded token the same way (bench/bench.py prints it for GPT-2), against the floor of
reading every weight once: the rest of a token's work bounds how near the floor decoding can come, and so do the
products alone (each matrix times a vector, nothing between them), timed apart: no engine that calls the BLAS once
a matrix comes nearer the floor than they do.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import bench

PARTS = {"matrix products (weights)": (("model", "linear"), ("attention", "linear"), ("model", "times_transposed"),
                                      ("model", "by_feature")),
         "attention: scores, softmax, values": (("attention", "weighted_values"),),
         "attention: KV cache writes": (("attention", "remember"),)}


def timed_runs(run, repeats: int, warm: bool = True) -> dict[str, float]:
    """Median seconds of `run()` ("whole pass") and of each part in PARTS within it, over `repeats` runs (after one
    untimed run if `warm`)."""
    from llmx.engine import attention, model as engine_model

    modules, spent = {"model": engine_model, "attention": attention}, collections.Counter()
    originals = {(m, f): getattr(modules[m], f) for part in PARTS.values() for m, f in part}

    def wrapped(part, fn):
        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - start
        return timed_call

    for part, places in PARTS.items():
        for m, f in places:
            setattr(modules[m], f, wrapped(part, originals[m, f]))
    runs = []
    try:
        if warm:
            run()
        for _ in range(repeats):
            spent.clear()
            bench.settle()
            start = time.perf_counter()
            run()
            runs.append({"whole pass": time.perf_counter() - start, **spent})
    finally:
        for (m, f), fn in originals.items():
            setattr(modules[m], f, fn)
    return {name: statistics.median(run.get(name, 0.0) for run in runs) for name in ("whole pass", *PARTS)}


def product_flops(cfg, n: int) -> float:
    """Floating-point operations of one pass's products with the weights over n positions (last row unembedded)."""
    qkv = (cfg.n_head + 2 * cfg.n_kv_head) * cfg.d_head
    mlp_in = cfg.n_ff * (1 if cfg.mlp == "gelu" else 2)
    per_row = cfg.n_embd * (qkv + mlp_in) + cfg.n_head * cfg.d_head * cfg.n_embd + cfg.n_ff * cfg.n_embd
    return 2 * (n * cfg.n_layer * per_row + cfg.n_vocab * cfg.n_embd)


def peak_rate(cfg, n: int) -> float:
    """FLOP/s of the BLAS on one product of the MLP's shape, [n, n_embd] @ [n_embd, n_ff]: best of 5."""
    import numpy as np

    rng = np.random.default_rng(0)
    x, w = rng.random((n, cfg.n_embd), dtype=np.float32), rng.random((cfg.n_ff, cfg.n_embd), dtype=np.float32)
    x @ w.T
    return 2 * n * cfg.n_embd * cfg.n_ff / min(bench.timed(lambda: x @ w.T) for _ in range(5))


@contextlib.contextmanager
def plain_pass():
    """forward without lanes (engine/lanes.py): the pass whose parts run one after another, so they can be timed."""
    from llmx.engine import lanes

    saved = lanes.MIN_ROWS
    lanes.MIN_ROWS = sys.maxsize
    try:
        yield
    finally:
        lanes.MIN_ROWS = saved


def report(label: str, ours, theirs, lengths, repeats: int) -> None:
    import numpy as np
    from llmx.engine import lanes
    from llmx.engine.model import CHUNK

    rng = np.random.default_rng(0)
    for n in lengths:
        ids = rng.integers(0, ours.config.n_vocab, n).tolist()
        ours.forward(ids)  # warm
        bench.torch_prefill(theirs, ids)
        plain, laned, theirs_runs = [], [], []
        for _ in range(repeats):  # alternating, so that a slow minute of the host falls on every kind of pass
            with plain_pass():
                plain.append(timed_runs(lambda: ours.forward(ids), 1, warm=False))
            laned.append(bench.timed(lambda: ours.forward(ids)))
            theirs_runs.append(bench.timed(lambda: bench.torch_prefill(theirs, ids)))
        parts = {name: statistics.median(run[name] for run in plain) for name in plain[0]}
        # speed-ups, round by round: transformers' seconds over llmx's
        theirs_s, laned, laned_ratio = bench.paired(theirs_runs, laned)
        plain_ratio = bench.paired(theirs_runs, [run["whole pass"] for run in plain])[2]
        whole, products = parts["whole pass"], parts["matrix products (weights)"]
        rate, peak = product_flops(ours.config, n) / products, peak_rate(ours.config, min(n, 512))
        threads = lanes.count(ours.config, min(n, CHUNK), None)
        print(f"\n{label}, {n}-token prefill, medians of {repeats} rounds (ratios: of the rounds'): "
              f"llmx {laned * 1e3:.0f} ms ({n / laned:.0f} tokens/s, "
              f"{threads} lane{'s' * (threads > 1)}), transformers {theirs_s * 1e3:.0f} ms ({laned_ratio:.2f}x)")
        print(f"  without lanes {whole * 1e3:.0f} ms ({plain_ratio:.2f}x), by part:")
        for name, seconds in parts.items():
            if name != "whole pass":
                print(f"  {name:36} {seconds * 1e3:7.0f} ms  {seconds / whole:4.0%}")
        rest = whole - sum(v for k, v in parts.items() if k != "whole pass")
        print(f"  {'everything else':36} {rest * 1e3:7.0f} ms  {rest / whole:4.0%}")
        print(f"  the products ran at {rate / 1e9:.0f} GFLOP/s; one product of the MLP's shape alone: "
              f"{peak / 1e9:.0f} GFLOP/s")
        print(f"  for 1.0x transformers the rest may take {(theirs_s - products) * 1e3:.0f} ms, for 1.2x "
              f"{(theirs_s / 1.2 - products) * 1e3:.0f} ms; it takes {(whole - products) * 1e3:.0f} ms without lanes, "
              f"{(laned - products) * 1e3:.0f} ms with them (if the products take as long)")


def report_decode(label: str, ours, weight_bytes: int, repeats: int, n_new: int = 32) -> None:
    """Where a decoded token's time goes (128-token prompt, greedy), against the bandwidth floor: the time to read
    weight_bytes once at the memory's bandwidth, probed again before each run (bench.measure_bandwidth), since
    what the host gives this machine's memory changes from minute to minute. The products with the weights read
    them; the rest is per-token work outside them, so floor / (floor + rest) is the best llmx could reach."""
    import numpy as np

    ids = np.random.default_rng(0).integers(0, ours.config.n_vocab, 128).tolist()
    logits, cache = ours.forward(ids)

    def decode() -> None:
        token, step = int(np.argmax(logits)), cache
        for _ in range(n_new):
            step_logits, step = ours.forward([token], step)
            token = int(np.argmax(step_logits))

    floors, runs, alone = [], [], []
    for _ in range(repeats):
        floors.append(weight_bytes / bench.measure_bandwidth(np))
        runs.append({name: seconds / n_new for name, seconds in timed_runs(decode, 1).items()})
        floor = weight_bytes / bench.measure_bandwidth(np)
        alone.append((products_alone(ours, n_new), floor))
    parts = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    whole, products, floor = parts.pop("whole pass"), parts["matrix products (weights)"], statistics.median(floors)
    reached = statistics.median(f / run["whole pass"] for f, run in zip(floors, runs))
    print(f"\n{label}, decode after a 128-token prompt, per token (medians of {repeats} runs of {n_new} tokens, each "
          f"after a bandwidth probe): {whole * 1e3:.1f} ms; floor {floor * 1e3:.1f} ms "
          f"({min(floors) * 1e3:.1f}-{max(floors) * 1e3:.1f}); llmx reaches {reached:.0%} of it")
    for name, seconds in {**parts, "everything else": whole - sum(parts.values())}.items():
        rate = f"  ({weight_bytes / seconds / 1e9:.1f} GB/s)" if name == "matrix products (weights)" else ""
        print(f"  {name:36} {seconds * 1e3:7.1f} ms  {seconds / whole:4.0%}{rate}")
    rest = whole - products
    print(f"  with the products at the floor and the rest as it is ({rest * 1e3:.1f} ms), at best "
          f"{floor / (floor + rest):.0%} of the floor")
    ratios = [floor / seconds for seconds, floor in alone]
    print(f"  the products alone (a token's {len(decode_matrices(ours))} matrices, each times a vector, nothing else "
          f"between them; each run after a probe): {statistics.median(s for s, _ in alone) * 1e3:.1f} ms, "
          f"{statistics.median(ratios):.0%} of the floor (best {max(ratios):.0%})")
    print(f"  {huge_pages(bench.weight_arrays(ours))}")


def decode_matrices(ours) -> list:
    """The weight matrices a decoded token multiplies, in order: each block's, then the unembedding."""
    w = ours.weights
    return [p.w for blk in w.blocks for p in (blk.w_qkv, blk.w_o, blk.w_in, blk.w_out)] + [w.unembed]


def products_alone(ours, n_new: int) -> float:
    """Seconds per token of decode's products with the weights and nothing else: one vector times each matrix as
    a one-token pass multiplies it (nn.times_transposed), n_new times over. No engine that calls the BLAS once a
    matrix decodes faster than this; the floor reads the same bytes in one product."""
    import numpy as np
    from llmx.engine.nn import times_transposed

    matrices = decode_matrices(ours)
    vectors = {n: np.ones((1, n), matrices[0].dtype) for n in {m.shape[1] for m in matrices}}

    def token() -> None:
        for m in matrices:
            times_transposed(vectors[m.shape[1]], m)

    token()
    bench.settle()
    start = time.perf_counter()
    for _ in range(n_new):
        token()
    return (time.perf_counter() - start) / n_new


def huge_pages(arrays) -> str:
    """How much of the memory holding these arrays the OS maps by 2 MB pages (Linux's /proc/self/smaps), which
    streams faster than 4 KB pages (engine/memory.py, `mapped_file`): a memory-mapped pack gets them where its
    pages were read in after llmx mapped it, and keeps the size its cached pages already have."""
    addresses = sorted(a.ctypes.data for a in arrays)
    try:
        with open("/proc/self/smaps") as smaps:
            lines = smaps.read().splitlines()
    except OSError:
        return "weights by page size: unknown here (no /proc/self/smaps)"
    sizes, inside = collections.Counter(), False
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            lo, hi = (int(part, 16) for part in fields[0].split("-"))
            inside = any(lo <= address < hi for address in addresses)
        elif inside and fields[0] in ("Rss:", "FilePmdMapped:", "AnonHugePages:"):
            sizes[fields[0]] += int(fields[1]) << 10
    huge = sizes["FilePmdMapped:"] + sizes["AnonHugePages:"]
    return f"weights' memory mapped by 2 MB pages: {huge / 1e6:.0f} of {sizes['Rss:'] / 1e6:.0f} MB resident"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smollm2", type=Path, help="this SmolLM2 GGUF file instead of GPT-2 small")
    parser.add_argument("--tokens", type=int, nargs="+", default=[512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("LLMX_THREADS", os.cpu_count())))
    args = parser.parse_args()
    bench.use_threads(args.threads)
    import torch
    from llmx.engine import load

    if args.smollm2:
        from transformers import AutoModelForCausalLM

        ours, label = load(str(args.smollm2)), "SmolLM2"
        theirs = AutoModelForCausalLM.from_pretrained(args.smollm2.parent, gguf_file=args.smollm2.name,
                                                      dtype=torch.float32).eval()
    else:
        from transformers import GPT2LMHeadModel

        checkpoint, label = bench.write_checkpoint("small"), "GPT-2 small"
        ours, theirs = load(str(checkpoint)), GPT2LMHeadModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    report(label, ours, theirs, args.tokens, args.repeats)


if __name__ == "__main__":
    main()
