"""Training throughput: one `llmx finetune` step against the same step in PyTorch, LoRA and full.

    python bench/finetune.py --smollm2 .cache/test-data/SmolLM2-135M-Instruct.Q4_1.gguf   # or through bench.py:
    python bench/bench.py --finetune --smollm2 .cache/test-data/SmolLM2-135M-Instruct.Q4_1.gguf

A step is forward, cross-entropy, backward, gradient clipping and AdamW on --batch rows of --ctx random tokens.
PyTorch runs transformers' model (GPT2LMHeadModel / LlamaForCausalLM from the same weights) in float32, without
dropout, with peft's LoRA on the same modules (all linear layers of the blocks, rank 8, alpha 16) or every weight
trainable, torch.optim.AdamW and clip_grad_norm_. Both sides get the same threads (llmx splits the batch's rows
between them, see engine/train/step.py; PyTorch splits each operation); steps alternate, after one warm-up step
each, and the medians are reported as tokens/s (batch x ctx / step time). Timings on a machine shared with other
work say little: a busy core stalls every product split between threads (PyTorch's too), so compare on a quiet one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import print_table, timed, use_threads, write_checkpoint  # noqa: E402

RANK, ALPHA, LR = 8, 16.0, 1e-4


def llmx_step(model, full: bool, ids):
    """A function doing one llmx training step on `ids` [batch, ctx + 1], as `llmx finetune` does."""
    import numpy as np
    from llmx.engine.train.lora import init_adapters, lora_spec
    from llmx.engine.train.optim import AdamW, adamw_state
    from llmx.engine.train.params import to_params
    from llmx.engine.train.step import train_step

    params = to_params(model.weights, copy=full)
    lora = None if full else lora_spec(model.config, RANK, ALPHA)
    trainable = set(params) if full else set(init_adapters(params, lora, np.random.default_rng(0)))
    state, opt = adamw_state(params, trainable), AdamW(lr=LR)
    batch = [(ids[:, :-1], ids[:, 1:], np.ones(ids[:, 1:].shape, np.int64))]
    return lambda: train_step(params, model.config, batch, state, opt, LR, trainable=trainable, lora=lora)


def torch_step(reference, full: bool, ids):
    """A function doing the same step with transformers (+ peft) and torch.optim.AdamW."""
    import torch

    if not full:
        from peft import LoraConfig, get_peft_model

        reference = get_peft_model(reference, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                                         target_modules="all-linear"))
    reference.eval()  # no dropout, as llmx; gradients flow all the same
    trained = [p for p in reference.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=LR, weight_decay=0.0)
    inputs, labels = torch.tensor(ids[:, :-1]), torch.tensor(ids[:, 1:])

    def step():
        logits = reference(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def cpu_timed(fn) -> float:
    """CPU seconds fn takes, in all the process's threads: the work done, however much of the cores other processes
    take. With --threads 1 a fair comparison on a busy machine; with more it also counts threads spinning idle."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def compare_training(load_ours, load_theirs, label: str, batch: int, ctx: int, repeats: int, clock=timed) -> dict:
    """{row name: (llmx tokens/s, PyTorch tokens/s)} for LoRA and full training of one model (per CPU second with
    clock=cpu_timed)."""
    import numpy as np

    rows = {}
    for full in (False, True):
        model = load_ours()
        ids = np.random.default_rng(0).integers(0, model.config.n_vocab, (batch, ctx + 1))
        ours, theirs = llmx_step(model, full, ids), torch_step(load_theirs(), full, ids)
        ours(), theirs()  # warm-up: first-touch of optimizer state, allocator pools
        times = [(clock(ours), clock(theirs)) for _ in range(repeats)]
        unit = "tokens/CPU s" if clock is cpu_timed else "tokens/s"
        name = f"{label}, {'full' if full else f'LoRA r{RANK}'}, {batch} x {ctx} ({unit})"
        rows[name] = tuple(batch * ctx / statistics.median(t) for t in zip(*times))
        del ours, theirs
    return rows


def print_finetune_rows(gpt2_checkpoint: Path, smollm2: Path | None, repeats: int, batch: int = 4,
                        ctx: int = 256, clock=timed) -> None:
    import torch
    from llmx.engine import load
    from transformers import AutoModelForCausalLM

    print(f"\ntraining step (forward, backward, clip, AdamW), llmx vs PyTorch {torch.__version__} "
          f"(+ peft for LoRA), {torch.get_num_threads()} threads, medians of {repeats}:")
    rows = compare_training(lambda: load(str(gpt2_checkpoint)),
                            lambda: AutoModelForCausalLM.from_pretrained(gpt2_checkpoint, dtype=torch.float32),
                            "GPT-2 small", batch, ctx, repeats, clock)
    if smollm2:
        rows |= compare_training(lambda: load(str(smollm2)), lambda: AutoModelForCausalLM.from_pretrained(
            smollm2.parent, gguf_file=smollm2.name, dtype=torch.float32), "SmolLM2-135M", batch, ctx, repeats, clock)
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="alternating steps per measurement")
    parser.add_argument("--smollm2", type=Path, help="also compare on this SmolLM2 GGUF file")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=256)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time CPU seconds, not wall-clock (use with --threads 1)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("LLMX_THREADS", os.cpu_count())))
    args = parser.parse_args()
    use_threads(args.threads)
    print_finetune_rows(write_checkpoint("small"), args.smollm2, args.repeats, args.batch, args.ctx,
                        cpu_timed if args.cpu_time else timed)


if __name__ == "__main__":
    main()
