"""Symmetry reduction: FEFF runs executed / absorbing sites requested for static crystals
(equals inequivalent / all absorbers).

    .venv/bin/python benchmarks/symmetry.py
"""

from ase.build import bulk
from ase.spacegroup import crystal

from xasflow.structures.symmetry import inequivalent_sites

CRYSTALS = {
    "fcc Cu 3x3x3": (bulk("Cu", "fcc", a=3.615, cubic=True).repeat((3, 3, 3)), "Cu"),
    "bcc Fe 3x3x3": (bulk("Fe", "bcc", a=2.87, cubic=True).repeat((3, 3, 3)), "Fe"),
    "rutile TiO2 2x2x3 (O)": (
        crystal(
            ["Ti", "O"],
            basis=[(0, 0, 0), (0.3, 0.3, 0)],
            spacegroup=136,
            cellpar=[4.6, 4.6, 2.95, 90, 90, 90],
        ).repeat((2, 2, 3)),
        "O",
    ),
    "spinel Fe3O4 (Fe)": (
        crystal(
            ["Fe", "Fe", "O"],
            basis=[(0.125, 0.125, 0.125), (0.5, 0.5, 0.5), (0.2549, 0.2549, 0.2549)],
            spacegroup=227,
            setting=2,
            cellpar=[8.396, 8.396, 8.396, 90, 90, 90],
        ),
        "Fe",
    ),
}


def main() -> None:
    print(f"{'crystal':28s} {'requested':>9s} {'executed':>8s} {'ratio':>7s}")
    for name, (atoms, element) in CRYSTALS.items():
        requested = sum(symbol == element for symbol in atoms.get_chemical_symbols())
        classes = inequivalent_sites(atoms, element=element)
        assert sum(site.multiplicity for site in classes) == requested
        print(f"{name:28s} {requested:9d} {len(classes):8d} {len(classes) / requested:7.4f}")


if __name__ == "__main__":
    main()
