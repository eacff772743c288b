"""How many absorbing sites, and spectrum batches (Snakemake jobs), each system gets.

Snakemake plans the batches before any job runs, from the validated config alone: for a static
crystal sampled by symmetry, the ideal lattice is built here to count its inequivalent absorbers.
"""

from __future__ import annotations

from xasflow.config import batch_size, sampling_strategy
from xasflow.structures.pipeline import initial_structure
from xasflow.study import system_spec


def sites_for(config: dict, system: str) -> int:
    """Number of absorbing sites requested for ``system`` of a validated ``config``.

    ``inequivalent``: the symmetry-inequivalent absorbers of the ideal lattice (``n_sites`` is
    ignored); otherwise the system's ``n_sites``, or ``sampling.sites_per_system``.
    """
    spec = config["systems"][system]
    if sampling_strategy(config, system) == "inequivalent":
        # pymatgen (behind the symmetry module) takes seconds to import; only crystals need it
        from xasflow.structures.symmetry import inequivalent_sites

        atoms = initial_structure(system_spec(system, spec))
        return len(inequivalent_sites(atoms, element=config["absorber"]))
    if "n_sites" in spec:
        return int(spec["n_sites"])
    return int(config["sampling"]["sites_per_system"])


def batches_for(config: dict, system: str) -> int:
    """Number of spectrum batches (Snakemake jobs) for ``system``."""
    return -(-sites_for(config, system) // batch_size(config))
