"""The Cu foil temperature series read by EXAFS models trained on MD: the first RDF peak per
temperature, predicted from each measured foil beside the MD at the same temperature.

    python benchmarks/cu_temperature_series.py [RESULTS_DIR] [--config CONFIG] [--plot PNG]

after ``snakemake --configfile config/examples/cu_temperature.yaml`` (RESULTS_DIR defaults to its
results_dir, results/cu_temperature). Prints one row per foil and model and writes the plot
(default RESULTS_DIR/temperature_series.png).

The first peak is read from the radial distribution n(r) = 4 pi r^2 rho g(r) (neighbours per
Angstrom; g(r) as the labels and the models give it, rho the MD cell's number density):

- CN: the area of n(r) from the grid start to the first shell edge (``labels.shell_edges[0]``),
  as the shell-CN label counts it; for a prediction also the area under its 90 % band's lower
  and upper curves (an envelope: it holds where the whole curve lies in the band);
- position R and width sigma_fit: a Gaussian A exp(-(r - R)^2 / 2 sigma^2) fitted to n(r) over
  FIT_WINDOW (scipy ``curve_fit``);
- sigma: the bond-length spread, sigma_fit with the labels' Gaussian smearing
  (``labels.rdf_sigma``) taken out in quadrature, sqrt(sigma_fit^2 - rdf_sigma^2). sigma^2 is
  what EXAFS calls the first-shell Debye-Waller factor (MSRD).

MD widths are given as the MD makes them, with the temperature they stand for: each bulk system
``cu_TNNN`` ran at T_eff, the classical temperature whose MSRD equals the quantum
correlated-Debye MSRD (theta_D 315 K) at the nominal NNN K (see the config). The script
recomputes that mapping with Larch and stops if the config's temperatures differ from it. The
MD sigma^2 is also measured directly from the snapshots' first-shell pair distances (ASE
``neighbor_list``), beside the correlated-Debye sigma^2 at the nominal temperature.

The bar (issue 13): per model, predicted sigma rises monotonically from 10 K to room
temperature and lies within 20 % of the MD sigma at each temperature; predicted CN within
+-1 of 12.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

import ase.io
import numpy as np
import yaml
from ase.data import atomic_masses, atomic_numbers
from ase.neighborlist import neighbor_list
from larch.xafs.sigma2_models import sigma2_correldebye
from scipy.optimize import curve_fit

from xasflow.structures.io import read_labels

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "examples" / "cu_temperature.yaml"
#: measured file -> nominal temperature, K (cu_rt01: "room temperature", taken as 300 K)
FOILS = {"cu_10k.xmu": 10.0, "cu_50k.xmu": 50.0, "cu_150k.xmu": 150.0, "cu_rt01.xmu": 300.0}
THETA_DEBYE_CU = 315.0  # K
LATTICE_CONSTANT_CU = 3.615  # Angstrom
BOHR = 0.52917721  # Angstrom, Larch's (FEFF's) value
#: Angstrom: the Gaussian fit's window, +-4 sigma about 2.55 A at the widest (sigma 0.11 A)
FIT_WINDOW = (2.1, 3.0)
CN_TOLERANCE = 1.0
WIDTH_TOLERANCE = 0.2


def correlated_debye_sigma2(temperature: float, theta: float = THETA_DEBYE_CU) -> float:
    """First-shell sigma^2 (Angstrom^2) of fcc Cu in the correlated Debye model (Larch
    ``sigma2_correldebye``: a Cu-Cu pair at a / sqrt(2), Norman radius = Wigner-Seitz radius
    of fcc Cu, in bohr as Larch expects)."""
    distance = LATTICE_CONSTANT_CU / np.sqrt(2.0)
    wigner_seitz = (3.0 * LATTICE_CONSTANT_CU**3 / 4.0 / (4.0 * np.pi)) ** (1.0 / 3.0) / BOHR
    mass = atomic_masses[atomic_numbers["Cu"]]
    return float(
        sigma2_correldebye(
            2, temperature, theta, wigner_seitz, [0.0, distance], [0.0, 0.0], [0.0, 0.0], [mass, mass]
        )
    )


def effective_temperature(nominal: float, theta: float = THETA_DEBYE_CU) -> float:
    """K: the classical temperature whose first-shell sigma^2 equals the quantum one at ``nominal``.

    Classically sigma^2 = c T; c is the model's high-temperature slope, sigma^2(T) / T at
    T = 100 theta (where coth(x) = 1/x to 1e-5)."""
    slope = correlated_debye_sigma2(100.0 * theta, theta) / (100.0 * theta)
    return correlated_debye_sigma2(nominal, theta) / slope


def nominal_temperature(system: str) -> float | None:
    """10.0 for ``cu_T010``; None for a system that is not on the bulk ladder."""
    match = re.fullmatch(r"cu_T(\d+)", system)
    return float(match.group(1)) if match else None


def _gaussian(r, area, centre, sigma):
    return area / (sigma * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((r - centre) / sigma) ** 2)


def first_peak(r: np.ndarray, g: np.ndarray, density: float, shell_edge: float, smearing: float) -> dict:
    """Position, widths (Angstrom) and area of the first peak of g(r) (shape (n_r,) on ``r``)."""
    neighbours = 4 * np.pi * r**2 * density * g
    inside = r <= shell_edge
    window = (r >= FIT_WINDOW[0]) & (r <= FIT_WINDOW[1])
    guess = (12.0, float(r[window][np.argmax(neighbours[window])]), 0.08)
    (area, centre, sigma), _ = curve_fit(_gaussian, r[window], neighbours[window], p0=guess)
    sigma = abs(sigma)
    bond_sigma = float(np.sqrt(max(sigma**2 - smearing**2, 0.0)))
    return {
        "cn": float(np.trapezoid(neighbours[inside], r[inside])),
        "position": float(centre),
        "sigma_fit": float(sigma),
        "sigma": bond_sigma,
        "gaussian_area": float(area),
    }


def md_first_peak(structures: Path, system: str, shell_edge: float, smearing: float) -> dict:
    """The first peak of the mean g(r) over every atom and snapshot of one MD system, and the
    first-shell sigma^2 from the snapshots' pair distances."""
    labels = read_labels(structures / system / "labels.npz")
    snapshots = ase.io.read(structures / system / "snapshots.extxyz", index=":")
    density = float(np.mean([len(atoms) / atoms.get_volume() for atoms in snapshots]))
    peak = first_peak(labels["r"], labels["rdf"].mean(axis=0), density, shell_edge, smearing)
    distances = np.concatenate([neighbor_list("d", atoms, shell_edge) for atoms in snapshots])
    peak["sigma2_direct"] = float(distances.var())
    peak["mean_distance"] = float(distances.mean())
    peak["density"] = density
    peak["r"], peak["g"] = labels["r"], labels["rdf"].mean(axis=0)
    return peak


def read_predicted_curves(path: Path) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(foil file name, model) -> r, predicted g and its 90 % band, from predictions_rdf.csv."""
    columns = defaultdict(lambda: defaultdict(list))
    with open(path) as handle:
        for row in csv.DictReader(handle):
            if row["target"] != "rdf" or Path(row["spectrum"]).name not in FOILS:
                continue
            curve = columns[(Path(row["spectrum"]).name, row["model"])]
            for key, column in (
                ("r", "r_angstrom"),
                ("g", "predicted_g"),
                ("low", "low_90"),
                ("high", "high_90"),
            ):
                curve[key].append(float(column and row[column] or "nan"))
    return {key: {name: np.array(values) for name, values in curve.items()} for key, curve in columns.items()}


def read_predicted_numbers(path: Path) -> dict[tuple[str, str], dict]:
    with open(path) as handle:
        return {(Path(row["spectrum"]).name, row["model"]): row for row in csv.DictReader(handle)}


def check_config_temperatures(config: dict) -> dict[str, tuple[float, float]]:
    """system -> (nominal, T_eff) for the bulk ladder; raises if T_eff is not the Debye mapping."""
    ladder = {}
    for system, spec in config["systems"].items():
        nominal = nominal_temperature(system)
        if nominal is None:
            continue
        expected = effective_temperature(nominal)
        if abs(spec["temperature"] - expected) > 0.5:
            raise SystemExit(
                f"{system}: temperature {spec['temperature']} K, but T_eff({nominal:g} K) = {expected:.1f} K"
            )
        ladder[system] = (nominal, float(spec["temperature"]))
    return dict(sorted(ladder.items(), key=lambda item: item[1][0]))


def _print_md(ladder: dict, md: dict) -> None:
    print("MD ladder (classical MD at T_eff; sigma from the label g(r), smearing removed):")
    print(
        "| nominal T, K | T_eff, K | R, A | sigma, A | sigma^2 from pairs, A^2 "
        "| Debye sigma^2 at T, A^2 | CN |"
    )
    print("|---|---|---|---|---|---|---|")
    for system, (nominal, effective) in ladder.items():
        peak = md[system]
        print(
            f"| {nominal:g} | {effective:.1f} | {peak['position']:.4f} | {peak['sigma']:.4f} | "
            f"{peak['sigma2_direct']:.5f} | {correlated_debye_sigma2(nominal):.5f} | {peak['cn']:.2f} |"
        )


def _foil_rows(ladder, md, curves, numbers, shell_edge, smearing) -> list[dict]:
    by_nominal = {nominal: system for system, (nominal, _) in ladder.items()}
    rows = []
    for (foil, model), curve in sorted(curves.items(), key=lambda item: (item[0][1], FOILS[item[0][0]])):
        nominal = FOILS[foil]
        reference = md[by_nominal[nominal]]
        peak = first_peak(curve["r"], curve["g"], reference["density"], shell_edge, smearing)
        inside = curve["r"] <= shell_edge
        radial = 4 * np.pi * curve["r"][inside] ** 2 * reference["density"]
        number = numbers[(foil, model)]
        rows.append(
            {
                "foil": foil,
                "model": model,
                "nominal": nominal,
                "md_system": by_nominal[nominal],
                "predicted": peak,
                "md": reference,
                "cn_envelope": tuple(
                    float(np.trapezoid(radial * curve[side][inside], curve["r"][inside]))
                    for side in ("low", "high")
                ),
                "shell_cn": float(number["predicted_shell_cn_1"]),
                # empty where the model has no calibrated interval
                "shell_cn_90": tuple(
                    float(number[f"shell_cn_1_{side}_90"] or "nan") for side in ("low", "high")
                ),
                "ood": number["out_of_distribution"],
                "r": curve["r"],
                "g": curve["g"],
            }
        )
    return rows


def _print_foils(rows: list[dict]) -> None:
    print("\nMeasured foils (predicted from the foil | MD at the same nominal temperature):")
    print(
        "| model | foil | T, K | R pred / MD, A | sigma pred / MD, A | ratio | sigma_fit pred / MD, A "
        "| CN (RDF area) pred [90 % envelope] / MD | shell_cn_1 [90 %] | out of distribution |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        predicted, reference = row["predicted"], row["md"]
        low, high = row["cn_envelope"]
        print(
            f"| {row['model']} | {row['foil']} | {row['nominal']:g} | {predicted['position']:.3f} / "
            f"{reference['position']:.3f} | {predicted['sigma']:.4f} / {reference['sigma']:.4f} | "
            f"{predicted['sigma'] / reference['sigma']:.2f} | "
            f"{predicted['sigma_fit']:.4f} / {reference['sigma_fit']:.4f} | "
            f"{predicted['cn']:.2f} [{low:.2f}, {high:.2f}] / {reference['cn']:.2f} | {row['shell_cn']:.2f} "
            f"[{row['shell_cn_90'][0]:.2f}, {row['shell_cn_90'][1]:.2f}] | {row['ood']} |"
        )


def _print_bar(rows: list[dict]) -> None:
    print("\nBar: sigma rises 10 K -> RT, within 20 % of MD at each T, CN (RDF area) within +-1 of 12")
    for model in sorted({row["model"] for row in rows}):
        mine = [row for row in rows if row["model"] == model]
        sigmas = [row["predicted"]["sigma"] for row in mine]
        rising = bool(np.all(np.diff(sigmas) > 0))
        ratios = [row["predicted"]["sigma"] / row["md"]["sigma"] - 1 for row in mine]
        cn_errors = [row["predicted"]["cn"] - 12.0 for row in mine]
        width_ok = max(abs(value) for value in ratios) <= WIDTH_TOLERANCE
        cn_ok = max(abs(value) for value in cn_errors) <= CN_TOLERANCE
        print(
            f"  {model}: monotonic {'yes' if rising else 'NO'}; largest width deviation "
            f"{max(ratios, key=abs):+.1%} ({'ok' if width_ok else 'MISSED'}); largest CN error "
            f"{max(cn_errors, key=abs):+.2f} ({'ok' if cn_ok else 'MISSED'}); "
            f"bar {'met' if rising and width_ok and cn_ok else 'missed'}"
        )


def plot(ladder: dict, md: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({row["model"] for row in rows})
    figure, axes = plt.subplots(1, 1 + len(models), figsize=(5 * (1 + len(models)), 4.2))
    nominal = np.array([value[0] for value in ladder.values()])
    axes[0].plot(nominal, [md[system]["sigma"] for system in ladder], "k-o", label="MD at T_eff (label g(r))")
    axes[0].plot(
        nominal, [np.sqrt(md[system]["sigma2_direct"]) for system in ladder], "k:", label="MD, pair distances"
    )
    grid = np.linspace(5, max(nominal), 60)
    axes[0].plot(
        grid, [np.sqrt(correlated_debye_sigma2(t)) for t in grid], "g--", label="correlated Debye, 315 K"
    )
    for marker, model in zip("sD^v", models, strict=False):
        mine = [row for row in rows if row["model"] == model]
        axes[0].plot(
            [row["nominal"] for row in mine],
            [row["predicted"]["sigma"] for row in mine],
            marker,
            ms=8,
            label=f"{model}, measured foils",
        )
    axes[0].set(
        xlabel="nominal temperature, K", ylabel="first-shell sigma, Angstrom", title="first-shell width"
    )
    axes[0].legend(fontsize=8)
    colours = plt.cm.coolwarm(np.linspace(0, 1, len(FOILS)))
    for axis, model in zip(axes[1:], models, strict=True):
        for colour, row in zip(colours, [row for row in rows if row["model"] == model], strict=False):
            density = row["md"]["density"]
            axis.plot(
                row["r"],
                4 * np.pi * row["r"] ** 2 * density * row["g"],
                color=colour,
                label=f"{row['foil']} ({row['nominal']:g} K)",
            )
            reference = row["md"]
            axis.plot(
                reference["r"],
                4 * np.pi * reference["r"] ** 2 * density * reference["g"],
                "--",
                color=colour,
                lw=1,
            )
        axis.set(
            xlabel="r, Angstrom",
            ylabel="4 pi r^2 rho g(r), 1/Angstrom",
            title=f"{model}: predicted (solid), MD (dashed)",
        )
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    results = args.results or ROOT / config["results_dir"]
    shell_edge = float(config["labels"]["shell_edges"][0])
    smearing = float(config["labels"]["rdf_sigma"])
    ladder = check_config_temperatures(config)
    md = {system: md_first_peak(results / "structures", system, shell_edge, smearing) for system in ladder}
    _print_md(ladder, md)
    curves = read_predicted_curves(results / "inference" / "predictions_rdf.csv")
    numbers = read_predicted_numbers(results / "inference" / "predictions.csv")
    rows = _foil_rows(ladder, md, curves, numbers, shell_edge, smearing)
    _print_foils(rows)
    _print_bar(rows)
    plot_path = args.plot or results / "temperature_series.png"
    plot(ladder, md, rows, plot_path)
    print(f"\nplot: {plot_path}")


if __name__ == "__main__":
    main()
