"""Train one model on a spectrum dataset and write its checkpoint, metrics and figures."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

import xasflow
from xasflow.errors import UserError
from xasflow.experiment.fidelity import CalibrationTransform
from xasflow.fileio import atomic_path, atomic_write_text
from xasflow.models.augment import AugmentationParams
from xasflow.models.baselines import write_comparison
from xasflow.models.data import SpectrumArrays, SpectrumDataModule, measured_input
from xasflow.models.evaluate import (
    Evaluation,
    defined_rows,
    evaluate_targets,
    fit_calibration,
    fit_temperatures,
    write_reliability,
)
from xasflow.models.exafs import autobk_energy_grid, background_description
from xasflow.models.module import (
    CHECKPOINT_NAME,
    CHECKSUM_KEY,
    SpectrumRegressor,
    checkpoint_checksum,
    decode_outputs,
    model_from_checkpoint,
    read_checkpoint,
)
from xasflow.models.ood import distance_threshold, reference_spectra
from xasflow.models.params import TrainParams

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
PARITY_NAME = "parity.png"
LOSS_NAME = "loss.png"
RELIABILITY_NAME = "reliability.png"
COMPARISON_CSV = "comparison.csv"
COMPARISON_MD = "comparison.md"
#: Where a cross-system calibrated model keeps its folds (:mod:`xasflow.models.crossval`).
CROSSVAL_DIR = "crossval"


def _read_loss_history(metrics_csv: Path) -> dict[str, dict[int, float]]:
    """Per-epoch ``train_loss`` and ``val_loss`` from a CSVLogger ``metrics.csv``."""
    history: dict[str, dict[int, float]] = {"train_loss": {}, "val_loss": {}}
    if not metrics_csv.exists():
        return history
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, values in history.items():
                if row.get(key) not in (None, ""):
                    values[int(row["epoch"])] = float(row[key])
    return history


def _plot_parity(path: Path, panels: list[tuple[str, np.ndarray, np.ndarray, dict]]) -> None:
    """Predicted against true test values, one panel per number target (name, truth, predicted,
    test metrics)."""
    count = max(len(panels), 1)
    figure = Figure(figsize=(4.2 * count, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    for position, (name, truth, predicted) in enumerate((panel[:3] for panel in panels), start=1):
        axes = figure.add_subplot(1, count, position)
        metrics = panels[position - 1][3]
        if truth.size:
            axes.scatter(truth, predicted, s=12, alpha=0.7)
            low = float(min(truth.min(), predicted.min()))
            high = float(max(truth.max(), predicted.max()))
            margin = 0.05 * (high - low) + 1e-6
            low, high = low - margin, high + margin
            axes.plot([low, high], [low, high], color="black", linewidth=1, label="y = x")
            axes.set_xlim(low, high)
            axes.set_ylim(low, high)
            axes.legend(loc="upper left")
            r2 = metrics.get("r2")
            axes.set_title(f"{name}: MAE {metrics['mae']:.3g}, R$^2$ {'n/a' if r2 is None else f'{r2:.3f}'}")
        else:
            axes.set_title(f"{name}: no test values")
        axes.set_xlabel(f"true {name}")
        axes.set_ylabel(f"predicted {name}")
        axes.set_aspect("equal")
    if not panels:
        figure.add_subplot().set_title("no number targets")
    _save_figure(figure, path)


def _plot_loss(path: Path, history: dict[str, dict[int, float]]) -> None:
    figure = Figure(figsize=(5.5, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        if history[key]:
            epochs = sorted(history[key])
            axes.plot(epochs, [history[key][epoch] for epoch in epochs], label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (weighted sum over targets)")
    axes.set_yscale("log")
    axes.legend()
    _save_figure(figure, path)


def _save_figure(figure: Figure, path: Path) -> None:
    """PNG at 120 dpi, published atomically."""
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=120, format="png")


def _json_number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _model_card(
    datamodule: SpectrumDataModule,
    params: TrainParams,
    augmentation: AugmentationParams,
    calibration: dict | None,
) -> dict[str, Any]:
    """What a checkpoint needs to say about itself (plain data, stored in its hyperparameters)."""
    from xasflow.experiment.alignment import XanesNormalization

    attrs = datamodule.dataset_attrs
    try:
        provenance = json.loads(attrs.get("provenance", "{}"))
    except (TypeError, ValueError):
        provenance = {}
    spectra = provenance.get("spectra", {})
    ranges = XanesNormalization()
    assert datamodule.energy is not None and datamodule.split is not None
    # the energies (eV relative to E0) the input is made from
    energy = autobk_energy_grid(params.k_max) if params.representation == "chi" else datamodule.energy
    return {
        "absorber": datamodule.absorber,
        "edge": spectra.get("edge", "K"),
        "energy_grid_eV": [float(energy[0]), float(energy[-1]), float(energy[1] - energy[0])],
        "input": _input_card(params),
        "energy_reference": (
            f"E0 where Larch pre_edge-normalized mu first reaches {ranges.edge_level} of the edge step; "
            f"pre-edge {ranges.pre1}..{ranges.pre2} eV, post-edge {ranges.norm1}..{ranges.norm2} eV"
        ),
        "calibration": calibration,
        "augmentation": augmentation.to_dict() if augmentation.enabled else None,
        "targets": {
            spec.name: {
                **spec.to_dict(),
                "units": spec.units,
                "classes": list(datamodule.normalization.targets[spec.name].classes),
            }
            for spec in params.targets
        },
        "dataset_config_hash": attrs.get("config_hash"),
        "split": {
            "train": list(datamodule.split.train),
            "val": list(datamodule.split.val),
            "test": list(datamodule.split.test),
            "excluded": list(datamodule.split.excluded),
        },
        "engine": {key: spectra[key] for key in sorted(spectra) if key != "cache_dir"},
    }


def _input_card(params: TrainParams) -> dict[str, Any]:
    """The model card's ``input``: what the network reads."""
    if params.representation != "chi":
        return {"representation": "mu"}
    return {
        "representation": "chi",
        "k": [params.k_min, params.k_max, params.k_step],
        "k_weight": params.k_weight,
        "background": background_description(),
    }


def _out_of_distribution_reference(
    datamodule: SpectrumDataModule, calibration: dict | None
) -> tuple[np.ndarray, float]:
    """Standardized reference spectra (m, n_energy) and the distance threshold
    (:mod:`xasflow.models.ood`) from the training and validation splits and, with a calibration,
    its measured reference (left out, with a logged reason, where a chi model cannot read it)."""
    normalization = datamodule.normalization
    assert normalization is not None and datamodule.energy is not None
    train = datamodule.arrays("train")
    references = normalization.standardize_mu(reference_spectra(train.mu, train.system, train.frame))
    validation = normalization.standardize_mu(datamodule.arrays("val").mu)
    measured = None
    if calibration and calibration.get("measured_path"):
        measured = _measured_reference(datamodule, calibration["measured_path"])
    return references, distance_threshold(references, validation, measured)


def _measured_reference(datamodule: SpectrumDataModule, path: str) -> np.ndarray | None:
    """The measured calibration reference as standardized model input (n_input,); None for a chi
    model whose k range the reference does not reach (a XANES scan, usually)."""
    from xasflow.experiment import read_spectrum
    from xasflow.experiment.alignment import normalize_xanes

    assert datamodule.normalization is not None and datamodule.energy is not None
    foil = normalize_xanes(read_spectrum(path))
    try:
        inputs = measured_input(foil, datamodule.params, datamodule.energy)
    except UserError as error:
        if datamodule.params.representation != "chi":
            raise
        logger.warning(
            "calibration reference %s is not used for the out-of-distribution threshold: the chi "
            "model cannot read it (%s)",
            path,
            error,
        )
        return None
    return datamodule.normalization.standardize_mu(inputs[None, :])[0]


class EpochProgressLog(pl.Callback):
    """One INFO line per training epoch, readable in a job log (where a progress bar is not):
    epoch/total, training and validation loss, and the time left at the mean epoch time so far."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done, total = trainer.current_epoch + 1, trainer.max_epochs
        elapsed = time.perf_counter() - self.started
        losses = ", ".join(
            f"{name.replace('_', ' ')} {float(trainer.callback_metrics[name]):.4g}"
            for name in ("train_loss", "val_loss")
            if name in trainer.callback_metrics
        )
        logger.info(
            "%s: epoch %d/%d, %s, %.1f s elapsed, about %.0f s left",
            self.label,
            done,
            total,
            losses or "no loss yet",
            elapsed,
            elapsed / done * max(total - done, 0),
        )


@dataclass(frozen=True)
class _Fit:
    """What a finished fit leaves: the checkpoint callback, the monitored metric, the CSV log."""

    checkpoint: ModelCheckpoint
    monitor: str
    log_dir: Path
    epochs_run: int


def train_model(
    dataset_path: str | Path,
    params: TrainParams,
    out_dir: str | Path,
    augmentation: AugmentationParams | None = None,
    calibration: dict | None = None,
) -> dict[str, Any]:
    """Train ``params.architecture`` on the dataset at ``dataset_path``; write results to ``out_dir``.

    Seeds everything from ``params.seed`` and trains with deterministic algorithms (on a GPU when
    the job has one); ``params.ensemble`` members train side by side. The checkpoint with the
    lowest validation loss (training loss if there are no validation systems) is evaluated on
    the validation systems, which fit split-conformal intervals of every number and curve
    target (:mod:`xasflow.models.evaluate`); with ``params.conformal`` "cross_system" the
    intervals come instead from one extra training per training and validation system, held
    out in turn (:func:`xasflow.models.crossval.development_calibration`, folds under
    ``out_dir/crossval``). It is kept as ``out_dir/model.ckpt`` with that calibration and a
    checksum of its weights and hyperparameters. Also writes
    ``metrics.json`` (the returned dict: per target the test metrics of the model and of every
    baseline, the coverage of the 68/90/95 % intervals, the winner), ``comparison.csv`` /
    ``comparison.md`` (the table), ``parity.png``, ``reliability.png``, ``loss.png`` and the
    CSV training log under ``out_dir/logs``; logs one line per epoch.

    ``augmentation`` redraws training spectra on the fly (:mod:`xasflow.models.augment`);
    ``calibration`` (the record written by ``xasflow fidelity``) maps every simulated spectrum
    onto the measured reference before training. Both, with the out-of-distribution reference
    set and threshold, are stored in the checkpoint.
    """
    augmentation = augmentation or AugmentationParams.none()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(params.seed, workers=True, verbose=False)
    datamodule, model = _prepare(dataset_path, params, augmentation, calibration)
    fit = _fit(model, datamodule, params, out_dir)
    best_path = _publish_checkpoint(fit, out_dir)
    best = model_from_checkpoint(read_checkpoint(best_path), best_path)
    predicted = {split: _predict(best, datamodule.arrays(split)) for split in ("val", "test")}
    calibration_sets = None
    if params.conformal == "cross_system":
        from xasflow.models.crossval import development_calibration

        conformal, calibration_sets = development_calibration(
            dataset_path, params, out_dir / CROSSVAL_DIR, augmentation, calibration
        )
    else:
        conformal = fit_calibration(params.targets, predicted["val"], datamodule.arrays("val"))
    temperatures = fit_temperatures(params.targets, best, datamodule.arrays("val"))
    intervals = {
        "method": params.conformal,
        "calibration_systems": sorted(
            datamodule.split.train + datamodule.split.val
            if params.conformal == "cross_system"
            else datamodule.split.val
        ),
        "spectra": {name: value.n_calibration for name, value in conformal.items()},
    }
    saved = _store_calibration(best_path, conformal, temperatures, intervals)
    best = model_from_checkpoint(saved, best_path)  # what was written is what is evaluated
    predicted = {split: _predict(best, datamodule.arrays(split)) for split in ("val", "test")}
    arrays = {split: datamodule.arrays(split) for split in ("train", "val", "test")}
    inputs = {split: datamodule.normalization.standardize_mu(arrays[split].mu) for split in arrays}
    model_name = out_dir.name or params.architecture
    evaluation = evaluate_targets(
        model_name, params.targets, predicted, arrays, best.conformal, inputs, params.seed
    )
    metrics = _metrics_record(dataset_path, datamodule, params, fit, evaluation, model, int(saved["epoch"]))
    metrics.update(
        calibration=calibration, augmentation=augmentation.to_dict() if augmentation.enabled else None
    )
    write_comparison(evaluation.comparison, out_dir / COMPARISON_CSV, out_dir / COMPARISON_MD)
    _plot_parity(out_dir / PARITY_NAME, _parity_panels(params, arrays["test"], predicted["test"], evaluation))
    write_reliability(out_dir / RELIABILITY_NAME, params.targets, predicted, arrays, calibration_sets)
    _plot_loss(out_dir / LOSS_NAME, _read_loss_history(fit.log_dir / "metrics.csv"))
    # wall time last, so it covers evaluation and plotting too
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_text(out_dir / METRICS_NAME, json.dumps(metrics, indent=2) + "\n")
    for spec in params.targets:
        logger.info(
            "%s: test %s %s; best on this target: %s",
            model_name,
            spec.name,
            _format_metrics(evaluation.targets[spec.name]["test"]),
            evaluation.winners.get(spec.name),
        )
    logger.info("%s: %d epochs in %.1f s", model_name, fit.epochs_run, metrics["wall_seconds"])
    return metrics


def split_predictions(
    dataset_path: str | Path,
    params: TrainParams,
    checkpoint_path: str | Path,
    calibration: dict | None = None,
    split: str = "test",
) -> tuple[SpectrumArrays, dict[str, np.ndarray]]:
    """The raw arrays of one split of ``params``' split and the checkpoint's physical predictions
    for them (means, spreads, intervals: :meth:`SpectrumRegressor.predict_spectra`)."""
    transform = CalibrationTransform.from_dict(calibration["transform"]) if calibration else None
    datamodule = SpectrumDataModule(dataset_path, params, None, transform)
    datamodule.setup("predict")
    model = model_from_checkpoint(read_checkpoint(checkpoint_path), checkpoint_path)
    arrays = datamodule.arrays(split)
    return arrays, _predict(model, arrays)


def _format_metrics(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value:.4g}" for key, value in values.items() if isinstance(value, float))


def _predict(model: SpectrumRegressor, arrays: SpectrumArrays) -> dict[str, np.ndarray]:
    """Physical predictions of ``model`` for a split (empty arrays for an empty split)."""
    if len(arrays):
        return model.predict_spectra(arrays.mu)
    outputs = {
        name: np.zeros((model.params.ensemble, 0, scale.output_size))
        for name, scale in model.normalization.targets.items()
    }
    return decode_outputs(model.normalization, outputs, model.conformal)


def _parity_panels(
    params: TrainParams, test: SpectrumArrays, predicted: dict[str, np.ndarray], evaluation: Evaluation
) -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    panels = []
    for spec in params.targets:
        if spec.kind != "regression":
            continue
        keep = defined_rows(test.targets[spec.name])
        panels.append(
            (
                spec.name,
                test.targets[spec.name][keep],
                predicted[spec.name][keep],
                evaluation.targets[spec.name]["test"],
            )
        )
    return panels


def _store_calibration(
    path: Path, conformal: dict[str, Any], temperatures: dict[str, float], intervals: dict[str, Any]
) -> dict[str, Any]:
    """Add the conformal calibration and the probability temperatures to the checkpoint at
    ``path``, and ``intervals`` (method, calibration systems and spectra per target) to its
    model card (checksum renewed, written atomically); returns the checkpoint dict as written."""
    checkpoint = read_checkpoint(path)
    hyper_parameters = checkpoint[SpectrumRegressor.CHECKPOINT_HYPER_PARAMS_KEY]
    hyper_parameters["conformal"] = {name: value.to_dict() for name, value in conformal.items()}
    hyper_parameters["model_card"] = {**hyper_parameters.get("model_card", {}), "intervals": intervals}
    hyper_parameters["temperatures"] = dict(temperatures)
    checkpoint[CHECKSUM_KEY] = checkpoint_checksum(checkpoint["state_dict"], hyper_parameters)
    with atomic_path(path, suffix=".ckpt") as temporary:
        torch.save(checkpoint, temporary)
    return read_checkpoint(path)


def _prepare(
    dataset_path: str | Path,
    params: TrainParams,
    augmentation: AugmentationParams,
    calibration: dict | None,
) -> tuple[SpectrumDataModule, SpectrumRegressor]:
    """The data module (set up: grids, split, training statistics) and the untrained model with
    its model card and out-of-distribution reference."""
    transform = CalibrationTransform.from_dict(calibration["transform"]) if calibration else None
    datamodule = SpectrumDataModule(dataset_path, params, augmentation, transform)
    datamodule.setup("fit")  # the model needs the grids and training statistics before fit
    assert datamodule.split is not None and datamodule.normalization is not None
    references, threshold = _out_of_distribution_reference(datamodule, calibration)
    model = SpectrumRegressor(
        params,
        datamodule.energy,
        datamodule.r,
        datamodule.normalization,
        model_card=_model_card(datamodule, params, augmentation, calibration),
        ood_reference_count=references.shape[0],
        ood_threshold=threshold,
    )
    with torch.no_grad():
        model.ood_reference.copy_(torch.from_numpy(references.astype(np.float32)))
    return datamodule, model


def _fit(
    model: SpectrumRegressor, datamodule: SpectrumDataModule, params: TrainParams, out_dir: Path
) -> _Fit:
    """Run Lightning's fit, keeping the best checkpoint under ``out_dir/checkpoints``."""
    has_val = len(datamodule.arrays("val")) > 0
    monitor = "val_loss" if has_val else "train_loss"
    if not has_val:
        logger.warning("no validation systems: keeping the checkpoint with the lowest training loss")
    # a directory of its own: Lightning warns when the checkpoint directory already holds files
    checkpoint = ModelCheckpoint(
        dirpath=out_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode="min",
        save_top_k=1,
        save_weights_only=True,
        enable_version_counter=False,
    )
    # the Trainer switches torch to deterministic algorithms process-wide; restore the caller's choice
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    # deterministic cuBLAS on GPUs needs a fixed workspace; harmless on CPU
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    csv_logger = CSVLogger(save_dir=out_dir, name="logs", version="")
    try:
        trainer = pl.Trainer(
            max_epochs=params.max_epochs,
            accelerator="auto",  # a GPU when the job has one (the SLURM profile asks for it)
            devices=1,
            deterministic=True,
            logger=csv_logger,
            callbacks=[checkpoint, EpochProgressLog(params.architecture)],
            # a bar redrawn in place is unreadable in a log file: one line per epoch there instead
            enable_progress_bar=sys.stderr.isatty(),
            enable_model_summary=False,
            log_every_n_steps=1,
            num_sanity_val_steps=0,
            limit_val_batches=None if has_val else 0,
            default_root_dir=out_dir,
        )
        with warnings.catch_warnings():
            # in-memory tensors: DataLoader workers would only add process start-up time
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            # raised inside Lightning 2.6 by torch >= 2.10's pytree; nothing a caller can change
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            trainer.fit(model, datamodule=datamodule)
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
    return _Fit(checkpoint, monitor, Path(csv_logger.log_dir), int(trainer.current_epoch))


def _publish_checkpoint(fit: _Fit, out_dir: Path) -> Path:
    """Move the best checkpoint to ``out_dir/model.ckpt`` (a rename: atomic); return that path."""
    if not fit.checkpoint.best_model_path:
        raise RuntimeError(f"training saved no checkpoint: '{fit.monitor}' was never finite (diverged?)")
    best_path = Path(fit.checkpoint.best_model_path).replace(out_dir / CHECKPOINT_NAME)
    checkpoint_dir = Path(fit.checkpoint.dirpath)
    if checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
        checkpoint_dir.rmdir()
    return best_path


def _metrics_record(
    dataset_path: str | Path,
    datamodule: SpectrumDataModule,
    params: TrainParams,
    fit: _Fit,
    evaluation: Evaluation,
    model: SpectrumRegressor,
    best_epoch: int,
) -> dict[str, Any]:
    """The content of ``metrics.json`` (calibration, augmentation and wall time added by the caller).

    Besides the nested per-target record, flat keys ``test_<target>_<metric>`` (the model) and
    ``baseline_test_<target>_<metric>`` (the training-mean baseline) are kept for quick reading.
    """
    split = datamodule.split
    assert split is not None
    best_score = fit.checkpoint.best_model_score
    flat: dict[str, Any] = {}
    for name, entry in evaluation.targets.items():
        for key, value in entry["test"].items():
            flat[f"test_{name}_{key}"] = _json_number(value)
        for key, value in entry["baselines"].get("mean", {}).items():
            if isinstance(value, float | None):
                flat[f"baseline_test_{name}_{key}"] = _json_number(value)
        for key, value in entry.get("coverage", {}).items():
            flat[f"test_{name}_{key}"] = _json_number(value)
    return {
        "architecture": params.architecture,
        "ensemble": params.ensemble,
        "dataset": str(Path(dataset_path)),
        "dataset_config_hash": datamodule.dataset_attrs.get("config_hash"),
        "n_train": len(datamodule.arrays("train")),
        "n_val": len(datamodule.arrays("val")),
        "n_test": len(datamodule.arrays("test")),
        "train_systems": list(split.train),
        "val_systems": list(split.val),
        "test_systems": list(split.test),
        "excluded_systems": list(split.excluded),
        **flat,
        "targets": _json_clean(evaluation.targets),
        "winners": evaluation.winners,
        "calibration": None,
        "augmentation": None,
        "ood_threshold": model.ood_threshold,
        "ood_reference_spectra": int(model.ood_reference.shape[0]),
        "monitor": fit.monitor,
        "best_score": _json_number(float(best_score)) if best_score is not None else None,
        "best_checkpoint_epoch": best_epoch,
        "epochs_run": fit.epochs_run,
        "wall_seconds": None,
        "params": params.to_dict(),
        "versions": {
            "xasflow": xasflow.__version__,
            "torch": torch.__version__,
            "pytorch_lightning": pl.__version__,
            "numpy": np.__version__,
        },
    }


def _json_clean(value: Any) -> Any:
    """Nested dicts and lists with non-finite floats as None (valid JSON)."""
    if isinstance(value, dict):
        return {key: _json_clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(item) for item in value]
    if isinstance(value, float | np.floating):
        return _json_number(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value
