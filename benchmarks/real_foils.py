"""Every trained model against real measurements: the six Cu foil spectra in shared data.

Usage (after `make run`):
    .venv/bin/python benchmarks/real_foils.py [RESULTS_DIR] [--shared-data DIR]

For each model in RESULTS_DIR/models/*/model.ckpt it prints the predicted first-shell
coordination number of each Cu measurement against the known 12 of fcc Cu, the input's distance
to the training spectra and its out-of-distribution flag; then the held-out pseudo-experiment
against its truth. Every spectrum is first checked against the model's card, as `xasflow
predict` does; an Fe foil must be refused there (Fe, not Cu, K edge), and the reason is printed.
The last lines give the largest error, how many models refused the Fe foil, and whether every Cu
prediction lies within +-1 of 12 and the pseudo-experiment within +-1 of its truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np

from xasflow.experiment import read_spectrum, to_relative_grid
from xasflow.experiment.alignment import normalize_xanes
from xasflow.inference.compatibility import IncompatibleSpectrumError, check_compatible
from xasflow.inference.predict import load_predictor

CU_FOILS = (
    "cu_metal_rt.xdi",
    "cu_metal_10K.xdi",
    "cu_rt01.xmu",
    "cu_10k.xmu",
    "cu_50k.xmu",
    "cu_150k.xmu",
)
TRUE_CN = 12.0
TOLERANCE = 1.0


def default_shared_data() -> Path:
    root = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("XASFLOW_SHARED_DATA", root.parent / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results")
    parser.add_argument("--shared-data", type=Path, default=default_shared_data())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = Path(args.results)
    experimental = args.shared_data / "experimental"
    checkpoints = sorted(results.glob("models/*/model.ckpt"))
    if not checkpoints:
        raise SystemExit(f"no models in {results}/models: run `make run` first")
    pseudo = sorted((results / "inference" / "pseudo").glob("*.dat"))

    foils = [normalize_xanes(read_spectrum(experimental / name)) for name in CU_FOILS]
    iron = normalize_xanes(read_spectrum(experimental / "fe_metal_rt.xdi"))
    pseudo_spectra = [normalize_xanes(read_spectrum(path)) for path in pseudo]
    truths = [json.loads(path.with_suffix(".truth.json").read_text()) for path in pseudo]

    worst_foil, worst_pseudo, all_ok = 0.0, 0.0, True
    flags = {"cu_flagged": 0, "fe_refused": 0}
    print(
        f"{'model':6s} {'spectrum':22s} {'CN':>7s} {'truth':>6s} {'error':>6s} {'dist':>6s} {'thr':>6s} OOD"
    )
    for checkpoint in checkpoints:
        predictor = load_predictor(checkpoint)
        name = checkpoint.parent.name
        threshold = predictor.model.ood_threshold or float("nan")

        def predict(spectra, predictor=predictor, name=name):
            for spectrum in spectra:  # as `xasflow predict` does; the Cu spectra must pass
                check_compatible(spectrum, predictor.model.model_card, predictor.energy, name)
            inputs = np.array([to_relative_grid(spectrum, predictor.energy) for spectrum in spectra])
            return predictor.predict(inputs)

        outputs = predict(foils)
        for index, foil_name in enumerate(CU_FOILS):
            cn = float(outputs["coordination_number"][index])
            error = cn - TRUE_CN
            worst_foil = max(worst_foil, abs(error))
            all_ok &= abs(error) <= TOLERANCE
            flagged = bool(outputs.get("out_of_distribution", [False] * len(foils))[index])
            flags["cu_flagged"] += flagged
            distance = float(outputs.get("input_distance", [np.nan] * len(foils))[index])
            print(
                f"{name:6s} {foil_name:22s} {cn:7.2f} {TRUE_CN:6.1f} {error:+6.2f} {distance:6.2f} "
                f"{threshold:6.2f} {'yes' if flagged else 'no'}"
            )
        if pseudo_spectra:
            outputs = predict(pseudo_spectra)
            for index, truth in enumerate(truths):
                cn = float(outputs["coordination_number"][index])
                error = cn - truth["coordination_number"]
                worst_pseudo = max(worst_pseudo, abs(error))
                all_ok &= abs(error) <= TOLERANCE
                distance = float(outputs.get("input_distance", [np.nan])[index])
                flagged = bool(outputs.get("out_of_distribution", [False])[index])
                print(
                    f"{name:6s} {'pseudo ' + truth['system']:22s} {cn:7.2f} "
                    f"{truth['coordination_number']:6.2f} "
                    f"{error:+6.2f} {distance:6.2f} {threshold:6.2f} {'yes' if flagged else 'no'}"
                )
        try:
            check_compatible(iron, predictor.model.model_card, predictor.energy, name)
        except IncompatibleSpectrumError as refusal:
            flags["fe_refused"] += 1
            print(f"{name:6s} {'fe_metal_rt.xdi (Fe!)':22s} refused: {refusal.problem}")
        else:
            print(f"{name:6s} {'fe_metal_rt.xdi (Fe!)':22s} NOT refused by the model card")
    n_models = len(checkpoints)
    print(f"largest |CN - 12| over {n_models} models x {len(CU_FOILS)} Cu measurements: {worst_foil:.2f}")
    print(f"largest |CN - truth| of the pseudo-experiment: {worst_pseudo:.2f}")
    print(f"Cu measurements flagged out of distribution: {flags['cu_flagged']} of {n_models * len(CU_FOILS)}")
    print(f"Fe foil refused by the model card: {flags['fe_refused']} of {n_models}")
    print(f"all within +-{TOLERANCE:g}: {'yes' if all_ok else 'no'}")


if __name__ == "__main__":
    main()
