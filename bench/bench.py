"""llmx's engine side by side with Hugging Face transformers (PyTorch, CPU), in one run.

    python bench/bench.py                 # GPT-2 small shape, random weights written once into bench/.cache
    python bench/bench.py --size medium   # also large, xl
    python bench/bench.py --smollm2 .cache/test-data/SmolLM2-135M-Instruct.Q4_1.gguf
    python bench/bench.py --gemma .cache/test-data/gemma-3-270m-q4_k_m.gguf   # rows from bench/gemma.py

After the tables, bench/prefill.py's rows say where a decoded token's time goes against the bandwidth floor, and
where a 512-token prefill's goes (SmolLM2's at 4,096 too): the products with the weights, attention, the rest,
and how long the rest may take for 1.0x and 1.2x.

Both sides get the same thread count (LLMX_THREADS, default: all cores) and the same checkpoint;
their runs alternate, and each side's median and the median of the rounds' ratios are reported (`paired`).
Speed does not depend on weight values, so random weights are fine. Needs the test extra (torch, transformers)
and GPT-2's vocabulary in .cache/test-data/gpt2-vocab (`bash .ci/fetch-test-data`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"small": (768, 12, 12), "medium": (1024, 24, 16), "large": (1280, 36, 20), "xl": (1600, 48, 25)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs per measurement")
    parser.add_argument("--smollm2", type=Path, help="also compare on this SmolLM2 GGUF file")
    parser.add_argument("--finetune", action="store_true", help="also a training step (bench/finetune.py)")
    parser.add_argument("--gemma", type=Path, help="also compare on this Gemma 3 GGUF file (bench/gemma.py)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("LLMX_THREADS", os.cpu_count())))
    args = parser.parse_args()
    use_threads(args.threads)
    import numpy as np
    import torch

    checkpoint = write_checkpoint(args.size)
    print(f"llmx vs transformers {__import__('transformers').__version__} (torch {torch.__version__}), "
          f"GPT-2 {args.size} shape, {args.threads} threads, medians of {args.repeats} alternating runs "
          "(ratios: medians of each round's ratio)")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}, numpy {np.__version__}")

    from llmx.engine import load
    from transformers import GPT2LMHeadModel

    ours = load(str(checkpoint))
    theirs = GPT2LMHeadModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    rows = compare(ours, theirs, args.repeats, prefill_lengths=(128, 512), contexts=(128, 900))

    probes = bandwidth_probes(np)
    bandwidth = max(probes.values())
    weight_bytes = sum(a.nbytes for a in weight_arrays(ours))
    floor = weight_bytes / bandwidth
    decode = rows["decode, 128-token prompt (tokens/s)"][0]
    print_table(rows)
    print("\nmemory bandwidth (float32 matrix-vector product over 256 MB, best of 5): "
          + ", ".join(f"{rate / 1e9:.1f} GB/s as {form}" for form, rate in probes.items()) + "; the floor takes the faster")
    print(f"weights read per token: {weight_bytes / 1e6:.0f} MB -> decode floor {floor * 1e3:.1f} ms/token "
          f"({1 / floor:.1f} tokens/s); the table's decode is {decode * floor:.0%} of it (the split below probes again "
          "before each of its runs)")
    from prefill import report, report_decode  # bench/prefill.py: where a pass's time goes

    report_decode(f"GPT-2 {args.size} shape", ours, weight_bytes, args.repeats)
    print_process_figures(checkpoint, args.repeats)
    from batch import print_batch_rows, print_gguf_batch_rows  # bench/batch.py: batches in one weight pass

    print_batch_rows(f"GPT-2 {args.size} shape", ours, theirs, args.repeats, pad_id=50256)
    report(f"GPT-2 {args.size} shape", ours, theirs, (512,), args.repeats)
    if args.smollm2:
        print(f"\nSmolLM2 ({args.smollm2.name}), both sides dequantized to float32:")
        ours, theirs = load_gguf_pair(args.smollm2)
        print_table(compare(ours, theirs, args.repeats, prefill_lengths=(128, 512), contexts=(128,)))
        report("SmolLM2", ours, theirs, (512, 4096), args.repeats)
        del ours, theirs
        print_gguf_batch_rows(args.smollm2, args.repeats)
        from longctx import print_rows  # bench/longctx.py: long prompts, prompt lookup, a busy neighbour

        print_rows(args.smollm2, args.repeats, args.threads)
    if args.finetune:
        from finetune import print_finetune_rows  # bench/finetune.py: a training step against PyTorch's

        print_finetune_rows(checkpoint, args.smollm2, args.repeats)
    if args.gemma:
        from gemma import report  # bench/gemma.py: Gemma 3 decode, its floor, first token

        report(args.gemma, args.repeats, bandwidth)


def use_threads(threads: int) -> None:
    """The same thread count on both sides: the BLAS's and OpenMP's variables (read as NumPy and torch load, so
    call this first) and torch's own setting."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LLMX_THREADS"):
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)


def write_checkpoint(size: str) -> Path:
    """A random-weight GPT-2 of this size in the Hugging Face layout, with GPT-2's real tokenizer files."""
    directory = REPO / "bench" / ".cache" / f"gpt2-{size}"
    if (directory / "model.safetensors").is_file():
        return directory
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = REPO / ".cache" / "test-data" / "gpt2-vocab"
    if not (vocab / "vocab.json").is_file():
        sys.exit(f"{vocab} is missing: run `bash .ci/fetch-test-data` first")
    n_embd, n_layer, n_head = SIZES[size]
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=n_head)).save_pretrained(directory)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(vocab / name, directory / name)
    return directory


def weight_arrays(model):
    w = model.weights
    yield w.embed
    if w.unembed is not w.embed:
        yield w.unembed
    for block in w.blocks:
        for part in (block.ln1, block.ln2):
            yield part.g
        for part in (block.w_qkv, block.w_o, block.w_in, block.w_out):
            yield part.w


def compare(ours, theirs, repeats, prefill_lengths, contexts) -> dict[str, tuple[float, float, float]]:
    """Medians of tokens/s for each measurement and of the rounds' ratios: {name: (llmx, transformers, ratio)}."""
    import numpy as np

    rng = np.random.default_rng(0)
    n_vocab = ours.config.n_vocab
    runs: dict[str, tuple[list, list]] = {}
    warm = rng.integers(0, n_vocab, max(prefill_lengths)).tolist()  # weights paged in, threads started:
    ours.forward(warm), torch_prefill(theirs, warm)  # every timed run is warm, as in a user's session
    for _ in range(repeats):
        for n in prefill_lengths:
            ids = rng.integers(0, n_vocab, n).tolist()
            name = f"prefill, {n} tokens (tokens/s)"
            ours_s, theirs_s = runs.setdefault(name, ([], []))
            ours_s.append(n / timed(lambda: ours.forward(ids)))
            theirs_s.append(n / timed(lambda: torch_prefill(theirs, ids)))
        for n in contexts:
            ids = rng.integers(0, n_vocab, n).tolist()
            name = f"decode, {n}-token prompt (tokens/s)"
            ours_s, theirs_s = runs.setdefault(name, ([], []))
            ours_s.append(64 / ours_decode(ours, ids, 64))
            theirs_s.append(64 / torch_decode(theirs, ids, 64))
    return {name: paired(a, b) for name, (a, b) in runs.items()}


def paired(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
    """(median of ours, median of theirs, median of ours[i] / theirs[i]) for rates measured in alternating rounds.

    The ratio is taken round by round, each llmx run against the transformers run beside it. The host's speed
    drifts from minute to minute (in one run SmolLM2's 4,096-token pass took 10.6 s, and 11.5 s minutes later);
    within a round both sides see nearly the same host, where each side's median may come from other minutes."""
    return statistics.median(ours), statistics.median(theirs), statistics.median(a / b for a, b in zip(ours, theirs))


def timed(fn) -> float:
    settle()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def settle() -> None:
    """Let the other side's worker threads stop spinning (OpenMP and OpenBLAS busy-wait after their
    last call), so that they do not take a core from the run being timed."""
    time.sleep(0.3)


def ours_decode(model, ids, n_new) -> float:
    """Seconds for n_new greedy tokens after the prompt, prompt excluded."""
    import numpy as np

    settle()
    logits, cache = model.forward(ids)
    start = time.perf_counter()
    for _ in range(n_new):
        logits, cache = model.forward([int(np.argmax(logits))], cache)
    return time.perf_counter() - start


def torch_prefill(model, ids):
    import torch

    with torch.inference_mode():
        return model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)


def torch_decode(model, ids, n_new) -> float:
    import torch

    settle()
    with torch.inference_mode():
        out = model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)
        start = time.perf_counter()
        for _ in range(n_new):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            out = model(token, past_key_values=out.past_key_values, use_cache=True)
        return time.perf_counter() - start


def bandwidth_probes(np) -> dict[str, float]:
    """Bytes/s of a float32 matrix-vector product over a 256 MB matrix, the operation decoding is made of, best of
    5 in each order: matrix @ vector (rows dotted with the vector: how llmx holds its weights, [out, in]) and
    vector @ matrix (rows scaled and summed: weights held [in, out]), which OpenBLAS streams at other rates."""
    matrix = np.random.default_rng(0).random((8192, 8192), dtype=np.float32)
    vector = np.ones(8192, np.float32)
    return {form: matrix.nbytes / min(timed(product) for _ in range(6))
            for form, product in (("matrix @ vector", lambda: matrix @ vector),
                                  ("vector @ matrix", lambda: vector @ matrix))}


def measure_bandwidth(np) -> float:
    """The memory's bandwidth as NumPy can read it: the faster of bandwidth_probes' two orders."""
    return max(bandwidth_probes(np).values())


def print_table(rows: dict[str, tuple]) -> None:
    """Rows (llmx, transformers) or, from `paired`, (llmx, transformers, ratio): the ratio of the medians unless
    given."""
    width = max(map(len, rows))
    print(f"\n{'':{width}}  {'llmx':>9}  {'transformers':>12}  {'ratio':>6}")
    for name, (ours, theirs, *ratio) in rows.items():
        print(f"{name:{width}}  {ours:9.1f}  {theirs:12.1f}  {(ratio[0] if ratio else ours / theirs):5.2f}x")


def print_process_figures(checkpoint: Path, repeats: int) -> None:
    """Whole-process figures: `llmx --help`, start to first token, peak RSS while generating."""
    llmx = [sys.executable, "-m", "llmx"]
    first_token = [*llmx, "continue", "-m", str(checkpoint), "Hullo, my name is", "--max-tokens", "1", "--seed", "1"]
    subprocess.run(first_token, capture_output=True, check=True)  # warm the page cache
    help_s = statistics.median(timed(lambda: subprocess.run([*llmx, "--help"], capture_output=True, check=True))
                               for _ in range(repeats))
    first_s = statistics.median(timed(lambda: subprocess.run(first_token, capture_output=True, check=True))
                                for _ in range(repeats))
    rss = peak_rss([*llmx, "continue", "-m", str(checkpoint), "Hullo, my name is", "--max-tokens", "64",
                    "--seed", "1"])
    weights = sum(f.stat().st_size for f in checkpoint.glob("*.safetensors"))
    print(f"\n`llmx --help`: {help_s:.3f} s; process start to first token (model cached): {first_s:.3f} s")
    print(f"peak RSS generating 64 tokens: {rss / 1e6:.0f} MB = {rss / weights:.2f}x the weight file "
          f"({weights / 1e6:.0f} MB)")


# Started from this (large) process, a child's peak RSS would count the pages it shares with us
# between fork and exec; a small launcher process measures it instead.
PEAK_RSS = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(usage.ru_maxrss * 1024 if status == 0 else -1)
"""


def peak_rss(command: list[str]) -> int:
    """Peak resident memory, in bytes, of running `command`."""
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True, check=True)
    if int(done.stdout) < 0:
        sys.exit(f"{' '.join(command)} failed")
    return int(done.stdout)


def load_gguf_pair(path: Path):
    """llmx's model and transformers' from the same GGUF file (both dequantize it to float32)."""
    import torch
    from llmx.engine import load
    from transformers import AutoModelForCausalLM

    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return load(str(path)), theirs


if __name__ == "__main__":
    main()
