"""Read a sparse autoencoder saved in SAELens' format, from a folder or from a Hub repo's subfolder.

A folder holds `cfg.json` and `sae_weights.safetensors` (W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc,
b_dec, and `threshold` for JumpReLU), optionally `sparsity.safetensors` (log10 of each latent's firing rate)
and llmx's `llmx_index.safetensors`. Configs of SAELens >= 6 (`hook_name`, `architecture`, `k`, `metadata`)
and older ones (`hook_point`, `activation_fn_str`, `activation_fn_kwargs`) are both read.

    --sae ./my-sae                                          a local folder
    --sae jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre    owner/name on the Hub, then the
                                                            subfolder: downloaded once into the HF cache
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import SaeError
from ..formats.safetensors import read_safetensors
from ..lm import LanguageModel, ignore
from .model import ARCHITECTURES, NORMALIZATIONS, SparseAutoencoder

CFG, WEIGHTS, SPARSITY, INDEX = "cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "llmx_index.safetensors"
SITES = {  # TransformerLens' name inside block L -> llmx's (engine/hooks.py)
    "hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out", "mlp.hook_pre": "mlp.pre", "mlp.hook_post": "mlp.post",
    "attn.hook_z": "attn.z",
}
STREAM_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")  # [n_seq, n_embd]: the stream's width
HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class LoadedSae:
    """An SAE ready to run on one model: where it reads, and what its folder says about its latents."""

    ref: str  # as the user gave it (folder or owner/name/subfolder)
    path: Path  # the folder its files are in
    sae: SparseAutoencoder
    site: str  # llmx's hook name, e.g. "blocks.8.resid_pre"
    layer: int
    prepend_bos: bool  # whether it was trained on text after the model's start token (SAELens' default)
    log_sparsity: np.ndarray | None = field(default=None, repr=False)  # [d_sae] log10 firing rate, if given

    @property
    def on_stream(self) -> bool:
        """Whether it reads the residual stream (or a block's output), whose directions the unembedding reads."""
        return self.site.split(".", 2)[2] in STREAM_SITES


def llmx_site(hook: str) -> tuple[str, int]:
    """(llmx hook name, block) for a TransformerLens hook name like blocks.8.hook_resid_pre (or llmx's own)."""
    match = HOOK.match(hook or "")
    name = match and (SITES.get(match[2]) or (match[2] if match[2] in SITES.values() else None))
    if not name:
        known = ", ".join(f"blocks.L.{tl}" for tl in SITES)
        raise SaeError(f"the SAE reads hook '{hook}', which llmx does not have: llmx runs SAEs on {known}")
    return f"blocks.{match[1]}.{name}", int(match[1])


def site_width(lm: LanguageModel, site: str) -> int:
    """The width of one row of the activation at `site`."""
    name = site.split(".", 2)[2]
    if name.startswith("mlp."):
        return lm.config.n_ff
    if name == "attn.z":
        return lm.config.n_head * lm.config.d_head
    return lm.config.n_embd


def load_sae(ref: str, lm: LanguageModel, center: bool | None = None, on_notice=ignore) -> LoadedSae:
    """The SAE `ref` (a folder, or owner/name/subfolder on the Hub), checked against `lm`.

    center: remove the stream's mean before encoding; None decides from the config (see `trained_centered`)."""
    path = locate_sae(ref)
    cfg = read_cfg(path)
    settings = sae_settings(cfg, path)
    site, layer = llmx_site(settings["hook"])
    if layer >= lm.config.n_layer:
        raise SaeError(f"the SAE in {path} reads {settings['hook']}, but {lm.name} has blocks 0..{lm.config.n_layer - 1}:"
                       " is it made for another model?")
    if center is None:
        center = site.split(".", 2)[2] in STREAM_SITES and trained_centered(cfg, lm)
        if center:
            on_notice("the SAE was trained on TransformerLens' centred GPT-2 stream: removing the stream's mean "
                      "before encoding (--no-center to turn this off)")
    if settings["normalize"] == "expected_average_only_in" and settings["scale"] is None:
        on_notice(f"{path / CFG} asks for expected_average_only_in normalization but gives no norm_scaling_factor: "
                  "activations are encoded as they are (as SAELens does when it loads a folder)")
    sae = SparseAutoencoder(**read_weights(path, settings), **settings, center=center)
    check_fits(sae, lm, site, path)
    return LoadedSae(ref=ref, path=path, sae=sae, site=site, layer=layer, prepend_bos=prepend_bos(cfg),
                     log_sparsity=read_sparsity(path, sae.d_sae))


def check_fits(sae: SparseAutoencoder, lm: LanguageModel, site: str, path: Path) -> None:
    width = site_width(lm, site)
    if sae.d_in != width:
        raise SaeError(f"the SAE in {path} reads vectors of width {sae.d_in} at {site}, but {lm.name} has width "
                       f"{width} there: is it made for another model?")


def locate_sae(ref: str) -> Path:
    """The folder of `ref`: the path itself when it exists, else owner/name/subfolder fetched from the Hub."""
    path = Path(ref).expanduser()
    if path.exists() or ref.startswith((".", "/", "~")):
        if not (path / CFG).is_file():
            raise SaeError(f"{ref} has no {CFG}: give a folder in SAELens' format (cfg.json, sae_weights.safetensors)")
        return path
    parts = PurePosixPath(ref).parts
    if len(parts) < 2:
        raise SaeError(f"no such folder: {ref}; an SAE on the Hub is owner/name/subfolder, "
                       "e.g. jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre")
    return download_sae(f"{parts[0]}/{parts[1]}", "/".join(parts[2:]))


def download_sae(repo: str, sub: str) -> Path:
    """The folder `sub` of Hub repo `repo`, its files fetched once into the HF cache, all from one commit."""
    from ..hub import fetch

    def name(filename: str) -> str:
        return f"{sub}/{filename}" if sub else filename

    cfg = fetch(repo, name(CFG), optional=True)
    if cfg is None:
        raise SaeError(f"{repo} on the Hub has no {name(CFG)}: give owner/name/subfolder of a folder in SAELens' "
                       "format (the subfolder's name is often the hook, e.g. blocks.8.hook_resid_pre)")
    commit = cfg.parents[len(PurePosixPath(sub).parts)].name if sub else cfg.parent.name
    fetch(repo, name(WEIGHTS), commit)
    for optional in (SPARSITY, INDEX):
        fetch(repo, name(optional), commit, optional=True)
    return cfg.parent


def read_cfg(path: Path) -> dict:
    try:
        cfg = json.loads((path / CFG).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise SaeError(f"cannot read {path / CFG} ({type(e).__name__}): is it a SAELens SAE folder?") from None
    if not isinstance(cfg, dict):
        raise SaeError(f"{path / CFG} is not a JSON object: is it a SAELens SAE folder?")
    return cfg


def metadata(cfg: dict) -> dict:
    """SAELens 6's metadata block ("metadata", later "meta"); {} for older configs, which keep it all on top."""
    meta = cfg.get("metadata", cfg.get("meta"))
    return meta if isinstance(meta, dict) else {}


def setting(cfg: dict, *names, default=None):
    """The first of `names` found in the config or its metadata block."""
    for source in (cfg, metadata(cfg)):
        for key in names:
            if source.get(key) is not None:
                return source[key]
    return default


def sae_settings(cfg: dict, path: Path) -> dict:
    """SparseAutoencoder's settings from a config of any SAELens version (its handle_pre_6_0_config renames)."""
    where = path / CFG
    if setting(cfg, "hook_head_index", "hook_point_head_index") is not None:
        raise SaeError(f"{where}: the SAE reads one attention head (hook_head_index); llmx runs SAEs on whole hooks")
    normalize = cfg.get("normalize_activations")
    if isinstance(normalize, bool) or normalize is None:  # SAELens < 3: a flag for the April-update scaling
        normalize = "expected_average_only_in" if normalize else "none"
    if normalize not in NORMALIZATIONS:
        raise SaeError(f"{where}: normalize_activations '{normalize}' is not one llmx knows: "
                       f"{', '.join(NORMALIZATIONS)}")
    scale = cfg.get("norm_scaling_factor")
    architecture, k = architecture_of(cfg, where)
    return dict(architecture=architecture, k=k, hook=setting(cfg, "hook_name", "hook_point", default=""),
                apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)), normalize=normalize,
                scale=float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) else None)


def architecture_of(cfg: dict, where: Path) -> tuple[str, int | None]:
    """("standard" | "topk" | "jumprelu", k or None); before SAELens 6 TopK was activation_fn_str "topk"."""
    architecture = cfg.get("architecture") or "standard"
    activation = cfg.get("activation_fn", cfg.get("activation_fn_str")) or "relu"
    if architecture == "standard" and activation == "topk":
        architecture = "topk"
    if architecture not in ARCHITECTURES or (architecture == "standard" and activation != "relu"):
        kind = architecture if architecture not in ARCHITECTURES else f"standard with activation '{activation}'"
        raise SaeError(f"{where}: the SAE's architecture is {kind}; llmx runs {', '.join(ARCHITECTURES)} (ReLU) SAEs")
    if architecture != "topk":
        return architecture, None
    kwargs = cfg.get("activation_fn_kwargs")
    k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise SaeError(f"{where}: a topk SAE needs a whole k >= 1 (\"k\" or activation_fn_kwargs.k), not {k!r}")
    return architecture, k


def read_weights(path: Path, settings: dict) -> dict:
    """W_enc, W_dec, b_enc, b_dec (and threshold) as SparseAutoencoder's fields, their shapes checked."""
    tensors = read_safetensors(path / WEIGHTS) if (path / WEIGHTS).is_file() else None
    if tensors is None:
        raise SaeError(f"{path} has no {WEIGHTS}: llmx reads SAELens' safetensors weights")
    names = ["W_enc", "W_dec", "b_enc", "b_dec"]
    if settings["architecture"] == "jumprelu":
        if "threshold" not in tensors and "log_threshold" in tensors:
            tensors["threshold"] = np.exp(tensors["log_threshold"])
        names.append("threshold")
    for name in names:
        if name not in tensors:
            raise SaeError(f"{path / WEIGHTS} has no tensor '{name}': is it a {settings['architecture']} SAE?")
    check_scaling_factor(tensors, path)
    w = {name.lower(): np.ascontiguousarray(tensors[name]) for name in names}
    d_in, d_sae = w["w_enc"].shape if w["w_enc"].ndim == 2 else (0, 0)
    shapes = {"w_enc": (d_in, d_sae), "w_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,),
              "threshold": (d_sae,)}
    for name, array in w.items():
        if d_in == 0 or array.shape != shapes[name]:
            raise SaeError(f"{path / WEIGHTS}: tensor '{name}' has shape {list(array.shape)}, expected "
                           f"{list(shapes[name])} (W_enc is [d_in, d_sae]): delete the folder and fetch it again")
    return w


def check_scaling_factor(tensors: dict, path: Path) -> None:
    """SAELens < 4 saved a per-latent `scaling_factor`; all ones is harmless, anything else llmx does not apply."""
    factor = tensors.get("scaling_factor")
    if factor is not None and not np.allclose(factor, 1.0):
        raise SaeError(f"{path / WEIGHTS} has a fine-tuning scaling_factor, which llmx does not apply: "
                       "load it in SAELens and save it again with the factor folded into W_dec")


def read_sparsity(path: Path, d_sae: int) -> np.ndarray | None:
    """sparsity.safetensors' "sparsity" [d_sae] (log10 of each latent's firing rate), or None."""
    if not (path / SPARSITY).is_file():
        return None
    log = read_safetensors(path / SPARSITY).get("sparsity")
    return None if log is None or log.shape != (d_sae,) else np.asarray(log, dtype=np.float32)


def prepend_bos(cfg: dict) -> bool:
    """SAELens' prepend_bos (default True); `llmx sae train` writes it (its windows begin with the start
    token when the model's tokenizer adds one), and older llmx SAEs without it read windows without one."""
    return bool(setting(cfg, "prepend_bos", default="llmx" not in metadata(cfg)))


def trained_centered(cfg: dict, lm: LanguageModel) -> bool:
    """Whether the SAE expects TransformerLens' centred writing weights: a stream with mean 0 over d_model.

    TransformerLens centres them by default (from_pretrained's center_writing_weights=True) in LayerNorm
    models only; SAELens records its model_from_pretrained_kwargs since 2024 (then defaulting to False),
    so a config without them comes from a run on the default, centred model (jbloom's GPT-2 set).
    SAEs that llmx trained (metadata "llmx") never are."""
    if lm.config.norm != "layernorm" or "llmx" in metadata(cfg):
        return False
    if setting(cfg, "model_class_name", default="HookedTransformer") not in ("HookedTransformer",
                                                                               "HookedSAETransformer"):
        return False
    kwargs = setting(cfg, "model_from_pretrained_kwargs")
    if not isinstance(kwargs, dict):
        return True
    return bool(kwargs.get("center_writing_weights", True))
