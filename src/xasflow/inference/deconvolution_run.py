"""Deconvolve particle spectra against a bulk, predict every spectrum with every model, and report.

For each particle the models read four spectra: the particle P, the bulk B, the deconvolved
surface S (:mod:`xasflow.inference.deconvolution`) and, for a simulated particle, its true
surface spectrum. The uncertainty of S reaches the predictions by Monte Carlo: ``draws``
surface spectra from P, B and w drawn within their sigmas, each predicted; their spread (std,
16-84 % and 5-95 % ranges) is reported beside the model's own calibrated intervals, which say
how far the model is from the truth for an input like the training spectra and nothing about
the input's own uncertainty.

Outputs in ``out_dir`` (names in :data:`OUTPUTS`): ``predictions.csv`` (per particle, model,
spectrum and number target), ``summary.csv``/``.json``/``.md`` (per particle, model and target:
surface, bulk and particle predicted vs true where known, the sign of surface - bulk, the
spectrum RMSE; over particles the mean absolute errors), ``spectra.csv`` (P, B, S with sigmas and
the true S per grid point) and ``plots/<particle>.png``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from xasflow.dataset.schema import open_dataset
from xasflow.errors import SpectrumReadError
from xasflow.experiment.fidelity import CalibrationTransform
from xasflow.fileio import atomic_open, atomic_path, atomic_write_text
from xasflow.inference.compatibility import check_compatible
from xasflow.inference.deconvolution import (
    BulkReference,
    DeconvolutionError,
    EdgeSpectrum,
    NotDeconvolvable,
    ParticleCase,
    SurfaceWeight,
    check_weight,
    deconvolve,
    draw_surface_spectra,
    measured_particle,
    particle_truths,
    simulated_bulk,
    simulated_particle,
    surface_weight_from_labels,
)
from xasflow.inference.predict import Predictor, load_predictor
from xasflow.models.crossval import FOLDS_DIR
from xasflow.models.data import measured_input
from xasflow.models.train import CROSSVAL_DIR
from xasflow.structures.io import read_labels

logger = logging.getLogger(__name__)

OUTPUTS = ("summary.json", "summary.csv", "summary.md", "predictions.csv", "spectra.csv")
PLOTS_DIR = "plots"
SPECTRUM_KINDS = ("particle", "bulk", "surface", "true_surface")
LEVELS = (68, 90, 95)
# Monte Carlo ranges: central 68 % and 90 % of the draws' predictions
MC_PERCENTILES = {68: (15.865, 84.135), 90: (5.0, 95.0)}

PREDICTION_COLUMNS = (
    "particle", "bulk_system", "model", "split", "spectrum", "target", "predicted", "spread",
    *(f"{side}_{level}" for level in LEVELS for side in ("low", "high")),
    "mc_std", *(f"mc_{side}_{level}" for level in MC_PERCENTILES for side in ("low", "high")), "mc_draws",
    "true", "input_distance", "out_of_distribution",
)  # fmt: skip
SPECTRUM_METRICS = ("rmse_mu", "rmse_particle_as_surface", "rmse_interior_as_bulk", "within_1_sigma")
SUMMARY_COLUMNS = (
    "particle", "bulk_system", "model", "split", "weight", "weight_sigma", *SPECTRUM_METRICS, "target",
    "surface_true", "surface_predicted",
    "surface_error", "surface_mc_std", "surface_mc_low_90", "surface_mc_high_90", "surface_low_90",
    "surface_high_90", "surface_out_of_distribution", "true_surface_predicted", "bulk_true",
    "bulk_predicted", "bulk_error", "particle_true", "particle_predicted", "particle_as_surface_error",
    "difference_true", "difference_predicted", "sign_agrees",
)  # fmt: skip


@dataclass(frozen=True)
class DeconvolutionParams:
    """``draws`` Monte Carlo surface spectra per particle, drawn from generator ``seed`` (the
    config section ``deconvolution`` holds the same defaults)."""

    draws: int = 200
    seed: int = 0


def load_models(checkpoints: Mapping[str, str | Path]) -> dict[str, Predictor]:
    """Each checkpoint by name (``CheckpointError`` naming a damaged or missing file)."""
    return {name: load_predictor(path) for name, path in checkpoints.items()}


def model_split(predictor: Predictor, system: str) -> str:
    """Where ``system`` was in the model's training: train, val, test, excluded, or unseen."""
    split = predictor.model_card.get("split") or {}
    for name in ("train", "val", "test", "excluded"):
        if system in (split.get(name) or ()):
            return name
    return "unseen"


def held_out_checkpoint(checkpoint: str | Path, predictor: Predictor, system: str) -> Path | None:
    """The checkpoint of the cross-system fold that held ``system`` out, when the model at
    ``checkpoint`` trained or validated on it and keeps its folds (``conformal: cross_system``:
    ``<model dir>/crossval/folds/<system>/model.ckpt``); None when the model never saw the
    system or has no such fold."""
    if model_split(predictor, system) not in ("train", "val"):
        return None
    fold = Path(checkpoint).parent / CROSSVAL_DIR / FOLDS_DIR / system / Path(checkpoint).name
    return fold if fold.is_file() else None


def case_models(
    checkpoints: Mapping[str, str | Path], predictors: Mapping[str, Predictor], system: str, held_out: bool
) -> dict[str, Predictor]:
    """The predictors that read particle ``system``: with ``held_out``, each model's fold that
    never saw the particle in place of the model, where the model has one."""
    if not held_out:
        return dict(predictors)
    chosen = {}
    for name, predictor in predictors.items():
        fold = held_out_checkpoint(checkpoints[name], predictor, system)
        chosen[name] = load_predictor(fold) if fold is not None else predictor
        if fold is not None:
            logger.info(
                "%s: model %s replaced by its fold that held the particle out (%s)", system, name, fold
            )
    return chosen


# --- predictions ----------------------------------------------------------------------------------


def surface_draws(case: ParticleCase, bulk: EdgeSpectrum, params: DeconvolutionParams) -> list[EdgeSpectrum]:
    """``params.draws`` Monte Carlo surface spectra of ``case`` (:func:`draw_surface_spectra`),
    from a generator seeded with ``params.seed`` and the particle's name (so every particle gets
    its own draws, the same in every run). Draws whose edge the models cannot find are dropped
    (logged)."""
    seed = [params.seed, *case.name.encode()]
    surfaces, _ = draw_surface_spectra(
        case.particle.mu,
        bulk.mu,
        case.weight.value,
        case.particle.sigma,
        bulk.sigma,
        case.weight.sigma,
        params.draws,
        np.random.default_rng(seed),
    )
    draws = []
    for index, mu in enumerate(surfaces):
        draw = EdgeSpectrum(
            f"{case.name} draw {index}",
            case.particle.energy,
            mu,
            np.zeros_like(mu),
            case.particle.e0,
            own_edge=False,
            element=case.particle.element,
            edge=case.particle.edge,
        )
        try:
            draw.normalized()
        except DeconvolutionError:
            continue
        draws.append(draw)
    if len(draws) < params.draws:
        logger.warning(
            "%s: %d of %d Monte Carlo draws have no edge and were dropped",
            case.name,
            params.draws - len(draws),
            params.draws,
        )
    return draws


def model_inputs(predictor: Predictor, spectra: Sequence[EdgeSpectrum]) -> np.ndarray:
    """(n, n_input) what ``predictor`` reads of each spectrum, each on its own edge crossing."""
    params = predictor.model.params
    return np.array([measured_input(spectrum.normalized(), params, predictor.energy) for spectrum in spectra])


def readable_draw_inputs(predictor: Predictor, draws: Sequence[EdgeSpectrum], name: str) -> np.ndarray:
    """(n_readable, n_input) what ``predictor`` reads of the Monte Carlo draws of particle
    ``name``. A draw whose edge crossing moved so far that the model's energy grid leaves its data
    (by more than the reader's 1 eV) is dropped, counted and logged, as draws without an edge are;
    the ``mc_draws`` column says how many were used."""
    inputs = []
    for draw in draws:
        try:
            inputs.append(model_inputs(predictor, [draw])[0])
        except SpectrumReadError:
            continue
    if len(inputs) < len(draws):
        logger.warning(
            "%s: %d of %d Monte Carlo draws reach beyond the model's energy grid and were dropped",
            name,
            len(draws) - len(inputs),
            len(draws),
        )
    return np.array(inputs) if inputs else np.empty((0, 0))


def _value(predictions: Mapping, key: str, index: int) -> float:
    return float(predictions[key][index]) if key in predictions else float("nan")


def _mc_columns(draws: Mapping | None, name: str) -> dict[str, float]:
    if not draws or name not in draws:
        return {}
    values = np.asarray(draws[name], dtype=float)
    columns = {"mc_std": float(np.std(values, ddof=1)) if values.size > 1 else 0.0, "mc_draws": values.size}
    for level, (low, high) in MC_PERCENTILES.items():
        columns[f"mc_low_{level}"], columns[f"mc_high_{level}"] = np.percentile(values, [low, high])
    return columns


def predict_case(
    model_name: str,
    predictor: Predictor,
    case: ParticleCase,
    bulk: BulkReference,
    surface: EdgeSpectrum,
    draws: Sequence[EdgeSpectrum],
) -> list[dict]:
    """Prediction rows (:data:`PREDICTION_COLUMNS`) of every number target for the particle, the
    bulk, the deconvolved surface (with the Monte Carlo spread of ``draws``) and, if known, the
    true surface."""
    spectra = {"particle": case.particle, "bulk": bulk.spectrum, "surface": surface}
    if case.true_surface is not None:
        spectra["true_surface"] = case.true_surface
    predictions = predictor.predict(model_inputs(predictor, list(spectra.values())), names=list(spectra))
    readable = readable_draw_inputs(predictor, draws, case.name)
    drawn = predictor.predict(readable) if len(readable) else None
    split = model_split(predictor, case.name) if case.true_surface is not None else ""
    rows = []
    for spec in predictor.model.params.targets:
        if spec.kind == "curve":
            continue
        truths = particle_truths(spec, case, bulk)
        for index, kind in enumerate(spectra):
            row = {
                "particle": case.name,
                "bulk_system": bulk.system,
                "model": model_name,
                "split": split,
                "spectrum": kind,
                "target": spec.name,
                "predicted": _value(predictions, spec.name, index),
                "spread": _value(predictions, f"{spec.name}_spread", index),
                "true": truths[kind],
                "input_distance": _value(predictions, "input_distance", index),
            }
            for level in LEVELS:
                for side in ("low", "high"):
                    row[f"{side}_{level}"] = _value(predictions, f"{spec.name}_{side}_{level}", index)
            if "out_of_distribution" in predictions:
                row["out_of_distribution"] = bool(predictions["out_of_distribution"][index])
            if kind == "surface" and drawn is not None:
                row.update(_mc_columns({spec.name: drawn[spec.name]}, spec.name))
            rows.append(row)
    return rows


# --- verification ---------------------------------------------------------------------------------


def spectrum_metrics(case: ParticleCase, surface: EdgeSpectrum) -> dict[str, float]:
    """How close the deconvolved surface is to the true one (edge steps, RMS over the grid).

    ``rmse_mu``: S against the true S. ``rmse_particle_as_surface``: P taken for S, the baseline
    a deconvolution has to beat. ``rmse_interior_as_bulk``: S deconvolved with the particle's own
    interior (placed on its edge as B is) instead of B: what is left with a perfect bulk reference
    (edge alignment and site sampling), so ``rmse_mu`` minus it is the bulk alloy's mismatch.
    ``within_1_sigma``: share of points where |S - true S| <= the propagated sigma (0.68 if sigma
    held every error; the interior-vs-bulk difference is not in it). NaN where unknown.
    """
    metrics = dict.fromkeys(SPECTRUM_METRICS, float("nan"))
    if case.true_surface is None:
        return metrics
    error = surface.mu - case.true_surface.mu
    metrics["rmse_mu"] = float(np.sqrt(np.mean(error**2)))
    metrics["rmse_particle_as_surface"] = float(
        np.sqrt(np.mean((case.particle.mu - case.true_surface.mu) ** 2))
    )
    metrics["within_1_sigma"] = float(np.mean(np.abs(error) <= surface.sigma))
    if case.true_interior is not None:
        ideal = deconvolve(case.particle, case.true_interior, case.weight)
        metrics["rmse_interior_as_bulk"] = float(np.sqrt(np.mean((ideal.mu - case.true_surface.mu) ** 2)))
    return metrics


def summary_rows(prediction_rows: Sequence[dict], metrics: Mapping[str, dict], cases: Mapping) -> list[dict]:
    """One row per particle, model and target (:data:`SUMMARY_COLUMNS`) from the prediction rows."""
    grouped: dict[tuple, dict[str, dict]] = {}
    for row in prediction_rows:
        grouped.setdefault((row["particle"], row["model"], row["target"]), {})[row["spectrum"]] = row
    rows = []
    for (particle, model, target), by_kind in grouped.items():
        surface, bulk, whole = by_kind["surface"], by_kind["bulk"], by_kind["particle"]
        weight = cases[particle].weight
        difference_true = surface["true"] - bulk["true"]
        difference_predicted = surface["predicted"] - bulk["predicted"]
        rows.append(
            {
                "particle": particle,
                "bulk_system": surface["bulk_system"],
                "model": model,
                "split": surface["split"],
                "weight": weight.value,
                "weight_sigma": weight.sigma,
                **metrics[particle],
                "target": target,
                "surface_true": surface["true"],
                "surface_predicted": surface["predicted"],
                "surface_error": surface["predicted"] - surface["true"],
                "surface_mc_std": surface.get("mc_std", float("nan")),
                "surface_mc_low_90": surface.get("mc_low_90", float("nan")),
                "surface_mc_high_90": surface.get("mc_high_90", float("nan")),
                "surface_low_90": surface["low_90"],
                "surface_high_90": surface["high_90"],
                "surface_out_of_distribution": surface.get("out_of_distribution", ""),
                "true_surface_predicted": by_kind.get("true_surface", {}).get("predicted", float("nan")),
                "bulk_true": bulk["true"],
                "bulk_predicted": bulk["predicted"],
                "bulk_error": bulk["predicted"] - bulk["true"],
                "particle_true": whole["true"],
                "particle_predicted": whole["predicted"],
                "particle_as_surface_error": whole["predicted"] - surface["true"],
                "difference_true": difference_true,
                "difference_predicted": difference_predicted,
                "sign_agrees": bool(np.sign(difference_true) == np.sign(difference_predicted))
                if np.isfinite(difference_true)
                else "",
            }
        )
    return rows


def mean_absolute_errors(rows: Sequence[dict]) -> list[dict]:
    """Per model and target, over the particles with a known truth: mean absolute error of the
    surface, bulk, particle-as-surface and model-on-true-surface predictions, the mean spectrum
    RMSE and how many signs of surface - bulk agree."""
    grouped: dict[tuple, list[dict]] = {}
    for row in rows:
        if np.isfinite(row["surface_true"]):
            grouped.setdefault((row["model"], row["target"]), []).append(row)
    table = []
    for (model, target), group in grouped.items():

        def mae(column: str, reference: str = "surface_true") -> float:
            return float(np.mean([abs(row[column] - row[reference]) for row in group]))  # noqa: B023

        table.append(
            {
                "model": model,
                "target": target,
                "n_particles": len(group),
                "surface_mae": mae("surface_predicted"),
                "bulk_mae": mae("bulk_predicted", "bulk_true"),
                "particle_as_surface_mae": mae("particle_predicted"),
                "true_surface_mae": mae("true_surface_predicted"),
                "rmse_mu_mean": float(np.mean([row["rmse_mu"] for row in group])),
                "signs_agree": int(sum(row["sign_agrees"] is True for row in group)),
            }
        )
    return table


# --- writing --------------------------------------------------------------------------------------


def _cell(value) -> str:
    """A CSV cell: true/false, text as is, integers, numbers to 4 decimals, unknown (NaN) empty."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, str):
        return value
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    return f"{value:.4f}" if np.isfinite(value) else ""


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({column: _cell(row.get(column, float("nan"))) for column in columns})


def _json_value(value):
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, bool | str) or value is None:
        return value
    value = float(value)
    return value if np.isfinite(value) else None


def write_spectra(path: Path, results: Sequence[tuple[ParticleCase, EdgeSpectrum, EdgeSpectrum]]) -> None:
    """P, B, S (with sigmas) and the true S of every particle per grid point (eV relative to P's E0)."""
    columns = (
        "particle",
        "energy_eV",
        "particle_mu",
        "particle_sigma",
        "bulk_mu",
        "bulk_sigma",
        "surface_mu",
        "surface_sigma",
        "true_surface_mu",
    )
    rows = []
    for case, bulk, surface in results:
        true = case.true_surface.mu if case.true_surface is not None else np.full(surface.mu.shape, np.nan)
        for point, energy in enumerate(surface.energy):
            rows.append(
                {
                    "particle": case.name,
                    "energy_eV": energy,
                    "particle_mu": case.particle.mu[point],
                    "particle_sigma": case.particle.sigma[point],
                    "bulk_mu": bulk.mu[point],
                    "bulk_sigma": bulk.sigma[point],
                    "surface_mu": surface.mu[point],
                    "surface_sigma": surface.sigma[point],
                    "true_surface_mu": true[point],
                }
            )
    _write_csv(path, columns, rows)


def _format(value, digits: int = 2) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value or "-"
    return f"{value:.{digits}f}" if np.isfinite(value) else "-"


def summary_markdown(
    bulk_system: str, rows: Sequence[dict], mae: Sequence[dict], skipped: Sequence[dict]
) -> str:
    """The summary as a markdown table per particle, model and target, and the MAE over particles."""
    lines = [
        f"# Surface deconvolution against bulk {bulk_system}",
        "",
        "S = (P - (1 - w) B) / w. RMSE of normalized mu (edge steps) against the true surface: of S, "
        "of P taken for S, and of S made with the particle's own interior for B (the floor a perfect "
        "bulk reference leaves); predictions (Monte Carlo std) vs true; sign of surface - bulk.",
        "",
        "| particle | model | split | w | RMSE S | RMSE P | RMSE S (interior as B) | target | surface true "
        "| surface pred (MC std) | on true S | bulk true | bulk pred | particle pred | sign ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['particle']} | {row['model']} | {_format(row['split'])} | {row['weight']:.3f} "
            f"± {row['weight_sigma']:.3f} | {_format(row['rmse_mu'], 3)} | "
            f"{_format(row['rmse_particle_as_surface'], 3)} | {_format(row['rmse_interior_as_bulk'], 3)} | "
            f"{row['target']} | {_format(row['surface_true'])} | "
            f"{_format(row['surface_predicted'])} ({_format(row['surface_mc_std'])}) | "
            f"{_format(row['true_surface_predicted'])} | {_format(row['bulk_true'])} | "
            f"{_format(row['bulk_predicted'])} | {_format(row['particle_predicted'])} | "
            f"{_format(row['sign_agrees'])} |"
        )
    if mae:
        lines += [
            "",
            "Mean absolute errors over particles (surface: deconvolved S; particle as surface: P read "
            "as if it were S; on true S: the model reading the true surface spectrum).",
            "",
            "| model | target | n | surface | bulk | particle as surface | on true S | mean RMSE S "
            "| signs agree |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for entry in mae:
            lines.append(
                f"| {entry['model']} | {entry['target']} | {entry['n_particles']} | "
                f"{entry['surface_mae']:.2f} | "
                f"{entry['bulk_mae']:.2f} | {entry['particle_as_surface_mae']:.2f} | "
                f"{entry['true_surface_mae']:.2f} | {entry['rmse_mu_mean']:.3f} | "
                f"{entry['signs_agree']}/{entry['n_particles']} |"
            )
    for entry in skipped:
        lines.append(f"\nNot deconvolved: {entry['reason']}")
    return "\n".join(lines) + "\n"


def plot_particle(
    path: Path, case: ParticleCase | None, bulk: EdgeSpectrum, surface: EdgeSpectrum | None, note: str = ""
) -> None:
    """P, B, the deconvolved S with its 1-sigma band and the true S (if known) against eV relative
    to P's E0, with S - true S below; a particle that was not deconvolved gets ``note`` instead."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot(bulk.energy, bulk.mu, color="0.45", linestyle="--", label=f"bulk B ({bulk.name})")
    if case is not None and surface is not None:
        top.plot(case.particle.energy, case.particle.mu, color="black", label="particle P")
        top.fill_between(
            surface.energy,
            surface.mu - surface.sigma,
            surface.mu + surface.sigma,
            color="tab:red",
            alpha=0.25,
            linewidth=0,
        )
        top.plot(surface.energy, surface.mu, color="tab:red", label="deconvolved surface S ± 1σ")
        if case.true_surface is not None:
            top.plot(
                case.true_surface.energy,
                case.true_surface.mu,
                color="tab:blue",
                linestyle=":",
                label="true surface",
            )
            bottom.fill_between(
                surface.energy, -surface.sigma, surface.sigma, color="tab:red", alpha=0.25, linewidth=0
            )
            bottom.plot(surface.energy, surface.mu - case.true_surface.mu, color="tab:red")
        bottom.axhline(0.0, color="0.6", linewidth=0.8)
        top.set_title(f"{case.name}: w = {case.weight.value:.3f} ± {case.weight.sigma:.3f}", fontsize=10)
    else:
        top.set_title(note, fontsize=9, wrap=True)
    top.set_ylabel("normalized μ")
    top.legend(fontsize=8)
    bottom.set_ylabel("S − true S")
    bottom.set_xlabel("E − E0 of the particle (eV)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=110, format="png")


# --- the runs -------------------------------------------------------------------------------------


def _check_models(predictors: Mapping[str, Predictor], spectra) -> None:
    """Every model must read every input spectrum (element, edge, energy range): refused before
    anything is predicted or written (``IncompatibleSpectrumError`` naming the spectrum)."""
    for name, predictor in predictors.items():
        for spectrum in spectra:
            check_compatible(spectrum, predictor.model_card, predictor.energy, name)


def _run(
    cases: Sequence[ParticleCase],
    bulk: BulkReference,
    predictors: Mapping[str, Mapping[str, Predictor]],
    out_dir: Path,
    params: DeconvolutionParams,
    skipped: Sequence[dict],
    provenance: dict,
) -> dict:
    results, prediction_rows, metrics = [], [], {}
    for case in cases:
        surface = deconvolve(case.particle, bulk.spectrum, case.weight)
        draws = surface_draws(case, bulk.spectrum, params)
        for name, predictor in predictors[case.name].items():
            prediction_rows += predict_case(name, predictor, case, bulk, surface, draws)
        metrics[case.name] = spectrum_metrics(case, surface)
        results.append((case, bulk.spectrum, surface))
        logger.info(
            "%s: w %.3f ± %.3f, RMSE of S %.4f",
            case.name,
            case.weight.value,
            case.weight.sigma,
            metrics[case.name]["rmse_mu"],
        )
    rows = summary_rows(prediction_rows, metrics, {case.name: case for case in cases})
    mae = mean_absolute_errors(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "predictions.csv", PREDICTION_COLUMNS, prediction_rows)
    _write_csv(out_dir / "summary.csv", SUMMARY_COLUMNS, rows)
    write_spectra(out_dir / "spectra.csv", results)
    bulk_system = bulk.system
    atomic_write_text(out_dir / "summary.md", summary_markdown(bulk_system, rows, mae, skipped))
    summary = {
        "bulk_system": bulk_system,
        "bulk_sites": int(bulk.sites.sizes["spectrum"]),
        "parameters": asdict(params),
        "weights": {case.name: asdict(case.weight) for case in cases},
        "particles": metrics,
        "rows": rows,
        "mean_absolute_errors": mae,
        "skipped": list(skipped),
        **provenance,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(_json_value(summary), indent=2) + "\n")
    for case, bulk_spectrum, surface in results:
        plot_particle(out_dir / PLOTS_DIR / f"{case.name}.png", case, bulk_spectrum, surface)
    for entry in skipped:
        plot_particle(
            out_dir / PLOTS_DIR / f"{entry['particle']}.png",
            None,
            bulk.spectrum,
            None,
            f"not deconvolved: {entry['reason']}",
        )
    return summary


def deconvolve_simulated(
    dataset_path: str | Path,
    bulk_system: str,
    particles: Mapping[str, str | Path],
    checkpoints: Mapping[str, str | Path],
    out_dir: str | Path,
    params: DeconvolutionParams = DeconvolutionParams(),
    calibration: CalibrationTransform | None = None,
    held_out: bool = False,
) -> dict:
    """Deconvolve simulated particles, whose surface spectra are known, and verify.

    With ``held_out``, a particle a model trained or validated on is read by that model's
    cross-system fold that held the particle out (:func:`case_models`), so every particle is
    verified by a model that never saw it where such folds exist; the ``split`` column says
    which (``test`` for a fold).

    ``particles`` maps each particle system of the dataset to its ``labels.npz`` (the surface
    weight: :func:`~xasflow.inference.deconvolution.surface_weight_from_labels`);
    ``checkpoints`` maps model names to checkpoints. A particle without surface absorbers or
    without computed surface sites is reported as skipped. ``calibration`` (the transform the
    models were trained with) is applied to every simulated site spectrum first. Writes
    :data:`OUTPUTS` and the plots to ``out_dir``; returns the summary (as ``summary.json``).
    """
    dataset = open_dataset(dataset_path)
    absorbers = sorted(set(dataset["absorber"].values.tolist()))
    bulk = simulated_bulk(dataset, bulk_system, calibration)
    cases, skipped = [], []
    for system, labels_path in particles.items():
        labels = read_labels(labels_path)
        weight = surface_weight_from_labels(labels, str(absorbers[0]), source=str(labels_path))
        try:
            cases.append(simulated_particle(dataset, system, weight, calibration))
        except NotDeconvolvable as reason:
            logger.warning("%s", reason)
            skipped.append({"particle": system, "reason": str(reason)})
    predictors = load_models(checkpoints)
    _check_models(
        predictors, [spectrum.normalized() for spectrum in (bulk.spectrum, *(c.particle for c in cases))]
    )
    provenance = {
        "dataset": str(dataset_path),
        "checkpoints": {k: str(v) for k, v in checkpoints.items()},
        "held_out": held_out,
    }
    by_case = {case.name: case_models(checkpoints, predictors, case.name, held_out) for case in cases}
    return _run(cases, bulk, by_case, Path(out_dir), params, skipped, provenance)


def deconvolve_measured(
    dataset_path: str | Path,
    bulk_system: str,
    spectrum_path: str | Path,
    weight: SurfaceWeight,
    checkpoints: Mapping[str, str | Path],
    out_dir: str | Path,
    params: DeconvolutionParams = DeconvolutionParams(),
    noise: float | None = None,
    calibration: CalibrationTransform | None = None,
) -> dict:
    """Deconvolve a measured particle spectrum against the bulk system of the dataset.

    The file goes through the reading, normalization and checks of ``xasflow predict``; its
    noise is ``noise`` (edge steps) or estimated from the data
    (:func:`~xasflow.inference.deconvolution.measured_particle`). ``calibration`` is applied to
    the simulated bulk spectra (the measurement is already measured). Raises
    :class:`~xasflow.inference.deconvolution.DeconvolutionError` for a weight outside (0, 1], and
    the errors of ``xasflow predict`` for a file or model that does not fit, before writing.
    """
    check_weight(weight, str(spectrum_path))
    dataset = open_dataset(dataset_path)
    grid = dataset["energy"].values.astype(float)
    particle, normalized = measured_particle(spectrum_path, grid, noise)
    bulk = simulated_bulk(dataset, bulk_system, calibration)
    predictors = load_models(checkpoints)
    _check_models(predictors, [normalized, bulk.spectrum.normalized()])
    case = ParticleCase(Path(spectrum_path).stem, particle, weight)
    provenance = {
        "dataset": str(dataset_path),
        "spectrum": str(spectrum_path),
        "checkpoints": {k: str(v) for k, v in checkpoints.items()},
    }
    return _run([case], bulk, {case.name: predictors}, Path(out_dir), params, [], provenance)
