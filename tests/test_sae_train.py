"""llmx sae train: the TopK SAE's hand-written gradients, its training on a known sparse ground truth,
the folding of the normalisation into the saved weights, and the command end to end on a tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from llmx.engine.sae.train.fit import FitOptions, Normalizer, fit, fold, normalizer
from llmx.engine.sae.train.topk import Params, aux_grads, encode, init_params, loss_and_grads, pre_acts, reconstruct


def random_params(d: int, m: int, seed: int) -> Params:
    rng = np.random.default_rng(seed)
    p = init_params(d, m, rng, np.float64)
    return Params(p.w_enc + 0.3 * rng.standard_normal(p.w_enc.shape), 0.1 * rng.standard_normal(m),
                  p.w_dec, 0.2 * rng.standard_normal(d))


def total_loss(p: Params, x, k, dead, k_aux, coef, fixed, e) -> float:
    """The loss as the gradients define it: the auxiliary loss's target e = x - x_hat held constant (no
    gradient flows through it) and the active set held fixed (it is piecewise constant: finite
    differences must not cross a change of the top-k, which the check makes sure of)."""
    step = loss_and_grads(p, x, k, dead, k_aux, 0.0)
    assert np.array_equal(np.sort(step.sparse.idx, axis=1), fixed)
    if coef == 0:
        return step.loss
    scratch = [np.zeros_like(p.w_enc), np.zeros_like(p.b_enc), np.zeros_like(p.w_dec)]
    return step.loss + aux_grads(p, x - p.b_dec, pre_acts(p, x), e, dead, k_aux, coef, scratch)


CASES = [  # (k_aux, aux_coef, dead latents): no AuxK; fewer dead than k_aux (scale < 1); more dead than k_aux
    (4, 0.0, ()), (16, 0.5, (1, 3, 5, 7, 11, 13, 17, 19)), (3, 0.5, (0, 2, 4, 6, 8, 10, 12, 14, 16, 18))]


def setting(dead_list, m=24):
    dead = np.zeros(m, bool)
    dead[list(dead_list)] = True
    return dead


@pytest.mark.parametrize("k_aux, coef, dead_list", CASES)
def test_gradients_match_finite_differences_in_float64(k_aux, coef, dead_list):
    # Central differences in float64 have an error of order eps^2 (the loss is a quadratic in each weight
    # while the active sets stay fixed) plus rounding of order 1e-16 / eps: about 1e-10 relative here.
    d, m, k, n = 8, 24, 4, 16
    p = random_params(d, m, seed=1)
    x = np.random.default_rng(2).standard_normal((n, d))
    dead = setting(dead_list, m)
    step = loss_and_grads(p, x, k, dead, k_aux, coef)
    fixed = np.sort(step.sparse.idx, axis=1)
    e = x - reconstruct(p, x, k)
    rng, eps = np.random.default_rng(3), 1e-6
    for name in ("w_enc", "b_enc", "w_dec", "b_dec"):
        value, grad = getattr(p, name), getattr(step.grads, name)
        for flat in rng.choice(value.size, size=min(value.size, 12), replace=False):
            at = np.unravel_index(flat, value.shape)
            up, down = value.copy(), value.copy()
            up[at] += eps
            down[at] -= eps
            f_up = total_loss(dataclasses.replace(p, **{name: up}), x, k, dead, k_aux, coef, fixed, e)
            f_down = total_loss(dataclasses.replace(p, **{name: down}), x, k, dead, k_aux, coef, fixed, e)
            assert grad[at] == pytest.approx((f_up - f_down) / (2 * eps), rel=1e-6, abs=1e-10), (name, at)


@pytest.mark.parametrize("k_aux, coef, dead_list", CASES)
def test_gradients_match_pytorch_autograd(k_aux, coef, dead_list):
    torch = pytest.importorskip("torch")
    d, m, k, n = 8, 24, 4, 16
    p = random_params(d, m, seed=4)
    x = np.random.default_rng(5).standard_normal((n, d))
    dead = setting(dead_list, m)
    step = loss_and_grads(p, x, k, dead, k_aux, coef)
    t = {f.name: torch.tensor(getattr(p, f.name), requires_grad=True) for f in dataclasses.fields(p)}
    loss = torch_loss(torch, t, torch.tensor(x), k, torch.tensor(dead), k_aux, coef)
    loss.backward()
    assert loss.item() == pytest.approx(step.loss + step.aux, rel=1e-12)
    for name, tensor in t.items():  # float64 both sides: only rounding differs
        np.testing.assert_allclose(getattr(step.grads, name), tensor.grad.numpy(), rtol=1e-9, atol=1e-14)


def torch_loss(torch, t, x, k, dead, k_aux, coef):
    """The same loss written plainly with torch ops (SAELens' TopK SAE and AuxK), for autograd."""
    n, d = x.shape
    pre = (x - t["b_dec"]) @ t["w_enc"] + t["b_enc"]
    top = torch.topk(pre, k, dim=1)
    acts = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    x_hat = acts @ t["w_dec"] + t["b_dec"]
    loss = ((x_hat - x) ** 2).sum() / (n * d)
    if coef == 0 or not bool(dead.any()):
        return loss
    e = (x - x_hat).detach()
    dead_pre = pre.masked_fill(~dead, float("-inf"))
    top_aux = torch.topk(dead_pre, min(k_aux, int(dead.sum())), dim=1)
    aux_acts = torch.zeros_like(pre).scatter(1, top_aux.indices, torch.relu(top_aux.values))
    scale = coef * min(1.0, int(dead.sum()) / k_aux)
    return loss + scale * ((aux_acts @ t["w_dec"] - e) ** 2).sum() / (n * d)
