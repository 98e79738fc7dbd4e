"""Every view of llmx, from Python: in a notebook (Jupyter, Colab) or a terminal.

    import llmx.show as show
    show.lens("gpt2", "The capital of France is")            # a model name, or a LanguageModel
    show.attention(model, "Hullo, my name is", layer=0, head=3)

Each function computes what its command computes and returns a `View`: Jupyter displays it as coloured
HTML, `print(view)` and `rich.print(view)` draw it in a terminal, `view.data` is the data (`view.json()`
what `--json` prints) and `view.save_svg(path)` saves the image `--svg` would.
"""

from __future__ import annotations

import dataclasses
import shutil
from functools import lru_cache

from .data import Predictions, record, scores_data, to_json, tokens_data
from .notices import warn


class View:
    """Data with the view that draws it; renders in Jupyter (HTML), Rich consoles and print()."""

    def __init__(self, data, view, title: str, model: str | None = None):
        self.data, self.view, self.title, self.model = data, view, title, model

    def build(self, width: int, color: bool) -> list:
        return self.view(self.data, width, color)

    def __rich_console__(self, console, options):
        yield from self.build(options.max_width, console.color_system is not None and not console.no_color)

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs) -> dict:
        from .render import html

        return {"text/plain": str(self), "text/html": html(self.build)}

    def __str__(self) -> str:
        return self.text()

    def text(self, width: int | None = None) -> str:
        """The view without colour, as the command prints it into a pipe (at the terminal's width)."""
        from .render import plain

        return plain(self.build, width or shutil.get_terminal_size().columns)

    def __repr__(self) -> str:
        return f"<llmx view: {self.title}; print() it, or look at .data>"

    def json(self) -> str:
        """What the command's --json prints."""
        return to_json(record(self.model, self.data))[0]

    def save_svg(self, path: str, width: int | None = None) -> None:
        """The view, coloured, as an SVG image (as --svg saves it)."""
        from .render import save_svg

        save_svg(self.build, str(path), self.title, width)


@lru_cache(maxsize=4)
def loaded(name: str):
    from .inputs import load_model

    return load_model(name)


def model_of(model):
    """A LanguageModel, as given or loaded by name (each name once)."""
    return loaded(model) if isinstance(model, str) else model


def name_of(model) -> str:
    return model if isinstance(model, str) else model.name


def tokens(model, text: str, special: bool = False) -> View:
    """`llmx tokenize TEXT`: how the text splits into tokens. `model` may be a tokenizer's model name."""
    from .views.tokens import tokens_view

    if isinstance(model, str):
        from .engine import load_tokenizer

        tokenizer = load_tokenizer(model)  # the weights are not needed
    else:
        tokenizer = model.tokenizer
    return View(tokens_data(tokenizer, tokenizer.encode(text, special=special)), tokens_view, "llmx tokenize",
                name_of(model))


def predict(model, text: str, top: int = 10) -> View:
    """`llmx predict TEXT`: the most likely next tokens."""
    from .commands.core import predict_text
    from .views.predict import predictions_view

    data: Predictions = predict_text(model_of(model), text, top, warn)
    return View(data, predictions_view, "llmx predict", name_of(model))


def score(model, text: str, bos: bool = False, stride: int | None = None) -> View:
    """`llmx score TEXT`: each token's surprisal and the totals."""
    from .views.score import score_view

    lm = model_of(model)
    data = scores_data(lm.score(lm.tokenizer.encode(text), bos=bos, stride=stride, on_notice=warn))
    return View(data, score_view, "llmx score", name_of(model))


def lens(model, text: str, position: int | None = None, top: int | None = None) -> View:
    """`llmx lens TEXT`: the logit lens, every layer by every position (or the top-k at one position)."""
    from .engine.interp import logit_lens
    from .views.lens import lens_position_view, lens_view

    lm = model_of(model)
    top = top or (5 if position is not None else 1)
    data = logit_lens(lm, lm.prompt_ids(text), top, None if position is None else [position], on_notice=warn)
    return View(data, lens_view if position is None else lens_position_view, "llmx lens", name_of(model))


def attention(model, text: str, layer: int, head: int | None = None) -> View:
    """`llmx attention TEXT --layer L [--head H]`: attention patterns of one block."""
    from .engine.interp import attention as run
    from .views.attention import attention_view

    lm = model_of(model)
    return View(run(lm, lm.prompt_ids(text), layer, head, on_notice=warn), attention_view, "llmx attention",
                name_of(model))


def heads(model, seq_len: int = 50, seed: int = 0, top: int = 10) -> View:
    """`llmx heads`: induction, previous-token and duplicate-token scores of every head, strongest first."""
    from .engine.interp import scan_heads
    from .views.attention import heads_view

    scan = scan_heads(model_of(model), seq_len, seed)
    return View(dataclasses.replace(scan, heads=scan.heads[:top]), heads_view, "llmx heads", name_of(model))


def neighbors(model, token: str | int, top: int = 10, raw: bool = False) -> View:
    """`llmx neighbors TOKEN` (a token's text, or its id as an int): its nearest tokens by embedding."""
    from .engine.interp import neighbors as run
    from .engine.interp import single_token
    from .views.neighbors import neighbors_view

    lm = model_of(model)
    token_id = token if isinstance(token, int) else single_token(lm, token)
    return View(run(lm, token_id, top, through_norm=not raw), neighbors_view, "llmx neighbors", name_of(model))


def explain(model, text: str, top: int = 5) -> View:
    """`llmx explain TEXT`: one prediction step by step."""
    from .engine.interp import explain as run
    from .views.explain import explain_view

    lm = model_of(model)
    return View(run(lm, lm.prompt_ids(text), top, on_notice=warn), explain_view, "llmx explain", name_of(model))


def steer(model, text: str, add: str, sub: str, layer: int, coef: float = 5.0, max_tokens: int = 40,
          temperature: float = 1.0, seed: int = 0) -> View:
    """`llmx steer TEXT --add A --sub S --layer L`: continuations with and without a steering vector."""
    from .engine import Sampling
    from .engine.interp import steer as run
    from .views.steer import steer_view

    data = run(model_of(model), text, add, sub, layer, coef, max_tokens, Sampling(temperature=temperature), seed,
               on_notice=warn)
    return View(data, steer_view, "llmx steer", name_of(model))


def attribute(model, text: str, target: str, foil: str | None = None, position: int = -1, top: int = 12) -> View:
    """`llmx attribute TEXT --target T [--foil F]`: each component's share of the logit (difference)."""
    from functools import partial

    from .engine.interp import attribute as run
    from .engine.interp import parse_token
    from .views.why import attribute_view

    lm = model_of(model)
    data = run(lm, lm.prompt_ids(text), parse_token(lm, target), foil and parse_token(lm, foil), position,
               on_notice=warn)
    return View(data, partial(attribute_view, top=top), "llmx attribute", name_of(model))


def patch(model, clean: str, corrupt: str, target: str, foil: str) -> View:
    """`llmx patch CLEAN CORRUPT --target T --foil F`: activation patching, every site."""
    from .engine.interp import parse_token
    from .engine.interp import patch as run
    from .views.why import patch_view

    lm = model_of(model)
    data = run(lm, lm.prompt_ids(clean), lm.prompt_ids(corrupt), parse_token(lm, target), parse_token(lm, foil))
    return View(data, patch_view, "llmx patch", name_of(model))


def features(model, text: str, sae: str, top: int = 5, sink: bool = False, center: bool | None = None) -> View:
    """`llmx features TEXT --sae SAE`: each token's most active SAE latents (SAE: a folder or owner/name/sub)."""
    from .commands.features import FeaturesData, load_sae
    from .engine.sae import features as run
    from .views.features import features_view

    lm = model_of(model)
    loaded = load_sae(lm, sae, center)
    result = run(lm, loaded, text, top, sink=sink, on_notice=warn)
    data = FeaturesData(result.sae, result.sink_left_out, result.tokens, loaded.site)
    return View(data, features_view, "llmx features", name_of(model))


def feature(model, feature_id: int, sae: str, data: str | None = None, contexts: int = 10, top: int = 10,
            center: bool | None = None) -> View:
    """`llmx feature ID --sae SAE`: a latent's card, from the SAE's index or from scanning the text `data`."""
    from .commands.features import load_sae
    from .engine.sae import feature_card
    from .engine.sae.index import read_index
    from .views.features import feature_view

    lm = model_of(model)
    loaded = load_sae(lm, sae, center)
    index = read_index(loaded.path) if data is None else None
    card = feature_card(lm, loaded, feature_id, index=index, text=data, top=top, n_contexts=contexts)
    return View(card, feature_view, "llmx feature", name_of(model))
