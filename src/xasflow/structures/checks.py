"""Checks of a study that need more than its configuration: built structures and installed files.

``xasflow.config.validate_config`` checks what the configuration says; ``check_study`` then
checks what it implies, before any job runs: that every potential file exists, and that each
system has enough absorbing atoms for the sites it asks for (asking for more would leave
Snakemake waiting for spectrum batches that no manifest fills). Building the starting
structures takes well under a second for the shipped studies.
"""

from __future__ import annotations

from xasflow.config import ConfigError, sampling_strategy
from xasflow.structures.lammps_runner import potentials_dir, resolve_potential
from xasflow.structures.pipeline import initial_structure
from xasflow.structures.plan import sites_for
from xasflow.study import system_spec


def check_study(config: dict, source: str = "config") -> None:
    """Raise ``ConfigError`` (naming ``source`` and the key) for the first problem found.

    ``config`` is the output of ``validate_config``; relative potential paths are taken from
    the current directory, as the MD step (run in the same directory by Snakemake) takes them.
    """
    for name in config["systems"]:
        _check_potential_file(config, name, source)
        _check_site_count(config, name, source)


def _check_potential_file(config: dict, system: str, source: str) -> None:
    potential = config["systems"][system].get("potential")  # crystals have none
    if potential is None or "file" not in potential:  # or it is generated (zhou2004)
        return
    try:
        resolve_potential(potential["file"])
    except FileNotFoundError:
        raise ConfigError.for_key(
            source,
            f"systems.{system}.potential.file",
            f"'{potential['file']}' is neither a file nor one of the potentials shipped with LAMMPS "
            f"({potentials_dir()})",
        ) from None


def _absorbers_and_frames(config: dict, system: str) -> tuple[int, int]:
    """The absorbing atoms of the starting structure of ``system`` (MD and MC swaps keep the
    composition) and the frames the site sampling draws them from (one for a static crystal)."""
    spec = config["systems"][system]
    absorbers = initial_structure(system_spec(system, spec)).get_chemical_symbols().count(config["absorber"])
    frames = 1 if spec["kind"] == "crystal" else spec["md"]["n_snapshots"]
    return absorbers, frames


def _check_site_count(config: dict, system: str, source: str) -> None:
    if sampling_strategy(config, system) == "inequivalent":
        return  # one site per inequivalent absorber, never more than there are
    requested = sites_for(config, system)
    absorbers, frames = _absorbers_and_frames(config, system)
    if requested > absorbers * frames:
        key = (
            f"systems.{system}.n_sites"
            if "n_sites" in config["systems"][system]
            else "sampling.sites_per_system"
        )
        raise ConfigError.for_key(
            source,
            key,
            f"({requested}) asks for more sites than system '{system}' has: {absorbers} "
            f"{config['absorber']} atoms in {frames} frame(s), at most {absorbers * frames} distinct sites",
        )
