"""Training augmentations: reproducible from the seed, labels kept (or averaged with the spectra),
and each change doing what it says."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from xasflow.models.augment import AugmentationParams, augment_spectrum
from xasflow.models.data import AugmentedSpectra, Normalization, SpectrumArrays
from xasflow.models.ood import distance_threshold, nearest_distance, reference_spectra
from xasflow.models.targets import parse_targets

ENERGY = np.arange(-12.0, 45.0 + 1e-9, 0.75)


def _arrays(n_frames: int = 2, sites: int = 4) -> SpectrumArrays:
    """Two systems, ``n_frames`` frames each, spectra whose white line moves with the CN."""
    rng = np.random.default_rng(0)
    n = 2 * n_frames * sites
    cn = rng.integers(6, 13, n).astype(np.float32)
    step = 0.5 + np.arctan(ENERGY / 1.5) / np.pi
    # the last term makes every spectrum unique, so a site average can be traced to its members
    mu = np.array(
        [
            step
            + 0.04 * c * np.exp(-0.5 * ((ENERGY - 4 - 0.3 * c) / 2) ** 2)
            + rng.normal(0, 0.01, ENERGY.size)
            for c in cn
        ]
    )
    rdf = rng.random((n, 10)).astype(np.float32)
    system = np.repeat(["a", "b"], n_frames * sites)
    frame = np.tile(np.repeat(np.arange(n_frames), sites), 2)
    return SpectrumArrays(
        mu=mu.astype(np.float32),
        targets={"coordination_number": cn, "rdf": rdf},
        system=system,
        frame=frame,
    )


def _dataset(params: AugmentationParams, arrays: SpectrumArrays | None = None) -> AugmentedSpectra:
    arrays = arrays or _arrays()
    normalization = Normalization.fit(arrays.mu, arrays.targets, parse_targets(None))
    return AugmentedSpectra(arrays, normalization, ENERGY, params)


def test_same_seed_gives_the_same_draws_and_another_seed_others():
    params = AugmentationParams(seed=4, site_average=3)
    first, second = _dataset(params), _dataset(params)
    draws_first = [first[index]["mu"].numpy() for _ in range(3) for index in range(len(first))]
    draws_second = [second[index]["mu"].numpy() for _ in range(3) for index in range(len(second))]
    assert all(np.array_equal(a, b) for a, b in zip(draws_first, draws_second, strict=True))
    other = _dataset(replace(params, seed=5))
    draws_other = [other[index]["mu"].numpy() for _ in range(3) for index in range(len(other))]
    assert not all(np.array_equal(a, b) for a, b in zip(draws_first, draws_other, strict=True))


def test_each_visit_redraws_the_spectrum():
    dataset = _dataset(AugmentationParams(seed=1))
    assert not np.array_equal(dataset[0]["mu"].numpy(), dataset[0]["mu"].numpy())


def test_augmentation_without_averaging_keeps_the_labels():
    arrays = _arrays()
    dataset = _dataset(AugmentationParams(seed=2), arrays)
    for index in range(len(arrays)):
        for _ in range(3):
            _, targets = dataset.draw(index)
            assert targets["coordination_number"] == pytest.approx(
                float(arrays.targets["coordination_number"][index])
            )
            assert np.allclose(targets["rdf"], arrays.targets["rdf"][index])


def test_site_averages_carry_the_mean_labels_of_their_own_system_and_frame():
    arrays = _arrays()
    params = AugmentationParams.none()
    dataset = _dataset(replace(params, site_average=4, seed=3), arrays)
    sizes = set()
    for index in range(len(arrays)):
        for _ in range(5):
            mu, targets = dataset.draw(index)
            cn, rdf = targets["coordination_number"], targets["rdf"]
            group = np.flatnonzero(
                (arrays.system == arrays.system[index]) & (arrays.frame == arrays.frame[index])
            )
            # find which members were averaged: the mean of their spectra must equal mu
            matches = [
                subset
                for subset in _subsets_containing(group, index)
                if np.allclose(arrays.mu[subset].mean(axis=0), mu, atol=1e-6)
            ]
            assert matches, "the augmented spectrum is not an average of its own system and frame"
            subset = matches[0]
            sizes.add(len(subset))
            assert cn == pytest.approx(float(arrays.targets["coordination_number"][subset].mean()), abs=1e-5)
            assert np.allclose(rdf, arrays.targets["rdf"][subset].mean(axis=0), atol=1e-6)
    assert sizes == {1, 2, 3, 4}


def _subsets_containing(group: np.ndarray, index: int):
    from itertools import combinations

    others = [member for member in group if member != index]
    for size in range(0, len(others) + 1):
        for chosen in combinations(others, size):
            yield np.array([index, *chosen])


def test_no_augmentation_is_the_identity():
    mu = 0.5 + np.arctan(ENERGY) / np.pi
    out = augment_spectrum(ENERGY, mu, AugmentationParams.none(), np.random.default_rng(0))
    assert np.array_equal(out, mu)
    assert not AugmentationParams.none().enabled and AugmentationParams().enabled


def test_noise_and_edge_step_error_have_the_asked_size():
    mu = np.ones_like(ENERGY)
    params = replace(AugmentationParams.none(), noise=0.02)
    residuals = np.array(
        [augment_spectrum(ENERGY, mu, params, np.random.default_rng(seed)) - mu for seed in range(200)]
    )
    assert residuals.std() == pytest.approx(0.02, rel=0.05)
    params = replace(AugmentationParams.none(), normalization=0.05)
    scales = [augment_spectrum(ENERGY, mu, params, np.random.default_rng(seed))[0] for seed in range(400)]
    assert np.std(scales) == pytest.approx(0.05, rel=0.15)


def test_negative_amplitudes_are_refused():
    with pytest.raises(ValueError, match="noise"):
        AugmentationParams(noise=-0.1)
    with pytest.raises(ValueError, match="site_average"):
        AugmentationParams(site_average=0)


def test_distance_is_zero_for_a_training_spectrum_and_grows_with_a_change():
    arrays = _arrays()
    references = reference_spectra(arrays.mu, arrays.system, arrays.frame)
    # 16 spectra + 2 system means + 4 frame means
    assert references.shape == (16 + 2 + 4, ENERGY.size)
    assert nearest_distance(references, arrays.mu[:3]) == pytest.approx(0.0, abs=1e-12)
    moved = np.roll(arrays.mu[0], 8)
    assert nearest_distance(references, moved[None, :])[0] > 0.05
    assert distance_threshold(references, arrays.mu + 0.01) == pytest.approx(0.01, abs=1e-6)


def test_a_batch_redraw_matches_the_per_spectrum_redraw():
    """augment_batch draws the same numbers per item as augment_spectrum and changes the whole
    batch at once; the spectra agree to well under the added noise."""
    from xasflow.models.augment import augment_batch

    arrays = _arrays()
    params = AugmentationParams(seed=2, broadening=2.0, energy_shift=1.0, stretch=0.02)
    single = np.array(
        [
            augment_spectrum(ENERGY, mu, params, np.random.default_rng([2, index, 0]))
            for index, mu in enumerate(arrays.mu)
        ]
    )
    batch = augment_batch(
        ENERGY, arrays.mu, params, [np.random.default_rng([2, index, 0]) for index in range(len(arrays))]
    )
    assert np.abs(batch - single).max() < 2e-3
    # and a redraw that changes nothing returns the spectra unchanged
    unchanged = augment_batch(
        ENERGY, arrays.mu, AugmentationParams.none(), [np.random.default_rng(0)] * len(arrays)
    )
    np.testing.assert_array_equal(unchanged, arrays.mu)


def test_a_pool_repeats_its_draws_cyclically_and_computes_each_input_once():
    """With pool P, visit k of an item is its draw k mod P; the first P visits are the draws
    made without a pool, and the model input of each is computed once."""
    arrays = _arrays()
    normalization = Normalization.fit(arrays.mu, arrays.targets, parse_targets(None))
    calls = []

    def to_input(mu):
        calls.append(mu.shape[0])
        return mu

    pool_size = 3
    params = AugmentationParams(seed=3, site_average=2, pool=pool_size)
    pooled = AugmentedSpectra(arrays, normalization, ENERGY, params, to_input)
    fresh = AugmentedSpectra(arrays, normalization, ENERGY, replace(params, pool=0))
    indices = np.arange(len(arrays))
    visits = 2 * pool_size + 1
    pooled_draws = [pooled.draw_batch(indices) for _ in range(visits)]
    fresh_draws = [fresh.draw_batch(indices) for _ in range(pool_size)]
    for visit in range(pool_size):
        assert np.array_equal(pooled_draws[visit][0], fresh_draws[visit][0])
        assert np.allclose(pooled_draws[visit][1]["rdf"], fresh_draws[visit][1]["rdf"])
    for visit in range(pool_size, visits):
        assert np.array_equal(pooled_draws[visit][0], pooled_draws[visit % pool_size][0])
    assert not np.array_equal(pooled_draws[0][0], pooled_draws[1][0])
    assert sum(calls) == pool_size * len(arrays)


def test_a_negative_pool_is_refused():
    with pytest.raises(ValueError, match="augmentation.pool"):
        AugmentationParams(pool=-1)
