import numpy as np
import pytest

from llmx.engine import InputError, Sampling
from llmx.engine.sampling import sample, top_k_filter, top_p_filter

logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))


def test_greedy_takes_the_argmax():
    assert sample(np.array([0.1, 3.0, 2.9]), Sampling(temperature=0), np.random.default_rng(0)) == 1


def test_top_k_keeps_exactly_k():
    kept = np.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [True, True, False, False]


def test_top_p_keeps_the_nucleus():
    assert np.isfinite(top_p_filter(logits, 0.75)).tolist() == [True, True, False, False]
    assert np.isfinite(top_p_filter(logits, 0.1)).tolist() == [True, False, False, False]
    assert np.isfinite(top_p_filter(logits, 1.0)).all()


def test_sampling_follows_the_distribution_and_the_seed():
    rng = np.random.default_rng(0)
    draws = [sample(logits, Sampling(), rng) for _ in range(4000)]
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    again = [sample(logits, Sampling(), np.random.default_rng(0)) for _ in range(1)]
    assert again == draws[:1]


def test_low_temperature_sharpens():
    rng = np.random.default_rng(0)
    draws = [sample(logits, Sampling(temperature=0.1), rng) for _ in range(500)]
    assert np.mean(np.array(draws) == 0) > 0.95


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_k": 0}, {"top_p": 0}, {"top_p": 1.5}])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(InputError):
        Sampling(**kwargs)
