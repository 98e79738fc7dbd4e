"""Fine-tuning a loaded model: LoRA or full training, validation, checkpoints to resume from, and the output."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..memory import one_malloc_arena
from .data import Dataset
from .export import save_adapter, save_model_folder
from .hfnames import hf_names
from .lora import init_adapters, lora_spec, merged
from .net import ACTIVATIONS, train_forward
from .optim import AdamW, adamw_state, schedule
from .params import to_params
from .step import train_step

CHECKPOINT = "checkpoint"  # the sub-folder of --out with the state to --resume from
MERGED = "merged"  # the sub-folder of --out with --merge's model folder


@dataclass(frozen=True)
class FinetuneOptions:
    steps: int = 100  # optimizer steps
    batch: int = 4  # rows per step
    ctx: int = 256  # tokens a row predicts
    lr: float = 2e-4  # peak learning rate
    warmup: int = 10  # steps of linear warm-up
    weight_decay: float = 0.0
    clip: float = 1.0  # global gradient norm
    accumulate: int = 1  # micro-batches per step (gradient accumulation): each has batch / accumulate rows
    full: bool = False  # train every parameter instead of LoRA adapters
    lora_rank: int = 8
    lora_alpha: float = 16.0
    targets: tuple[str, ...] | None = None  # LoRA modules (default: all linear ones)
    last_blocks: int | None = None  # LoRA on the last N blocks only
    eval_every: int = 50  # steps between validation losses (and at the last step)
    seed: int = 0


@dataclass(frozen=True)
class Progress:
    step: int  # steps done
    loss: float | None  # None before the first step
    val_loss: float | None
    lr: float
    tok_s: float  # training tokens per second in this step


def check_trainable(cfg) -> None:
    """Refuse, before any training, a model whose forward pass has steps the backward pass lacks, or that could
    train but not be saved (an architecture without a Hugging Face name map). The backward pass has every step
    of Config: GPT-2's, Llama's, Qwen2's and Gemma 3's (see net.py and gemma.py)."""
    hf_names(cfg)
    if cfg.mlp not in ACTIVATIONS:
        raise InputError(f"llmx cannot fine-tune {cfg.arch} models yet (no backward pass for the {cfg.mlp} MLP): "
                         "fine-tune a GPT-2, Llama, Qwen2 or Gemma 3 model")


class Finetune:
    """The training state of one run: parameters, optimizer moments and the step."""

    def __init__(self, model, options: FinetuneOptions, train: Dataset, valid: Dataset | None):
        if options.batch % options.accumulate:
            raise InputError(f"--batch {options.batch} is not a multiple of --accumulate {options.accumulate}")
        check_trainable(model.config)
        one_malloc_arena()  # before the row threads (and any progress thread) start
        self.model, self.options, self.train, self.valid = model, options, train, valid
        self.params = to_params(model.weights, copy=options.full)  # LoRA leaves the base as it is: shared
        if options.full:
            self.lora, self.trainable = None, set(self.params)
        else:
            self.lora = lora_spec(model.config, options.lora_rank, options.lora_alpha, options.targets,
                                  options.last_blocks)
            self.trainable = set(init_adapters(self.params, self.lora, np.random.default_rng(options.seed)))
        self.state = adamw_state(self.params, self.trainable)
        self.opt = AdamW(lr=options.lr, weight_decay=options.weight_decay)

    @property
    def step(self) -> int:
        return self.state["step"]

    def batches(self) -> list:
        """The next step's micro-batches of random training rows, a function of the seed and the step alone,
        so that a resumed run draws what an uninterrupted one would have."""
        rng = np.random.default_rng([self.options.seed, self.step])
        rows = rng.integers(0, len(self.train), self.options.batch)
        return [self.train.rows(part) for part in np.split(rows, self.options.accumulate)]

    def validation_loss(self) -> float | None:
        """Mean loss over the validation rows, in batches; None without validation data."""
        if self.valid is None:
            return None
        losses, weights = [], []
        for start in range(0, len(self.valid), self.options.batch):
            ids, targets, mask = self.valid.rows(slice(start, start + self.options.batch))
            losses.append(train_forward(self.params, self.model.config, ids, targets, mask, self.lora)[0])
            weights.append(mask.sum())
        return float(np.average(losses, weights=weights))

    def run(self, on_step=lambda progress: None, on_save=lambda step: None, save_every: int | None = None):
        """Train up to options.steps, calling on_step(Progress) after each step (and on_save after a checkpoint)."""
        o = self.options
        if self.step == 0 and self.valid is not None:  # where validation starts, to see how far it falls
            on_step(Progress(0, None, self.validation_loss(), 0.0, 0.0))
        while self.step < o.steps:
            started, lr = time.perf_counter(), schedule(self.step, o.lr, o.warmup, o.steps)
            result = train_step(self.params, self.model.config, self.batches(), self.state, self.opt, lr,
                                trainable=self.trainable, lora=self.lora, clip=o.clip)
            tok_s = o.batch * self.train.tokens.shape[1] / (time.perf_counter() - started)
            evaluate = self.step % o.eval_every == 0 or self.step == o.steps
            on_step(Progress(self.step, result.loss, self.validation_loss() if evaluate else None, lr, tok_s))
            if save_every and self.step % save_every == 0:
                on_save(self.step)

    def save(self, out: Path, *, merge: bool = False, base: str = "") -> None:
        """The result in `out`: with --full a model folder, else the LoRA adapter (and with merge the base with it
        merged in, as a model folder in out/merged); plus the checkpoint to resume from in out/checkpoint."""
        out = Path(out)
        if self.lora is None:
            save_model_folder(out, self.params, self.model)
        else:
            save_adapter(out, self.params, self.lora, self.model.config, base, self.options.last_blocks)
            if merge:
                save_model_folder(out / MERGED, merged(self.params, self.lora), self.model)
        self.save_checkpoint(out / CHECKPOINT)

    def save_checkpoint(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"p:{n}": self.params[n] for n in self.trainable}
        arrays |= {f"m:{n}": a for n, a in self.state["m"].items()} | {f"v:{n}": a for n, a in self.state["v"].items()}
        np.savez(folder / "state.npz", **arrays)
        (folder / "trainer.json").write_text(json.dumps(
            {"step": self.step, "options": asdict(self.options)}, indent=1))

    def resume(self, folder: Path) -> None:
        """Continue from the checkpoint in `folder` (an --out of an earlier run, or its checkpoint sub-folder)."""
        folder = Path(folder)
        folder = folder / CHECKPOINT if (folder / CHECKPOINT).is_dir() else folder
        if not (folder / "trainer.json").is_file():
            raise InputError(f"{folder} has no checkpoint (trainer.json): give --resume the --out of an earlier run")
        saved = json.loads((folder / "trainer.json").read_text())
        kept = {k: v for k, v in saved["options"].items() if k not in ("steps", "eval_every")}
        mine = {k: v for k, v in asdict(self.options).items() if k in kept}
        if json.loads(json.dumps(mine)) != kept:
            raise InputError(f"{folder} was trained with other options ({kept}): resume with the same ones")
        with np.load(folder / "state.npz") as arrays:
            for key in arrays.files:
                kind, name = key.split(":", 1)
                target = self.params if kind == "p" else self.state[kind]
                target[name][...] = arrays[key]
        self.state["step"] = saved["step"]
