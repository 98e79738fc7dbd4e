"""Sparse autoencoders over a model's activations: load SAELens' format, encode and decode, explore latents.

    from llmx.engine import load
    from llmx.engine.sae import load_sae, features, feature_card, steer_feature

    lm = load("gpt2")
    loaded = load_sae("jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre", lm)
    acts = loaded.sae.encode(x)   # [n, 768] -> [n, 24576]

model.py holds the SAE itself (NumPy, no model needed); saelens.py reads folders and maps hook names onto
llmx's; explore.py runs it on a model (features per token, a latent's card, steering with a latent).
"""

from .explore import (Context, FeatureAct, FeatureCard, Features, FeatureSteering, Histogram, OutputToken,
                      TokenFeatures, activations, check_feature, feature_card, feature_hooks, features,
                      output_tokens, steer_feature, text_ids)
from .model import ARCHITECTURES, NORMALIZATIONS, SparseAutoencoder
from .saelens import LoadedSae, llmx_site, load_sae, locate_sae

__all__ = ["Context", "FeatureAct", "FeatureCard", "Features", "FeatureSteering", "Histogram", "OutputToken",
           "TokenFeatures", "activations", "check_feature", "feature_card", "feature_hooks", "features",
           "output_tokens", "steer_feature", "text_ids", "ARCHITECTURES", "NORMALIZATIONS", "SparseAutoencoder",
           "LoadedSae", "llmx_site", "load_sae", "locate_sae"]
