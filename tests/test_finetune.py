"""Fine-tuning's outputs: PEFT adapters that peft + transformers load, merged folders, data, and `llmx finetune`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmx.engine import load
from llmx.engine.errors import InputError
from llmx.engine.train.data import from_pairs, load_data
from llmx.engine.train.export import save_adapter, save_model_folder
from llmx.engine.train.lora import init_adapters, lora_spec, merged
from llmx.engine.train.params import to_params
from test_cli import run

# Float32 llmx and float32 transformers each lie within float64.TINY_FLOAT32_TOLERANCE (1e-5) of the exact logits
# of these tiny models; the adapters add one rank-4 product per layer of the same size: 1e-4 leaves a margin of 5x.
TOLERANCE = 1e-4
IDS = [464, 3139, 286, 4881, 318, 6342, 13, 383, 11, 262]


@pytest.fixture(params=["gpt2", "llama"])
def base(request, tiny_gpt2, tiny_llama):
    return tiny_gpt2 if request.param == "gpt2" else tiny_llama


def random_adapter(model, directory, last_blocks=None):
    """An adapter with random A and B (B = 0 would not test anything), saved in PEFT's layout."""
    params = to_params(model.weights)
    spec = lora_spec(model.config, 4, 8.0, last_blocks=last_blocks)
    rng = np.random.default_rng(0)
    for name in init_adapters(params, spec, rng):
        params[name][...] = rng.normal(0, 0.1, params[name].shape)
    save_adapter(directory, params, spec, model.config, str(model.path), last_blocks)
    return params, spec


def transformers_logits(model, ids: list[int] = IDS) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("last_blocks", [None, 1])
def test_the_adapter_loads_in_peft_and_gives_llmx_logits(base, tmp_path, last_blocks):
    random_adapter(load(str(base)), tmp_path / "adapter", last_blocks)
    assert_peft_gives_llmx_logits(base, tmp_path / "adapter", IDS, TOLERANCE)


def assert_peft_gives_llmx_logits(base, adapter, ids: list[int], tolerance: float) -> None:
    """The adapter changes llmx's logits for `ids`, and PEFT loading it onto transformers' model of `base` gives
    llmx's logits within `tolerance`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ours, _ = load(str(base), adapter=str(adapter)).forward(ids, all_logits=True)
    plain, _ = load(str(base)).forward(ids, all_logits=True)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype="float32"), adapter).eval()
    assert np.abs(ours - plain).max() > 1e-2  # the adapter matters
    assert np.abs(ours - transformers_logits(reference, ids)).max() < tolerance


def test_the_merged_folder_loads_in_transformers_and_llmx(base, tmp_path):
    from transformers import AutoModelForCausalLM

    model = load(str(base))
    params, spec = random_adapter(model, tmp_path / "adapter")
    save_model_folder(tmp_path / "merged", merged(params, spec), model)
    expected, _ = load(str(base), adapter=str(tmp_path / "adapter")).forward(IDS, all_logits=True)
    ours, _ = load(str(tmp_path / "merged")).forward(IDS, all_logits=True)
    theirs = transformers_logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype="float32").eval())
    assert np.abs(ours - expected).max() < TOLERANCE
    assert np.abs(theirs - expected).max() < TOLERANCE


def test_prompt_tokens_do_not_count_unless_asked(tiny_gpt2):
    tokenizer = load(str(tiny_gpt2)).tokenizer
    prompt, completion = "Q: 2+2? A:", " 4"
    n_prompt, n_completion = len(tokenizer.encode(prompt)), len(tokenizer.encode(completion)) + 1  # + end of text
    data = from_pairs([(prompt, completion)], tokenizer, 16, train_on_prompt=False)
    assert data.mask[0].tolist() == [0] * (n_prompt - 1) + [1] * n_completion + [0] * (17 - n_prompt - n_completion)
    # the first counted prediction is the completion's first token
    assert data.tokens[0, n_prompt] == tokenizer.encode(completion)[0]
    everything = from_pairs([(prompt, completion)], tokenizer, 16, train_on_prompt=True)
    assert everything.mask[0].sum() == n_prompt + n_completion - 1


def test_text_files_join_with_end_of_text_into_windows(tiny_gpt2, tmp_path):
    tokenizer = load(str(tiny_gpt2)).tokenizer
    (tmp_path / "a.txt").write_text("one two three four five six seven")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "eight nine ten"}) + "\n")
    data = load_data([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")], tokenizer, 4)
    joined = tokenizer.encode("one two three four five six seven") + [50256] + tokenizer.encode("eight nine ten") + [50256]
    assert data.tokens.tolist() == [joined[0:5], joined[4:9], joined[8:13]][:len(data)]
    assert len(data) == (len(joined) - 1) // 4 and data.mask.all()


def test_finetune_cli_end_to_end(tiny_gpt2, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question. " * 30)
    out, log = tmp_path / "out", tmp_path / "log.jsonl"
    r = run("finetune", "-m", str(tiny_gpt2), "--data", str(text), "--out", str(out), "--steps", "4", "--ctx", "16",
            "--lr", "1e-2", "--warmup", "1", "--valid-fraction", "0.2", "--eval-every", "2", "--log", str(log))
    assert r.exit_code == 0, r.stderr
    assert f"saved {out}" in r.stderr and r.stdout == ""
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2, 3, 4]  # step 0: the validation loss before training
    assert set(lines[0]) == {"step", "loss", "val_loss", "lr", "tok_s"} and lines[0]["loss"] is None
    assert [line["val_loss"] is not None for line in lines] == [True, False, True, False, True]
    assert lines[-1]["loss"] < lines[1]["loss"] and lines[-1]["val_loss"] < lines[0]["val_loss"]
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "checkpoint"]
    r = run("predict", "-m", str(tiny_gpt2), "--adapter", str(out), "--json", "To be, or not")
    plain = run("predict", "-m", str(tiny_gpt2), "--json", "To be, or not")
    assert r.exit_code == 0 and json.loads(r.stdout) != json.loads(plain.stdout)
    r = run("finetune", "merge", "-m", str(tiny_gpt2), "--adapter", str(out), "--out", str(tmp_path / "merged"))
    assert r.exit_code == 0, r.stderr
    adapted = json.loads(run("predict", "-m", str(tiny_gpt2), "--adapter", str(out), "--json", "To be, or not").stdout)
    folded = json.loads(run("predict", "-m", str(tmp_path / "merged"), "--json", "To be, or not").stdout)
    assert [p["id"] for p in folded["predictions"]] == [p["id"] for p in adapted["predictions"]]
    assert max(abs(p["logit"] - q["logit"]) for p, q in zip(folded["predictions"], adapted["predictions"])) < 1e-4


def interrupt_at(monkeypatch, step: int) -> None:
    """Make the training loop raise KeyboardInterrupt (as Ctrl-C does) before step `step` + 1."""
    from llmx.engine.train import finetune

    real = finetune.train_step

    def interrupted(*args, **kwargs):
        if args[3]["step"] == step:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "train_step", interrupted)


def test_ctrl_c_saves_a_checkpoint_exits_130_and_resume_continues_as_one_run(tiny_gpt2, tmp_path, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text("All the world's a stage, and all the men and women merely players. " * 20)
    common = ["finetune", "-m", str(tiny_gpt2), "--data", str(text), "--ctx", "16", "--lr", "1e-2", "--steps", "4"]
    assert run(*common, "--out", str(tmp_path / "straight")).exit_code == 0
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        r = run(*common, "--out", str(tmp_path / "half"))
    assert r.exit_code == 130
    assert f"continue with --resume {tmp_path / 'half'}" in r.stderr
    assert json.loads((tmp_path / "half" / "checkpoint" / "trainer.json").read_text())["step"] == 2
    r = run(*common, "--out", str(tmp_path / "resumed"), "--resume", str(tmp_path / "half"))
    assert r.exit_code == 0, r.stderr
    straight = (tmp_path / "straight" / "adapter_model.safetensors").read_bytes()
    assert straight == (tmp_path / "resumed" / "adapter_model.safetensors").read_bytes()
    assert straight != (tmp_path / "half" / "adapter_model.safetensors").read_bytes()


def test_a_real_ctrl_c_finishes_the_step_under_way(tiny_gpt2, tmp_path, monkeypatch):
    import os
    import signal

    from llmx.engine.train import finetune

    real = finetune.train_step

    def signalled(*args, **kwargs):
        if args[3]["step"] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # during the second step
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "train_step", signalled)
    text = tmp_path / "text.txt"
    text.write_text("Now is the winter of our discontent. " * 20)
    before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler; SIG_IGN in a job started with `&`
    r = run("finetune", "-m", str(tiny_gpt2), "--data", str(text), "--ctx", "16", "--out", str(tmp_path / "out"),
            "--log", str(tmp_path / "log.jsonl"))
    assert r.exit_code == 130 and "stopping after this step" in r.stderr
    assert json.loads((tmp_path / "out" / "checkpoint" / "trainer.json").read_text())["step"] == 2
    logged = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2]  # the step the Ctrl-C saved is in the log too
    assert signal.getsignal(signal.SIGINT) is before  # put back


def test_resume_refuses_other_options(tiny_gpt2, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("Friends, Romans, countrymen, lend me your ears. " * 20)
    common = ["finetune", "-m", str(tiny_gpt2), "--data", str(text), "--ctx", "16", "--steps", "1"]
    assert run(*common, "--out", str(tmp_path / "a")).exit_code == 0
    r = run(*common, "--lora-rank", "4", "--out", str(tmp_path / "b"), "--resume", str(tmp_path / "a"))
    assert r.exit_code == 1 and "resume with the same ones" in r.stderr


def test_finetune_needs_data_and_out(tiny_gpt2):
    r = run("finetune", "-m", str(tiny_gpt2))
    assert r.exit_code == 2 and "--data FILE" in r.stderr


def test_full_training_writes_a_model_folder_transformers_loads(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    text = tmp_path / "text.txt"
    text.write_text("Once more unto the breach, dear friends, once more. " * 20)
    r = run("finetune", "-m", str(tiny_llama), "--data", str(text), "--ctx", "16", "--steps", "2", "--full",
            "--lr", "1e-3", "--out", str(tmp_path / "full"))
    assert r.exit_code == 0, r.stderr
    ours, _ = load(str(tmp_path / "full")).forward(IDS, all_logits=True)
    before, _ = load(str(tiny_llama)).forward(IDS, all_logits=True)
    theirs = transformers_logits(AutoModelForCausalLM.from_pretrained(tmp_path / "full", dtype="float32").eval())
    assert np.abs(ours - before).max() > 1e-3
    assert np.abs(ours - theirs).max() < TOLERANCE
    assert not (tmp_path / "full" / "adapter_config.json").exists()


TEXT = "Hullo, my name is 12345 and\n\n  I'll say it's naïve 🙂"


def check_gguf_export(gguf_path, folder) -> None:
    """A full folder written from a GGUF base: llmx reads the same model and tokens back, transformers the same
    logits (TOLERANCE) and tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = load(str(gguf_path))
    save_model_folder(folder, to_params(model.weights), model)
    again = load(str(folder))
    ids = model.tokenizer.encode(TEXT)
    assert again.tokenizer.encode(TEXT) == ids and again.config.n_layer == model.config.n_layer
    expected, _ = model.forward(ids, all_logits=True)
    assert np.array_equal(again.forward(ids, all_logits=True)[0], expected)
    assert AutoTokenizer.from_pretrained(folder)(TEXT)["input_ids"] == (model.tokenizer.start_ids if
                                                                      model.tokenizer.add_bos else []) + ids
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").eval()
    import torch

    with torch.no_grad():
        theirs = reference(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(theirs - expected).max() < TOLERANCE * max(1.0, np.abs(expected).max() / 2)


def test_a_folder_from_a_tiny_gguf_base_loads_in_llmx_and_transformers(tmp_path, tiny_llama, tiny_gpt2, gpt2_vocab):
    from test_gguf import gpt2_gguf_tensors, gpt2_tokenizer_metadata, write_gguf, write_tiny_llama_gguf

    check_gguf_export(write_tiny_llama_gguf(tmp_path / "tiny.gguf", tiny_llama, gpt2_vocab), tmp_path / "llama")
    meta = {"gpt2.context_length": 64, "gpt2.embedding_length": 64, "gpt2.feed_forward_length": 256,
            "gpt2.block_count": 2, "gpt2.attention.head_count": 4, "gpt2.attention.layer_norm_epsilon": 1e-5,
            **gpt2_tokenizer_metadata(gpt2_vocab)}
    gpt2 = write_gguf(tmp_path / "gpt2.gguf", "gpt2", meta, gpt2_gguf_tensors(tiny_gpt2, np.float32))
    check_gguf_export(gpt2, tmp_path / "gpt2")


def test_a_folder_from_smollm2_gguf_exports_its_tokenizer_as_tokenizer_json(tmp_path):
    """SmolLM2's logits reach ~20 in magnitude through 30 blocks: float32 llmx and transformers differ by ~6e-5
    there (measured), inside TOLERANCE scaled by the logits' size."""
    from conftest import test_data

    check_gguf_export(test_data("SmolLM2-135M-Instruct.Q4_1.gguf"), tmp_path / "smol")
    assert json.loads((tmp_path / "smol" / "tokenizer.json").read_text())["pre_tokenizer"]["pretokenizers"][0] == {
        "type": "Digits", "individual_digits": True}


def test_a_data_folder_reads_its_text_and_jsonl_files(tiny_gpt2, tmp_path):
    tokenizer = load(str(tiny_gpt2)).tokenizer
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("one two three four five six seven")
    (tmp_path / "data" / "b.jsonl").write_text(json.dumps({"prompt": "Q: 2+2? A:", "completion": " 4"}) + "\n")
    (tmp_path / "data" / "notes.md").write_text("not read")
    both = load_data([str(tmp_path / "data")], tokenizer, 4)
    apart = [load_data([str(tmp_path / "data" / name)], tokenizer, 4) for name in ("a.txt", "b.jsonl")]
    assert both.tokens.tolist() == apart[0].tokens.tolist() + apart[1].tokens.tolist()
    assert both.mask.tolist() == apart[0].mask.tolist() + apart[1].mask.tolist()


def test_a_model_with_steps_training_lacks_is_refused_before_training(tiny_llama):
    """Every step of the forward pass has its backward (Gemma 3's included: test_train_gemma.py); what is refused
    is an MLP the backward lacks and an architecture llmx cannot save under Hugging Face's names."""
    from dataclasses import replace

    from llmx.engine.train.finetune import check_trainable

    cfg = load(str(tiny_llama)).config
    check_trainable(cfg)  # Llama trains
    for change in ({"qk_norm": True}, {"mlp": "geglu"}, {"sliding_window": 4, "local_layers": (0,)}):
        check_trainable(replace(cfg, **change))  # Gemma's steps train on any model
    with pytest.raises(InputError, match="no backward pass for the relu MLP.*fine-tune a GPT-2, Llama, Qwen2 or Gemma 3"):
        check_trainable(replace(cfg, mlp="relu"))
    with pytest.raises(InputError, match="cannot train mamba models yet"):
        check_trainable(replace(cfg, arch="mamba"))
