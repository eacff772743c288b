"""Command line: one subcommand per workflow rule. Logging is configured here and only here.

Configuration reaches a subcommand either as ``--config FILE`` (validated in full) or, from the
Snakemake rules, as ``--config-json`` holding only the already validated sections the step needs
(so that Snakemake reruns a step exactly when those sections change).

Errors a user can cause print one line on stderr and exit with code 2. `xasflow predict` over a
folder (or with --keep-going) exits with code 1 when it refused some spectra and predicted the rest.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from xasflow import __version__
from xasflow.config import ConfigError, load_config, validate_sections
from xasflow.errors import UserError

logger = logging.getLogger("xasflow")


def _config(args: argparse.Namespace) -> dict:
    if getattr(args, "config", None):
        return load_config(args.config)
    if getattr(args, "config_json", None):
        try:
            sections = json.loads(args.config_json)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--config-json is not valid JSON ({error})") from error
        return validate_sections(sections)
    raise ConfigError("give --config FILE (or --config-json from the workflow)")


def _add_config(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", help="study configuration YAML (validated)")
    group.add_argument("--config-json", help="validated config sections as JSON (used by the workflow)")


def cmd_validate(args: argparse.Namespace) -> int:
    from xasflow.structures.checks import check_study

    config = load_config(args.config)
    check_study(config, source=args.config)
    print(f"{args.config}: valid ({len(config['systems'])} systems)")
    return 0


def cmd_md(args: argparse.Namespace) -> int:
    from xasflow.structures.pipeline import simulate_system

    config = _config(args)
    simulate_system(_system(config, args.system), args.out_dir)
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    from xasflow.structures.labels import LabelParams
    from xasflow.structures.pipeline import label_system, lammps_potential

    config = _config(args)
    spec = _system(config, args.system)
    # the MD potential relaxes each snapshot before common neighbour analysis
    potential = lammps_potential(spec, Path(args.out).parent)
    label_system(
        args.snapshots,
        spec,
        LabelParams.from_config(config["labels"]),
        args.out,
        initial_path=args.initial,
        potential=potential,
    )
    return 0


def cmd_sites(args: argparse.Namespace) -> int:
    from xasflow.config import batch_size
    from xasflow.structures.io import read_labels, read_snapshots
    from xasflow.structures.sampling import sample_inequivalent_sites, sample_sites, write_manifest
    from xasflow.study import sampling_spec, site_sampling

    config = _config(args)
    sampling = site_sampling(_system(config, args.system), sampling_spec(config["sampling"]))
    labels = read_labels(args.labels)
    if sampling.strategy == "inequivalent":
        choices = sample_inequivalent_sites(
            read_snapshots(args.snapshots)[0], labels, args.system, config["absorber"], batch_size(config)
        )
    else:
        choices = sample_sites(
            labels,
            system=args.system,
            absorber=config["absorber"],
            n_sites=sampling.n_sites,
            strategy=sampling.strategy,
            seed=sampling.seed,
            batch_size=batch_size(config),
            stratify_by=sampling.stratify_by,
        )
    write_manifest(choices, args.out)
    logger.info("%s: %d sites in %d batches", args.system, len(choices), choices[-1].batch + 1)
    return 0


def cmd_spectra_run(args: argparse.Namespace) -> int:
    from xasflow.spectra.batch import run_batch
    from xasflow.spectra.cache import SpectrumCache
    from xasflow.spectra.engines import build_engine

    config = _config(args)
    spectra = config["spectra"]
    engine = build_engine(spectra)
    cache = SpectrumCache(args.cache_dir) if args.cache_dir else None
    counts = run_batch(
        args.manifest, args.snapshots, args.batch, engine, args.out_dir, cache, spectra["cluster_radius"]
    )
    logger.info("batch %s: %s", args.out_dir, counts)
    return 0


def _engine_for(config: dict, system: str | None):
    from xasflow.spectra.engines import build_engine

    override = config["systems"].get(system, {}).get("engine") if system else None  # optional key
    return build_engine(config["spectra"], override)


def cmd_spectra_generate(args: argparse.Namespace) -> int:
    from xasflow.spectra.feff import cut_cluster
    from xasflow.structures.io import read_snapshots

    config = _config(args)
    frames = read_snapshots(args.structure)
    if not 0 <= args.frame < len(frames):
        raise UserError(f"{args.structure}: frame {args.frame} does not exist ({len(frames)} frames)")
    atoms = frames[args.frame]
    if not 0 <= args.absorber_index < len(atoms):
        raise UserError(
            f"{args.structure}: absorber index {args.absorber_index} is not in 0..{len(atoms) - 1}"
        )
    cluster = cut_cluster(atoms, args.absorber_index, config["spectra"]["cluster_radius"])
    engine = _engine_for(config, args.system)
    title = f"{Path(args.structure).name} frame {args.frame} site {args.absorber_index}"
    path = engine.write_inputs(cluster, Path(args.out_dir), title)
    print(path)
    return 0


def cmd_spectra_parse(args: argparse.Namespace) -> int:
    import numpy as np

    config = _config(args)
    energy, mu = _engine_for(config, args.system).read_spectrum(Path(args.directory))
    from xasflow.fileio import atomic_open

    with atomic_open(args.out) as handle:
        np.savetxt(handle, np.column_stack([energy, mu]), delimiter=",", header="energy_eV,mu", comments="")
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    from xasflow.dataset.assemble import assemble

    config = _config(args)
    labels = dict(_pairs(args.labels, "--labels"))
    md = dict(_pairs(args.md, "--md"))
    summary = assemble(
        args.manifests, args.batches, labels, md, config, args.out, args.failures, args.summary
    )
    print(
        f"spectra requested {summary['requested']}, succeeded {summary['succeeded']}, "
        f"failed {summary['failed']}",
        file=sys.stderr,
    )
    return 0


def _train_inputs(args: argparse.Namespace):
    """The TrainParams, augmentation and calibration of ``--model`` in the config."""
    from xasflow.models import TrainParams
    from xasflow.models.augment import AugmentationParams

    config = _config(args)
    training = config["training"]
    pseudo = config["inference"].get("pseudo_experiment")  # optional: no default
    held_out = pseudo["system"] if pseudo else None
    if args.model not in training["models"]:
        raise ConfigError(
            f"training.models has no model {args.model!r}; valid: {', '.join(training['models'])}"
        )
    model = dict(training["models"][args.model])
    model.setdefault("targets", training.get("targets") or [])  # the study's targets by default
    params = TrainParams.from_dict(
        {
            **model,
            "val_systems": tuple(training["val_systems"]),
            "test_systems": tuple(training["test_systems"]),
            "exclude_systems": (held_out,) if held_out else (),
        }
    )
    augmentation = AugmentationParams(**training["augmentation"])
    calibration = None
    if args.calibration:
        try:
            calibration = json.loads(Path(args.calibration).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{args.calibration}: not a readable calibration record ({error})") from error
    return params, augmentation, calibration


def cmd_train(args: argparse.Namespace) -> int:
    from xasflow.models import train_model

    params, augmentation, calibration = _train_inputs(args)
    metrics = train_model(args.dataset, params, args.out_dir, augmentation, calibration)
    logger.info("%s: winners per target %s", args.model, json.dumps(metrics["winners"]))
    return 0


def cmd_windows(args: argparse.Namespace) -> int:
    from xasflow.models.windows import parse_windows, window_study

    params, augmentation, calibration = _train_inputs(args)
    windows = parse_windows(args.window)
    rows = window_study(args.dataset, params, windows, args.out_dir, augmentation, calibration)
    for row in rows:
        if row["model"] == "network" and row["skill"] is not None:
            print(f"{row['window']:12s} {row['target']:24s} skill {row['skill']:.3f}")
    return 0


def cmd_crossval(args: argparse.Namespace) -> int:
    from xasflow.models.crossval import LEVELS, cross_validate, level_name

    params, augmentation, calibration = _train_inputs(args)
    summary = cross_validate(args.dataset, params, args.out_dir, augmentation, calibration, args.nested)
    for name, entry in summary["targets"].items():
        metric = {"classification": "accuracy", "probability": "brier"}.get(entry["kind"], "mae")
        network = entry["models"].get("network", {}).get(metric)
        line = f"{name:24s} network {metric} {'n/a' if network is None else f'{network:.4g}'}"
        best = entry.get("best_baseline")
        if best:
            line += f", best baseline {best} {entry['models'][best][metric]:.4g}"
        if "coverage" in entry:
            overall = entry["coverage"]["cross_system"]["overall"]
            line += ", cross-system coverage " + "/".join(
                "n/a" if overall[level_name(level)] is None else f"{100 * overall[level_name(level)]:.1f}"
                for level in LEVELS
            )
        print(line)
    return 0


def cmd_pseudo(args: argparse.Namespace) -> int:
    from xasflow.dataset.schema import open_dataset
    from xasflow.inference.pseudo import PseudoExperimentParams, write_pseudo_experiment

    config = _config(args)
    params = PseudoExperimentParams(**config["inference"]["pseudo_experiment"])
    calibration = None
    if args.calibration:
        from xasflow.experiment.fidelity import CalibrationTransform

        calibration = CalibrationTransform.from_dict(
            json.loads(Path(args.calibration).read_text())["transform"]
        )
    write_pseudo_experiment(open_dataset(args.dataset), params, args.spectrum, args.truth, calibration)
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from xasflow.inference.fidelity import run_fidelity
    from xasflow.spectra.cache import SpectrumCache

    config = _config(args)
    if not config["references"]:
        raise ConfigError("the configuration lists no references (config key 'references')")
    cache = SpectrumCache(args.cache_dir) if args.cache_dir else None
    results = run_fidelity(config, args.out_dir, cache, args.reference or None)
    for result in results:
        print(
            f"{result.name}: Pearson r {result.raw.pearson_r:.4f} raw, {result.calibrated.pearson_r:.4f} "
            f"calibrated; RMSE {result.raw.rmse:.4f} -> {result.calibrated.rmse:.4f}",
            file=sys.stderr,
        )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from xasflow.experiment.calibration import Preparation
    from xasflow.inference.run import predict_files

    preparation = Preparation.from_options(args.calibrate_reference, args.reference_foil, args.merge)
    if args.keep_going or any(Path(path).is_dir() for path in args.spectra):
        if preparation != Preparation():
            raise UserError(
                "--calibrate-reference, --reference-foil and --merge apply to named files, not to a batch "
                "(a folder or --keep-going): name the files of one sample"
            )
        return _predict_batch(args)
    predict_files(
        args.checkpoint,
        args.spectra,
        args.out,
        truth_paths=args.truth or [],
        rdf_path=args.rdf_out,
        preparation=preparation,
        figure_dir=args.spectrum_figures,
    )
    if args.figure:
        from xasflow.inference.figures import plot_predictions

        plot_predictions(args.out, args.figure)
    return 0


def _predict_batch(args: argparse.Namespace) -> int:
    """`xasflow predict` over folders (or with --keep-going): refused spectra are listed in
    <out stem>_refused.csv and make the exit code 1."""
    from xasflow.experiment.folders import expand_spectrum_arguments
    from xasflow.inference.batch import predict_batch, refused_table_path
    from xasflow.inference.run import rdf_table_path

    refused = refused_table_path(args.out)
    written = [args.out, args.rdf_out or rdf_table_path(args.out), refused, args.figure]
    references = expand_spectrum_arguments(args.spectra, exclude=[path for path in written if path])
    result = predict_batch(
        args.checkpoint,
        references,
        args.out,
        truth_paths=args.truth or [],
        rdf_path=args.rdf_out,
        figure_dir=args.spectrum_figures,
    )
    if args.figure:
        from xasflow.inference.figures import plot_predictions

        plot_predictions(args.out, args.figure)
    if result.refusals:
        logger.error(
            "%d predictions written to %s; %d refused, listed in %s (exit code 1)",
            len(result.rows),
            args.out,
            len(result.refusals),
            refused,
        )
        return 1
    return 0


def _named_checkpoints(values: list[str]) -> dict[str, str]:
    pairs = []
    for value in values:
        name, separator, path = value.partition("=")
        if not separator or not name:
            raise UserError(
                f"--checkpoint expects NAME=PATH (e.g. mlp=results/models/mlp/model.ckpt), got '{value}'"
            )
        pairs.append((name, path))
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(
            f"--checkpoint names {', '.join(repeated)} more than once; give each model its own name"
        )
    return dict(pairs)


def _deconvolution_weight(args: argparse.Namespace):
    """The surface weight of a measured particle: given, or the dispersion of a closed-shell cluster."""
    from xasflow.inference.deconvolution import SurfaceWeight, closed_shell_surface_weight

    if args.surface_weight is not None:
        weight = SurfaceWeight(args.surface_weight, args.weight_sigma, "given (--surface-weight)")
    else:
        dispersion = closed_shell_surface_weight(args.particle_atoms)
        weight = SurfaceWeight(dispersion.value, args.weight_sigma, dispersion.source)
    return weight


def _calibration_transform(path: str | None):
    """The transform of a calibration record written by ``xasflow fidelity``; None without one."""
    if not path:
        return None
    from xasflow.experiment.fidelity import CalibrationTransform

    try:
        return CalibrationTransform.from_dict(json.loads(Path(path).read_text())["transform"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a readable calibration record ({error!r})") from error


def _deconvolve_particles(args: argparse.Namespace, checkpoints: dict, params, calibration) -> dict:
    from xasflow.inference.deconvolution_run import deconvolve_simulated

    if args.surface_weight is not None or args.particle_atoms is not None:
        raise UserError(
            "--surface-weight and --particle-atoms are for --spectrum; a simulated particle's weight "
            "comes from its --labels"
        )
    labels = dict(_pairs(args.labels or [], "--labels"))
    missing = [system for system in args.particle_system if system not in labels]
    if missing:
        raise UserError(f"--labels SYSTEM=labels.npz is missing for {', '.join(missing)}")
    particles = {system: labels[system] for system in args.particle_system}
    return deconvolve_simulated(
        args.dataset,
        args.bulk_system,
        particles,
        checkpoints,
        args.out_dir,
        params,
        calibration,
        held_out=args.held_out,
    )


def _deconvolve_spectrum(args: argparse.Namespace, checkpoints: dict, params, calibration) -> dict:
    from xasflow.inference.deconvolution_run import deconvolve_measured

    if (args.surface_weight is None) == (args.particle_atoms is None):
        raise UserError(f"{args.spectrum}: give either --surface-weight W or --particle-atoms N")
    return deconvolve_measured(
        args.dataset,
        args.bulk_system,
        args.spectrum,
        _deconvolution_weight(args),
        checkpoints,
        args.out_dir,
        params,
        args.noise,
        calibration,
    )


def cmd_deconvolve(args: argparse.Namespace) -> int:
    from xasflow.inference.deconvolution_run import DeconvolutionParams

    given = {key: getattr(args, key) for key in ("draws", "seed") if getattr(args, key) is not None}
    if given.get("draws", 0) < 0:
        raise UserError(f"--draws {args.draws}: give 0 (no Monte Carlo) or more draws")
    checkpoints = _named_checkpoints(args.checkpoint)
    params = DeconvolutionParams(**given)
    calibration = _calibration_transform(args.calibration)
    if args.particle_system:
        summary = _deconvolve_particles(args, checkpoints, params, calibration)
    else:
        summary = _deconvolve_spectrum(args, checkpoints, params, calibration)
    for row in summary["rows"]:
        print(
            f"{row['particle']:24s} {row['model']:10s} {row['target']:22s} surface "
            f"{row['surface_predicted']:.2f} +- {row['surface_mc_std']:.2f} "
            f"(true {row['surface_true']:.2f}), "
            f"bulk {row['bulk_predicted']:.2f} (true {row['bulk_true']:.2f}), RMSE of S {row['rmse_mu']:.4f}"
        )
    for entry in summary["skipped"]:
        print(f"not deconvolved: {entry['reason']}")
    return 0


def _named_references(values: list[str]) -> dict[str, str]:
    """NAME=FILE (or FILE, named by its stem) of each --reference."""
    references: dict[str, str] = {}
    for value in values:
        name, separator, path = value.partition("=")
        if not separator:
            name, path = Path(value).stem, value
        if not name or not path or name in references:
            raise UserError(f"--reference '{value}': give NAME=FILE with a name used once (e.g. FeO=feo.xdi)")
        references[name] = path
    return references


def _stack_energy(args: argparse.Namespace):
    if args.energy_file:
        return Path(args.energy_file)
    return args.energy_dataset


def _network_settings(text: str | None) -> dict:
    """--network-settings JSON: the network denoiser's settings (imaging.network of a config)."""
    if not text:
        return {}
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--network-settings is not valid JSON ({error})") from error
    if not isinstance(settings, dict):
        raise ConfigError("--network-settings must be a JSON object of denoiser settings")
    return settings


def cmd_image(args: argparse.Namespace) -> int:
    from xasflow.inference.imaging import ImagingParams
    from xasflow.inference.imaging_fit import PcaRule
    from xasflow.inference.imaging_run import run_imaging

    components = args.pca_components
    params = ImagingParams(
        tile_size=args.tile,
        min_edge_step=args.min_edge_step,
        denoise=args.denoise,
        pca=PcaRule(int(components) if components.isdigit() else components),
        workers=args.workers,
        enrichment_threshold=args.threshold,
        network_train_size=args.network_train_size,
        denoise_config=_network_settings(args.network_settings),
    )
    options = {"flatten": args.flatten}
    if args.pre_edge:
        options["pre_edge_range"] = tuple(args.pre_edge)
    if args.norm_range:
        options["norm_range"] = tuple(args.norm_range)
    summary = run_imaging(
        args.stack,
        _named_references(args.reference),
        args.out_dir,
        params,
        dataset=args.dataset,
        energy=_stack_energy(args),
        e0=args.e0,
        normalization_options=options,
        region_labels=args.regions,
        models=args.model or (),
    )
    for region in summary["regions"]:
        shares = ", ".join(
            f"{name} {values['mean_fraction']:.2f} "
            f"(P>{args.threshold:g}: {values['enrichment_probability']:.2f})"
            for name, values in region.items()
            if isinstance(values, dict)
        )
        print(f"region {region['label']} ({region['n_pixels']} px): {shares}")
    for row in summary["model_regions"]:
        print(
            f"region {row['label']} {row['quantity']} ({row['spectra']}): {row['mean']:.3g} "
            f"(90 % width {row['mean_interval_90']:.3g}, {row['n_predicted']}/{row['n_pixels']} px, "
            f"out of distribution {row['out_of_distribution_share']:.2f})"
        )
    print(f"maps: {summary['maps']}")
    return 0


def _system(config: dict, system: str):
    from xasflow.study import system_spec

    try:
        entry = config["systems"][system]
    except KeyError:
        raise ConfigError(f"system '{system}' is not in the configuration") from None
    return system_spec(system, entry)


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, separator, path = value.partition("=")
        if not separator:
            raise UserError(f"{option} expects SYSTEM=PATH, got '{value}'")
        pairs.append((name, path))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xasflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"xasflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate-config", help="check a study configuration")
    validate.add_argument("config")
    validate.set_defaults(handler=cmd_validate)

    structures = commands.add_parser("structures", help="MD, labels and site sampling").add_subparsers(
        dest="step", required=True
    )
    md = structures.add_parser("md", help="run the MD of one system and write its snapshots")
    _add_config(md)
    md.add_argument("--system", required=True)
    md.add_argument("--out-dir", required=True)
    md.set_defaults(handler=cmd_md)
    labels = structures.add_parser("labels", help="per-site labels of every snapshot")
    _add_config(labels)
    labels.add_argument("--system", required=True)
    labels.add_argument("--snapshots", required=True)
    labels.add_argument("--out", required=True, help="labels .npz; a summary .json is written beside it")
    labels.add_argument("--initial", help="structure before MD (the random-alloy reference), extxyz")
    labels.set_defaults(handler=cmd_labels)
    sites = structures.add_parser("sites", help="choose absorbing sites (site manifest CSV)")
    _add_config(sites)
    sites.add_argument("--system", required=True)
    sites.add_argument("--labels", required=True)
    sites.add_argument("--snapshots", required=True, help="needed by the inequivalent strategy")
    sites.add_argument("--out", required=True)
    sites.set_defaults(handler=cmd_sites)

    spectra = commands.add_parser("spectra", help="spectrum calculations").add_subparsers(
        dest="step", required=True
    )
    run = spectra.add_parser("run", help="compute one batch of sites with FEFF10")
    _add_config(run)
    run.add_argument("--manifest", required=True)
    run.add_argument("--snapshots", required=True)
    run.add_argument("--batch", type=int, required=True)
    run.add_argument("--out-dir", required=True)
    run.add_argument("--cache-dir", help="content-addressed cache of computed spectra (shared by jobs)")
    run.set_defaults(handler=cmd_spectra_run)

    generate = spectra.add_parser("generate", help="write the engine's input files for one site")
    _add_config(generate)
    generate.add_argument("--structure", required=True, help="structure file ASE reads (extxyz, cif, ...)")
    generate.add_argument("--frame", type=int, default=0)
    generate.add_argument("--absorber-index", type=int, required=True)
    generate.add_argument("--system", help="take this system's engine choice from the config")
    generate.add_argument("--out-dir", required=True)
    generate.set_defaults(handler=cmd_spectra_generate)
    parse = spectra.add_parser("parse", help="read a finished calculation's spectrum into CSV")
    _add_config(parse)
    parse.add_argument("directory", help="calculation directory (holding xmu.dat or FDMNES output)")
    parse.add_argument("--system", help="take this system's engine choice from the config")
    parse.add_argument("--out", required=True, help="CSV with energy_eV,mu")
    parse.set_defaults(handler=cmd_spectra_parse)

    dataset = commands.add_parser("dataset", help="assemble batches into the zarr dataset")
    _add_config(dataset)
    dataset.add_argument("--manifests", nargs="+", required=True)
    dataset.add_argument("--batches", nargs="+", required=True)
    dataset.add_argument("--labels", nargs="+", required=True, help="SYSTEM=labels.npz")
    dataset.add_argument("--md", nargs="+", required=True, help="SYSTEM=md.json")
    dataset.add_argument("--out", required=True)
    dataset.add_argument("--failures", required=True)
    dataset.add_argument("--summary", required=True)
    dataset.set_defaults(handler=cmd_dataset)

    train = commands.add_parser("train", help="train one model on the dataset")
    _add_config(train)
    train.add_argument("--model", required=True, help="a name under training.models")
    train.add_argument("--dataset", required=True)
    train.add_argument("--out-dir", required=True)
    train.add_argument(
        "--calibration", help="calibration.json from `xasflow fidelity`: applied to simulated spectra"
    )
    train.set_defaults(handler=cmd_train)

    windows = commands.add_parser(
        "windows", help="retrain one model on energy windows: which region carries which target"
    )
    _add_config(windows)
    windows.add_argument("--model", required=True, help="a name under training.models")
    windows.add_argument("--dataset", required=True)
    windows.add_argument("--out-dir", required=True)
    windows.add_argument(
        "--window",
        action="append",
        help="NAME:LOW:HIGH in eV relative to E0 (repeatable); default pre-edge, edge, white line, "
        "post-edge, EXAFS onset and the whole grid",
    )
    windows.add_argument("--calibration", help="calibration.json from `xasflow fidelity`")
    windows.set_defaults(handler=cmd_windows)

    crossval = commands.add_parser(
        "crossval",
        help="leave-one-system-out: pooled metrics of the model and every baseline, and intervals "
        "calibrated across systems",
    )
    _add_config(crossval)
    crossval.add_argument("--model", required=True, help="a name under training.models")
    crossval.add_argument("--dataset", required=True)
    crossval.add_argument("--out-dir", required=True)
    crossval.add_argument("--calibration", help="calibration.json from `xasflow fidelity`")
    crossval.add_argument(
        "--nested",
        action="store_true",
        help="calibrate every fold across its own systems too (no shortcut; about N times the cost)",
    )
    crossval.set_defaults(handler=cmd_crossval)

    pseudo = commands.add_parser(
        "pseudo-experiment", help="pseudo-experimental spectrum of a held-out system"
    )
    _add_config(pseudo)
    pseudo.add_argument("--dataset", required=True)
    pseudo.add_argument("--spectrum", required=True)
    pseudo.add_argument("--truth", required=True)
    pseudo.add_argument("--calibration", help="calibration.json: make the simulated average look measured")
    pseudo.set_defaults(handler=cmd_pseudo)

    fidelity = commands.add_parser(
        "fidelity", help="simulate each measured reference of the study and report how alike they are"
    )
    _add_config(fidelity)
    fidelity.add_argument(
        "--out-dir", required=True, help="folder for fidelity.csv/.json, plots, calibration.json"
    )
    fidelity.add_argument("--reference", action="append", help="only this reference (repeatable)")
    fidelity.add_argument("--cache-dir", help="content-addressed cache of computed spectra")
    fidelity.set_defaults(handler=cmd_fidelity)

    predict = commands.add_parser(
        "predict", help="predict structure from measured spectra (XDI, columns or Athena projects)"
    )
    predict.add_argument(
        "spectra",
        nargs="+",
        help="spectrum files; an Athena project (x.prj) gives one row per group, 'x.prj:LABEL' one group; "
        "a FOLDER stands for its spectrum files (.xdi .xmu .mu .dat .txt .csv .prj, not in subfolders) and "
        "makes a batch: refused files are listed in <out stem>_refused.csv, the others predicted, exit "
        "code 1 if any was refused",
    )
    predict.add_argument("--checkpoint", required=True, action="append", help="model checkpoint (repeatable)")
    predict.add_argument("--out", required=True, help="CSV of predictions")
    predict.add_argument("--rdf-out", help="CSV of predicted (and true) g(r) (default: <out stem>_rdf.csv)")
    predict.add_argument(
        "--truth", action="append", help="truth JSON of a pseudo-experiment (adds true values)"
    )
    predict.add_argument(
        "--figure",
        help="PNG of the predictions: per number target, every spectrum and model with its 90 %% interval",
    )
    predict.add_argument(
        "--calibrate-reference",
        metavar="ELEMENT[:EDGE]",
        help="shift each file's energies so that the E0 of the foil in its reference channel "
        "(ln(itrans/irefer), ln(i1/i2)) is the tabulated edge of ELEMENT, e.g. Ag or Au:L3",
    )
    predict.add_argument(
        "--reference-foil",
        metavar="FILE=ELEMENT[:EDGE]",
        help="shift all energies so that the E0 of this foil, measured in its own file "
        "(or 'x.prj:LABEL'), is the tabulated edge of ELEMENT, e.g. cu_foil.xdi=Cu",
    )
    predict.add_argument(
        "--merge",
        action="store_true",
        help="average all given spectra (repeated scans of one sample) into one, after calibration",
    )
    predict.add_argument(
        "--keep-going",
        action="store_true",
        help="refuse unreadable or incompatible spectra into <out stem>_refused.csv and predict the rest, "
        "exit code 1 if any was refused (the default when a FOLDER is given)",
    )
    predict.add_argument(
        "--spectrum-figures",
        metavar="DIR",
        help="one PNG per spectrum in DIR: the model's input beside its 3 nearest training inputs, "
        "the predicted g(r) with 68/90 %% bands (or the number targets)",
    )
    predict.set_defaults(handler=cmd_predict)
    _add_deconvolve(commands)
    _add_image(commands)
    _add_image_validate(commands)
    return parser


def _add_image(commands) -> None:
    image = commands.add_parser(
        "image",
        help="2D XANES imaging: maps of reference fractions (with uncertainties), edge energy and "
        "per-region composition from an energy stack",
    )
    image.add_argument("stack", help="energy stack: HDF5 (.h5), multi-page TIFF (.tif) or zarr group (.zarr)")
    image.add_argument(
        "--reference", required=True, action="append", help="NAME=FILE reference spectrum (repeatable)"
    )
    image.add_argument("--out-dir", required=True, help="folder for maps.zarr, regions.csv, figures/")
    image.add_argument("--dataset", default="stack", help="HDF5 dataset / zarr array of the images (stack)")
    image.add_argument(
        "--energy-dataset", default="energy", help="HDF5 dataset / zarr array of energies (eV)"
    )
    image.add_argument(
        "--energy-file",
        help="text file of energies (eV), one per image (needed for TIFF and bare zarr arrays)",
    )
    image.add_argument("--e0", type=float, help="edge energy, eV (default: from the mean reference)")
    image.add_argument("--pre-edge", type=float, nargs=2, metavar=("PRE1", "PRE2"), help="eV relative to e0")
    image.add_argument(
        "--norm-range", type=float, nargs=2, metavar=("NORM1", "NORM2"), help="eV relative to e0"
    )
    image.add_argument("--flatten", action="store_true", help="flatten the post-edge (Larch flat)")
    image.add_argument("--min-edge-step", type=float, default=0.05, help="mask pixels below this step (0.05)")
    image.add_argument("--denoise", choices=("none", "pca", "network"), default="none")
    image.add_argument(
        "--pca-components", default="references", help="'references' (k+1), 'mle' or a number (references)"
    )
    image.add_argument("--tile", type=int, default=256, help="tile edge in pixels (256)")
    image.add_argument(
        "--network-settings", help="denoise network: its settings as a JSON object (imaging.network)"
    )
    image.add_argument(
        "--network-train-size",
        type=int,
        default=96,
        help="denoise network: train on at most this many pixels square (96), then map every tile",
    )
    image.add_argument("--workers", type=int, default=1, help="tiles processed at once (1)")
    image.add_argument("--regions", help="region labels (.npy or TIFF); default: connected mapped areas")
    image.add_argument(
        "--threshold", type=float, default=0.5, help="enrichment threshold of a fraction (0.5)"
    )
    image.add_argument(
        "--model",
        action="append",
        metavar="CKPT",
        help="trained model checkpoint (repeatable): maps of its number targets with 90 %% "
        "interval widths and out-of-distribution flags, from the raw and denoised pixels",
    )
    image.set_defaults(handler=cmd_image)


def cmd_image_validate(args: argparse.Namespace) -> int:
    from xasflow.inference.imaging import ImagingParams
    from xasflow.inference.imaging_validation import markdown, validate_imaging

    section = _config(args).get("imaging")
    if not section or "validation" not in section:
        raise ConfigError("the config has no imaging.validation section")
    validation = section["validation"]
    first, last, step = validation["energy"]
    if not (last > first and step > 0):
        raise ConfigError(
            f"imaging.validation.energy {validation['energy']} is not [first, last > first, step > 0]"
        )
    params = ImagingParams(
        tile_size=section["tile"],
        min_edge_step=section["min_edge_step"],
        enrichment_threshold=section["threshold"],
        denoise_config=section["network"],
        network_train_size=section["network_train_size"],
    )
    summary = validate_imaging(
        section["references"],
        [first + step * index for index in range(int(round((last - first) / step)) + 1)],
        args.out_dir,
        params,
        validation["size"],
        validation["doses"],
        validation["seeds"],
        validation["methods"],
    )
    print(markdown(summary), end="")
    return 0


def _add_image_validate(commands) -> None:
    validate = commands.add_parser(
        "image-validate",
        help="fraction-map error of the imaging maps on synthetic stacks of the config's imaging "
        "references, per dose and denoising method",
    )
    _add_config(validate)
    validate.add_argument("--out-dir", required=True, help="folder for validation.csv/.json/.md/.png")
    validate.set_defaults(handler=cmd_image_validate)


def _add_deconvolve(commands) -> None:
    deconvolve = commands.add_parser(
        "deconvolve",
        help="surface spectrum of a particle, S = (P - (1-w) B) / w, predicted with every model; for "
        "simulated particles verified against the true surface",
    )
    deconvolve.add_argument("--dataset", required=True, help="the zarr dataset holding the bulk system")
    deconvolve.add_argument("--bulk-system", required=True, help="bulk alloy of the particle's composition")
    source = deconvolve.add_mutually_exclusive_group(required=True)
    source.add_argument("--particle-system", nargs="+", help="simulated particle system(s) of the dataset")
    source.add_argument("--spectrum", help="a measured particle spectrum (XDI or columns)")
    deconvolve.add_argument("--labels", nargs="+", help="SYSTEM=labels.npz of each --particle-system")
    deconvolve.add_argument("--surface-weight", type=float, help="share of absorber atoms at the surface")
    deconvolve.add_argument(
        "--particle-atoms", type=int, help="or: atoms of the particle (closed-shell cuboctahedron dispersion)"
    )
    deconvolve.add_argument("--weight-sigma", type=float, default=0.0, help="1-sigma of the weight (0)")
    deconvolve.add_argument(
        "--noise",
        type=float,
        help="1-sigma noise of the measured spectrum in edge steps (default: estimated)",
    )
    deconvolve.add_argument(
        "--checkpoint", required=True, action="append", help="NAME=model.ckpt (repeatable)"
    )
    deconvolve.add_argument("--out-dir", required=True)
    deconvolve.add_argument("--draws", type=int, help="Monte Carlo surface spectra (default 200)")
    deconvolve.add_argument(
        "--held-out",
        action="store_true",
        help="read each simulated particle a model trained or validated on with the model's "
        "cross-system fold that held it out (models with conformal: cross_system)",
    )
    deconvolve.add_argument("--seed", type=int, help="seed of the Monte Carlo draws (default 0)")
    deconvolve.add_argument(
        "--calibration", help="calibration.json from `xasflow fidelity`: applied to the simulated spectra"
    )
    deconvolve.set_defaults(handler=cmd_deconvolve)


def configure_logging(verbose: bool = False) -> None:
    """Log lines on stderr (Snakemake writes them to the job's log). The level is set on the
    ``xasflow`` logger itself: importing Larch sets the root logger to WARNING, which would
    otherwise silence every progress line of the dataset, training and inference jobs."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return args.handler(args)
    except UserError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"xasflow: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
