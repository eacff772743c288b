"""Model maps of 2D XANES stacks with known coordination numbers (``xasflow image --model``).

Two synthetic Cu K-edge stacks, 64 x 64 pixels with an empty border, Poisson transmission noise
(``--dose`` photons per pixel per energy, as :mod:`xasflow.inference.imaging_synthetic`):

* ``simulated``: four regions of pseudo-experimental spectra of the default study's dataset
  (:func:`~xasflow.inference.pseudo.make_pseudo_experiment`: site spectra averaged per system,
  made to look measured with the model's calibration transform, broadened by 1 eV), of the test
  systems ``bulk_900K`` and ``np_cubo_147``, the excluded ``np_deca_147``, and a 50/50 mixture
  of the first two (truth: the mean of their coordination numbers);
* ``measured``: the measured Cu foils ``cu_metal_rt.xdi`` and ``cu_metal_10K.xdi`` (left and
  right, coordination number 12) and their 50/50 mixture.

Each stack is mapped by ``xasflow image`` (references: its pure spectra; regions given) with
and without ``--model``, in fresh processes; the time per pixel of the model maps is the
difference over the mapped pixels. The pure spectra also go through ``xasflow predict``, whose
numbers a noise-free region should reproduce. Prints one markdown table per stack.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/imaging_model_maps.py \\
        --models results/models/mlp/model.ckpt results/models/cnn/model.ckpt \\
        --dataset results/dataset/spectra.zarr
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("XASFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
SIMULATED = ("bulk_900K", "np_cubo_147", "np_deca_147")
MEASURED = ("cu_metal_rt.xdi", "cu_metal_10K.xdi")
SIZE = 64


def region_layout(n_regions: int) -> np.ndarray:
    """Labels (SIZE, SIZE): regions 1..n_regions as vertical bands inside a 4-pixel empty border."""
    labels = np.zeros((SIZE, SIZE), dtype=np.int32)
    edges = np.linspace(4, SIZE - 4, n_regions + 1).astype(int)
    for label, (start, stop) in enumerate(zip(edges[:-1], edges[1:], strict=True), start=1):
        labels[4 : SIZE - 4, start:stop] = label
    return labels


def write_spectrum(path: Path, energy: np.ndarray, mu: np.ndarray) -> Path:
    np.savetxt(path, np.column_stack([energy, mu]), fmt="%.6f", header="energy_eV mu")
    return path


def build_stack(
    folder: Path, energy: np.ndarray, spectra: list[np.ndarray], mixtures, dose: float, seed: int
):
    """Stack of raw absorbance: region i holds the mixture ``mixtures[i]`` (weights of the
    pure ``spectra``, each normalized on ``energy``) on a 0.3 absorbance background with an
    edge step of 1; returns (stack path, labels path)."""
    from xasflow.inference.imaging import prepare_references
    from xasflow.inference.imaging_io import write_stack
    from xasflow.spectrum import Spectrum

    raw = [Spectrum(energy, mu, source=f"pure {index}", kind="measured") for index, mu in enumerate(spectra)]
    normalized, _ = prepare_references(raw, energy)
    labels = region_layout(len(mixtures))
    mu = np.full((energy.size, SIZE, SIZE), 0.3) - 1e-4 * (energy - energy.mean())[:, None, None]
    for label, weights in enumerate(mixtures, start=1):
        mu[:, labels == label] += (np.asarray(weights) @ normalized)[:, None]
    rng = np.random.default_rng(seed)
    mu = -np.log(np.maximum(rng.poisson(dose * np.exp(-mu)), 0.5) / dose)
    stack = write_stack(folder / "stack.zarr", energy, mu.astype(np.float32), chunk=64)
    np.save(folder / "regions.npy", labels)
    return stack, folder / "regions.npy"


def simulated_spectra(dataset_path: Path, checkpoint: Path):
    """(energy, [mu of each system], [truth CN]) of the pseudo-experiments on a common grid."""
    from xasflow.dataset.schema import open_dataset
    from xasflow.experiment.fidelity import CalibrationTransform
    from xasflow.inference.predict import load_predictor
    from xasflow.inference.pseudo import PseudoExperimentParams, make_pseudo_experiment

    card = load_predictor(checkpoint).model_card
    calibration = CalibrationTransform.from_dict(card["calibration"]["transform"])
    dataset = open_dataset(dataset_path)
    made = [
        make_pseudo_experiment(
            dataset, PseudoExperimentParams(system, noise=0.0, broadening=1.0), calibration
        )
        for system in SIMULATED
    ]
    start = max(spectrum.energy[0] for spectrum, _ in made)
    stop = min(spectrum.energy[-1] for spectrum, _ in made)
    energy = np.arange(np.ceil(start), np.floor(stop) + 1e-9, 1.0)
    spectra = [np.interp(energy, spectrum.energy, spectrum.mu) for spectrum, _ in made]
    return energy, spectra, [truth["coordination_number"] for _, truth in made]


def measured_spectra():
    from xasflow.experiment import read_spectrum

    read = [read_spectrum(DATA / "experimental" / name) for name in MEASURED]
    energy = np.arange(8950.0, 9045.0 + 1e-9, 1.0)
    return energy, [np.interp(energy, spectrum.energy, spectrum.mu) for spectrum in read], [12.0, 12.0]


def xasflow(*arguments: str) -> float:
    """Run an xasflow command in a fresh process; its wall time, s."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "xasflow.cli", *arguments], check=True, capture_output=True, text=True
    )
    return time.perf_counter() - started


def run_stack(name: str, energy, spectra, truths, labels_names, args, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    mixtures = [np.eye(len(spectra))[index] for index in range(len(spectra))]
    mixture = np.zeros(len(spectra))
    mixture[:2] = 0.5
    mixtures.append(mixture)
    region_truth = [*truths, (truths[0] + truths[1]) / 2]
    region_names = [*labels_names, f"50/50 {labels_names[0]} + {labels_names[1]}"]
    stack, regions = build_stack(folder, energy, spectra, mixtures, args.dose, args.seed)
    files = [
        write_spectrum(folder / f"{label}.dat", energy, mu)
        for label, mu in zip(labels_names, spectra, strict=True)
    ]
    common = [str(stack), *[f"--reference=r{index}={path}" for index, path in enumerate(files)]]
    common += ["--regions", str(regions), "--denoise", args.denoise]
    plain = xasflow("image", *common, "--out-dir", str(folder / "plain"))
    models = [word for path in args.models for word in ("--model", str(path))]
    with_models = xasflow("image", *common, *models, "--out-dir", str(folder / "maps"))
    single = predict_single(args.models, files, folder)
    timing = time_model_maps(args.models, stack, files, regions)
    summary = json.loads((folder / "maps" / "imaging.json").read_text())
    mapped = int(np.load(regions).astype(bool).sum())
    return {
        "name": name,
        "regions": region_names,
        "truth": region_truth,
        "rows": summary["model_regions"],
        "single": single,
        "seconds_per_pixel": (with_models - plain) / mapped,
        "in_process": timing,
        "pixels": mapped,
        "times": (plain, with_models),
    }


def time_model_maps(checkpoints, stack_path: Path, files, regions: Path, repeats: int = 3) -> dict:
    """Seconds per pixel of ``ModelMaps.predict`` (alignment + every model) on the region pixels,
    in this process, best of ``repeats``; per model alone and all together."""
    from xasflow.experiment import read_spectrum
    from xasflow.inference.imaging import references_on_grid
    from xasflow.inference.imaging_io import open_stack
    from xasflow.inference.imaging_model import load_model_maps
    from xasflow.spectrum import Spectrum

    with open_stack(stack_path) as stack:
        block = stack.read_tile(stack_tile(stack.image_shape))
        energy = stack.energy
    inside = np.load(regions).astype(bool).ravel()
    pixels = block.reshape(block.shape[0], -1).T[inside]
    mean = references_on_grid([read_spectrum(path) for path in files], energy).mean(axis=0)
    representative = Spectrum(energy, mean, source=str(stack_path), kind="measured")
    timings = {}
    for label, chosen in [
        *[(Path(path).parent.name, [path]) for path in checkpoints],
        ("all", list(checkpoints)),
    ]:
        maps = load_model_maps(chosen, energy, representative)
        best = np.inf
        for _ in range(repeats):
            started = time.perf_counter()
            maps.predict(pixels)
            best = min(best, time.perf_counter() - started)
        timings[label] = best / len(pixels)
    return timings


def stack_tile(image_shape):
    from xasflow.inference.imaging_io import Tile

    return Tile(slice(0, image_shape[0]), slice(0, image_shape[1]))


def predict_single(checkpoints, files, folder: Path) -> dict:
    """{(model, file stem): predicted CN} of the pure spectra with xasflow predict's library call."""
    from xasflow.inference.run import predict_files

    rows = predict_files(list(checkpoints), list(files), folder / "predictions.csv")
    return {
        (row["model"], Path(row["spectrum"]).stem): float(row["predicted_coordination_number"])
        for row in rows
    }


def table(result: dict, models: list[str], args: argparse.Namespace) -> str:
    lines = [
        f"### {result['name']} stack ({result['pixels']} px in regions, dose {args.dose:g}, "
        f"denoise {args.denoise})",
        "",
        "| region | true CN | model | spectra | mean predicted CN | pixel std | xasflow predict (pure) "
        "| mean 90 % width | OOD share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if not row["quantity"].endswith(":coordination_number"):
            continue
        model = row["quantity"].split(":")[0]
        label = row["label"]
        name = result["regions"][label - 1]
        single = result["single"].get((model, name), float("nan"))
        lines.append(
            f"| {name} | {result['truth'][label - 1]:.2f} | {model} | {row['spectra']} | {row['mean']:.2f} | "
            f"{row['pixel_std']:.2f} | {single:.2f} | {row['mean_interval_90']:.2f} | "
            f"{row['out_of_distribution_share']:.2f} |"
        )
    plain, with_models = result["times"]
    in_process = ", ".join(f"{name} {1e6 * seconds:.0f} us" for name, seconds in result["in_process"].items())
    lines += [
        "",
        f"`xasflow image` {plain:.1f} s without models, {with_models:.1f} s with {', '.join(models)} "
        f"({1e3 * result['seconds_per_pixel']:.2f} ms per pixel more); model maps alone (alignment + "
        f"prediction, one thread) per pixel: {in_process}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True, help="the study's spectra.zarr")
    parser.add_argument("--dose", type=float, default=1e5)
    parser.add_argument("--denoise", default="none", choices=("none", "pca", "network"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out-dir", type=Path, help="keep the stacks and maps here (default: a temporary folder)"
    )
    args = parser.parse_args()
    folder = args.out_dir or Path(tempfile.mkdtemp(prefix="imaging_model_maps_"))
    from xasflow.inference.run import model_names

    names = model_names(list(args.models))
    simulated = run_stack(
        "simulated",
        *simulated_spectra(args.dataset, args.models[0]),
        list(SIMULATED),
        args,
        folder / "simulated",
    )
    measured = run_stack(
        "measured", *measured_spectra(), [Path(name).stem for name in MEASURED], args, folder / "measured"
    )
    print(table(simulated, names, args))
    print(table(measured, names, args))
    print(f"outputs in {folder}")


if __name__ == "__main__":
    main()
