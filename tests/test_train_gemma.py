"""Training Gemma 3: the NumPy backward pass against PyTorch autograd through transformers' Gemma3ForCausalLM,
parameter by parameter, on a tiny random model with every Gemma difference in play (scaled embeddings, sandwich
norms, query and key norms, GeGLU, query_pre_attn_scalar unlike the head size, a 4-position sliding window on
12-position rows, local and global layers with different RoPE bases, grouped-query heads); LoRA on it; and what
fine-tuning writes (a PEFT adapter, model folders) read back by peft, transformers and llmx."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_random_gemma3
from llmx.engine import load
from llmx.engine.train.export import save_adapter, save_model_folder
from llmx.engine.train.hffiles import config_json, write_json
from llmx.engine.train.lora import init_adapters, lora_spec, merged
from llmx.engine.train.net import logits_forward
from llmx.engine.train.params import to_params
from test_cli import run
from test_finetune import assert_peft_gives_llmx_logits
from test_train_grad import assert_float32_within, batch, llmx_grads, reference_for, relative_error, torch_grads

TINY = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            max_position_embeddings=64, rms_norm_eps=1e-5, bos_token_id=2, eos_token_id=1, pad_token_id=0,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 50000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}})
IDS = [2, 260, 283, 17, 291, 104, 288, 5, 276, 299, 270, 284, 261, 42]  # 14 positions: the window of 4 matters
# Float32 llmx and float32 transformers each lie within ~3e-5 of the exact logits of a tiny Gemma (see
# test_gemma3_hf.TINY_GEMMA_TOLERANCE: logits up to ~15); the adapters add one rank-4 product per layer: 1e-4.
TOLERANCE = 1e-4


def write_tiny_tokenizer(folder) -> None:
    """A SentencePiece-style tokenizer.json (engine/spm_json.py) of 300 tokens: 4 special ones, the 256 byte
    pieces, letters and a few merges; anything else falls back to bytes."""
    letters = list("\u2581etaoinshrdlucmfwypvbgkjqxz,.'")
    merged_pieces = [("t", "h"), ("h", "e"), ("\u2581", "t"), ("\u2581t", "h"), ("th", "e"), ("\u2581th", "e")]
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)] + letters
    pieces += ["".join(pair) for pair in merged_pieces]
    special = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                "special": True} for i, t in enumerate(pieces[:4])]
    write_json(folder / "tokenizer.json", {
        "version": "1.0", "added_tokens": special, "pre_tokenizer": None, "post_processor": None,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "decoder": None, "model": {"type": "BPE", "byte_fallback": True, "dropout": None, "unk_token": "<unk>",
                                   "vocab": {t: i for i, t in enumerate(pieces)},
                                   "merges": [" ".join(pair) for pair in merged_pieces]}})
    write_json(folder / "tokenizer_config.json", {"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": True})


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    """A 3-block Gemma 3 (blocks 0, 2 local, block 1 global) with random weights: embeddings N(0, 1), matrices
    N(0, 0.2), norm weights on a 2**-10 grid in [-0.5, 0.5] (1 + w exact in float32 as in float64)."""
    folder = write_random_gemma3(tmp_path_factory.mktemp("tiny-gemma3-train"), TINY)
    write_tiny_tokenizer(folder)
    return folder


def transformers_logits(folder_or_model) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = folder_or_model
    if not hasattr(model, "forward"):
        model = AutoModelForCausalLM.from_pretrained(folder_or_model, dtype="float32").eval()
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].numpy()


def test_the_tiny_model_has_every_gemma_difference(tiny_gemma):
    cfg = load(str(tiny_gemma)).config
    assert cfg.local_layers == (0, 2) and cfg.sliding_window == 4 < len(IDS) and cfg.n_kv_head < cfg.n_head
    assert cfg.rope_local_theta != cfg.rope_theta and cfg.query_pre_attn_scalar != cfg.d_head
    assert cfg.post_norms and cfg.qk_norm and cfg.mlp == "geglu" and cfg.embed_scale and cfg.tied


def gemma_batch(n_vocab: int, seed: int = 0):
    """test_train_grad's batch without the pad token (0) among the inputs: transformers' embedding has
    padding_idx = pad_token_id, which gives that row no gradient from its lookups (llmx's is the true gradient)."""
    ids, targets, mask = batch(n_vocab, seed)
    return np.where(ids == TINY["pad_token_id"], 3, ids), targets, mask


def test_every_gradient_equals_autograd_in_float64(tiny_gemma):
    """Every parameter, the norms' included: Hugging Face's norm weight is w where llmx's is the multiplier 1 + w,
    so the two gradients are the same (d(1 + w)/dw = 1)."""
    model = load(str(tiny_gemma))
    ids, targets, mask = gemma_batch(model.config.n_vocab)
    assert (ids == TINY["pad_token_id"]).sum() == 0 < (batch(model.config.n_vocab)[0] == 0).sum()
    expected_loss, expected = torch_grads(reference_for(tiny_gemma), ids, targets, mask)
    loss, grads = llmx_grads(model, np.float64, ids, targets, mask)
    assert abs(loss - expected_loss) < 1e-12
    assert set(grads) == set(expected) and any("q_norm" in name for name in grads)
    for name, g in grads.items():
        assert relative_error(g, expected[name]) < 1e-10, name


def test_float32_gradients_are_within_rounding_of_float64(tiny_gemma):
    """float32 against llmx's own float64. Each gradient is a few dozen float32 operations deep (3 blocks of four
    norms, two products, attention and GeGLU each way), each a sum of at most 300 terms (the vocabulary) on values
    up to ~40 (the logits); relative to a tensor's largest entry the rounding stays ~sqrt(depth * n) * 2**-24 ~
    1e-5, and the loss, a mean of log-probabilities up to ~40, within ~40 * 1e-6. 1e-4 for both leaves a margin
    (the norms' backward divides by the rms, which amplifies where a row is small). Measured: 5e-7 and 1e-6."""
    model = load(str(tiny_gemma))
    assert_float32_within(model, *gemma_batch(model.config.n_vocab, seed=1), loss_bound=1e-4, grad_bound=1e-4)


def test_the_training_forward_equals_the_inference_forward(tiny_gemma):
    model = load(str(tiny_gemma))
    params = to_params(model.weights, np.float64)
    ours, _ = logits_forward(params, model.config, np.array([IDS]))
    from float64 import llmx_float64

    expected, _ = llmx_float64(model).forward(IDS, all_logits=True)
    assert np.abs(ours[0] - expected).max() < 1e-10


def random_adapter(model, directory, params=None):
    """Rank-4 adapters on every module with random A and B (B = 0 would not test anything), saved as PEFT does."""
    params = to_params(model.weights) if params is None else params
    spec = lora_spec(model.config, 4, 8.0)
    rng = np.random.default_rng(0)
    for name in init_adapters(params, spec, rng):
        params[name][...] = rng.normal(0, 0.1, params[name].shape)
    save_adapter(directory, params, spec, model.config, str(model.path), None)
    return params, spec


def test_lora_starts_at_the_base_and_merging_changes_nothing(tiny_gemma, tmp_path):
    model = load(str(tiny_gemma))
    params = to_params(model.weights, np.float64)
    spec = lora_spec(model.config, 4, 8.0)
    init_adapters(params, spec, np.random.default_rng(0))  # B = 0
    base, _ = logits_forward(params, model.config, np.array([IDS]))
    start, _ = logits_forward(params, model.config, np.array([IDS]), spec)
    assert np.array_equal(base, start)
    params, spec = random_adapter(model, tmp_path / "adapter", params)
    adapted, _ = logits_forward(params, model.config, np.array([IDS]), spec)
    folded, _ = logits_forward(merged(params, spec), model.config, np.array([IDS]))
    assert np.abs(adapted - base).max() > 1e-2 and np.abs(adapted - folded).max() < 1e-10


def test_the_adapter_loads_in_peft_with_gemmas_module_names_and_gives_llmx_logits(tiny_gemma, tmp_path):
    random_adapter(load(str(tiny_gemma)), tmp_path / "adapter")
    targets = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert targets == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert_peft_gives_llmx_logits(tiny_gemma, tmp_path / "adapter", IDS, TOLERANCE)


def test_the_merged_folder_and_its_written_config_load_in_transformers_and_llmx(tiny_gemma, tmp_path):
    """The model folder stores norm weights as Hugging Face's w (the multiplier less 1); config.json, written
    from llmx's Config (as from a GGUF base), gives the same model as the one transformers wrote."""
    model = load(str(tiny_gemma))
    params, spec = random_adapter(model, tmp_path / "adapter")
    save_model_folder(tmp_path / "merged", merged(params, spec), model)
    write_json(tmp_path / "merged" / "config.json", config_json(model.config, model.tokenizer))
    expected, _ = load(str(tiny_gemma), adapter=str(tmp_path / "adapter")).forward(IDS, all_logits=True)
    again = load(str(tmp_path / "merged"))
    assert again.config == model.config
    assert np.abs(again.forward(IDS, all_logits=True)[0] - expected).max() < TOLERANCE
    assert np.abs(transformers_logits(tmp_path / "merged") - expected).max() < TOLERANCE


def test_finetune_cli_trains_gemma_with_lora_and_full(tiny_gemma, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the three then there the other the theatre " * 40)
    common = ["finetune", "-m", str(tiny_gemma), "--data", str(text), "--ctx", "12", "--steps", "3", "--lr", "1e-2"]
    r = run(*common, "--out", str(tmp_path / "lora"), "--merge")
    assert r.exit_code == 0, r.stderr
    adapted, _ = load(str(tiny_gemma), adapter=str(tmp_path / "lora")).forward(IDS, all_logits=True)
    assert np.abs(transformers_logits(tmp_path / "lora" / "merged") - adapted).max() < TOLERANCE
    r = run(*common, "--out", str(tmp_path / "full"), "--full")
    assert r.exit_code == 0, r.stderr
    ours, _ = load(str(tmp_path / "full")).forward(IDS, all_logits=True)
    before, _ = load(str(tiny_gemma)).forward(IDS, all_logits=True)
    assert np.abs(ours - before).max() > 1e-3
    assert np.abs(transformers_logits(tmp_path / "full") - ours).max() < TOLERANCE


def test_every_training_row_starts_with_bos_when_the_tokenizer_adds_it(tiny_gemma, tmp_path):
    """Gemma expects BOS first: each row is BOS and the next --ctx tokens of the stream (texts joined with EOS,
    without encode's own BOS), so that every stream token is predicted once."""
    from llmx.engine.train.data import load_data

    tokenizer = load(str(tiny_gemma)).tokenizer
    (tmp_path / "a.txt").write_text("the other")
    (tmp_path / "b.txt").write_text("theatre there")
    data = load_data([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], tokenizer, 4)
    stream = tokenizer.encode("the other")[1:] + [1] + tokenizer.encode("theatre there")[1:] + [1]
    assert tokenizer.add_bos and tokenizer.encode("the")[0] == 2
    assert data.tokens.tolist() == [[2, *stream[i:i + 4]] for i in range(0, len(stream) - 3, 4)]
    assert len(data) == len(stream) // 4 and data.mask.all()


def test_a_gemma_gguf_base_writes_a_tokenizer_json_and_config_that_llmx_and_transformers_read(tmp_path):
    """From the Gemma 3 270M GGUF file (its SentencePiece vocabulary, scores and token types): tokenizer.json
    tokenizes as the GGUF file does in llmx and in Hugging Face's `tokenizers` (transformers' fast tokenizers,
    told as llama.cpp's special=False to read control-token text as text), and config.json gives back llmx's
    Config. The weights of such a folder are written as the tiny model's are (test above); the whole 270M folder,
    written and loaded back, gave identical llmx logits and transformers' within 5.4e-5 (logits up to 30)."""
    from tokenizers import Tokenizer
    from transformers import AutoConfig

    from conftest import test_data
    from llmx.engine.arch import gemma3
    from llmx.engine.formats import gguf
    from llmx.engine.loader import load_tokenizer
    from llmx.engine.train.hffiles import write_gguf_companions
    from test_gemma3 import GEMMA3, HARD_TEXTS

    path = test_data(GEMMA3)
    cfg = gemma3.config_from_gguf(gguf.read_gguf_header(path, arrays=False), str(path))
    from_gguf = load_tokenizer(str(path))
    write_gguf_companions(tmp_path, path, cfg, from_gguf, gemma3.GGUF_PRE_TOKENIZER)
    written = json.loads((tmp_path / "config.json").read_text())
    assert gemma3.config_from_hf(written, "config.json") == cfg
    assert AutoConfig.from_pretrained(tmp_path).layer_types[5] == "full_attention"
    ours, theirs = gemma3.tokenizer(tmp_path, cfg.n_vocab), Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert ours.encode("<start_of_turn>", special=True) == [2, 105] == theirs.encode("<start_of_turn>").ids
    theirs.encode_special_tokens = True
    for text in HARD_TEXTS + [" " * 40 + "x", "<start_of_turn>user\nhi"]:
        expected = from_gguf.encode(text)
        assert ours.encode(text) == expected, text
        assert theirs.encode(text).ids == expected, text
