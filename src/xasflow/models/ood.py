"""How far an input spectrum lies from what a model was trained on.

Distance is measured in the model's own input space (spectra standardized with the training
statistics, so one unit is the training spread at that energy): the largest absolute
difference over the energy grid to the nearest of the reference spectra. The largest, not the
mean, because what gives a spectrum of another material away is usually one region (the Fe
K pre-edge in front of a Cu model) where every training spectrum agrees. The references are
the training spectra and their averages per system and MD frame and per system (a measurement
is an average over sites, and averages are smoother than any one site).

The threshold is the larger of the 99th percentile of the validation spectra's distances
(systems the model never saw) and :data:`MEASURED_MARGIN` times the distance of the measured
calibration reference, when there is one: simulated spectra are closer to each other than any
measurement is to them, and the calibration foil is by construction a spectrum the model is
meant to read.
"""

from __future__ import annotations

import numpy as np

#: Quantile of the validation distances taken as the threshold.
THRESHOLD_QUANTILE = 0.99
#: Margin on the measured calibration reference's own distance.
MEASURED_MARGIN = 1.5


def reference_spectra(mu: np.ndarray, system: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """(m, n_energy) references: ``mu`` (n, n_energy) plus the means per (system, frame) and
    per system."""
    mu = np.asarray(mu, dtype=np.float64)
    system = np.asarray(system).astype(str)
    frame = np.asarray(frame)
    means = []
    for name in np.unique(system):
        in_system = system == name
        means.append(mu[in_system].mean(axis=0))
        for value in np.unique(frame[in_system]):
            means.append(mu[in_system & (frame == value)].mean(axis=0))
    return np.vstack([mu, np.asarray(means)])


def nearest_distance(references: np.ndarray, queries: np.ndarray, chunk: int = 256) -> np.ndarray:
    """For each query (k, n): the largest absolute difference over the last axis to its nearest
    reference (m, n), nearest in that same sense."""
    references = np.asarray(references, dtype=np.float64)
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    distances = np.empty(queries.shape[0])
    for start in range(0, queries.shape[0], chunk):
        block = queries[start : start + chunk]
        largest = np.abs(block[:, None, :] - references[None, :, :]).max(axis=2)
        distances[start : start + chunk] = largest.min(axis=1)
    return distances


def nearest_references(
    references: np.ndarray, query: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` references (m, n) nearest to one ``query`` (n,), nearest first, in the sense
    of :func:`nearest_distance`: their row indices (count,) and distances (count,). The first
    distance is :func:`nearest_distance` of the query; ties keep the reference order."""
    references = np.asarray(references, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64).reshape(-1)
    distances = np.abs(references - query[None, :]).max(axis=1)
    order = np.argsort(distances, kind="stable")[: max(int(count), 0)]
    return order, distances[order]


def distance_threshold(
    references: np.ndarray, validation: np.ndarray, measured_reference: np.ndarray | None = None
) -> float:
    """Threshold from the validation inputs (k, n) and, if given, the measured calibration
    reference (n,), all standardized like ``references`` (m, n)."""
    candidates = []
    if len(validation):
        candidates.append(float(np.quantile(nearest_distance(references, validation), THRESHOLD_QUANTILE)))
    if measured_reference is not None:
        candidates.append(MEASURED_MARGIN * float(nearest_distance(references, measured_reference)[0]))
    if not candidates:  # no validation and no measurement: each reference against the others
        own = np.array(
            [
                nearest_distance(np.delete(references, index, axis=0), references[index])[0]
                for index in range(len(references))
            ]
        )
        candidates.append(float(np.quantile(own, THRESHOLD_QUANTILE)))
    return max(candidates)
