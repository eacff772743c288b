"""Tests for xasflow.spectrum: the one spectrum type of measured and computed spectra."""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from xasflow.spectrum import ABSOLUTE, Spectrum, relative_reference

ENERGY = np.linspace(8950.0, 9050.0, 21)
MU = np.linspace(0.1, 1.1, 21)


def _spectrum(**overrides) -> Spectrum:
    fields = {"source": "test", "kind": "measured"} | overrides
    energy = fields.pop("energy", ENERGY)
    mu = fields.pop("mu", MU)
    return Spectrum(energy, mu, **fields)


def test_arrays_are_read_only_float_copies():
    energy = ENERGY.astype(np.float32)
    spectrum = _spectrum(energy=energy, mu=list(MU))
    assert spectrum.energy.dtype == np.float64 and spectrum.mu.dtype == np.float64
    energy[0] = 1.0  # the caller's array stays the caller's
    assert spectrum.energy[0] == pytest.approx(8950.0)
    with pytest.raises(ValueError):
        spectrum.energy[0] = 0.0
    with pytest.raises(ValueError):
        spectrum.mu[0] = 0.0


def test_defaults_and_metadata_copy():
    metadata = {"format": "xdi"}
    spectrum = _spectrum(metadata=metadata)
    metadata["format"] = "changed"
    assert spectrum.metadata == {"format": "xdi"}
    assert spectrum.energy_reference == ABSOLUTE and spectrum.is_absolute
    assert spectrum.e0_name is None
    assert (spectrum.element, spectrum.edge) == (None, None)


def test_only_energy_and_mu_are_positional():
    with pytest.raises(TypeError):
        Spectrum(ENERGY, MU, "test", "measured")  # source and kind must be named


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mu": MU[:-1]}, "energy has 21 points but mu has 20"),
        ({"energy": ENERGY[:1], "mu": MU[:1]}, "at least 2 points"),
        ({"mu": MU.reshape(3, 7)}, "1-D"),
        ({"mu": np.where(MU > 0.5, np.nan, MU)}, "mu is not finite"),
        ({"energy": np.where(ENERGY > 9000, np.inf, ENERGY)}, "energy is not finite"),
        ({"energy": ENERGY[::-1]}, "increase strictly"),
        ({"energy": np.r_[ENERGY[:5], ENERGY[4:-1]]}, "increase strictly"),
        ({"energy": ENERGY - 9000.0}, "absolute photon energies must be > 0"),
        ({"kind": "simulated"}, "kind 'simulated' is not one of measured, computed"),
        ({"energy_reference": "relative:"}, "neither 'absolute' nor 'relative:<name of the E0>'"),
        ({"energy_reference": "edge"}, "neither"),
        ({"mu": ["a"] * 21}, "mu is not an array of numbers"),
    ],
)
def test_invalid_spectra_are_refused_naming_the_source(overrides, message):
    with pytest.raises(ValueError, match=message) as caught:
        _spectrum(source="/data/foil.xdi", **overrides)
    assert str(caught.value).startswith("/data/foil.xdi: ")


def test_validation_runs_again_on_replace():
    spectrum = _spectrum()
    with pytest.raises(ValueError, match="increase strictly"):
        replace(spectrum, energy=spectrum.energy[::-1])


def test_relative_axis_needs_its_e0_for_absolute_energies():
    relative = _spectrum(
        energy=ENERGY - 8979.0, kind="computed", energy_reference=relative_reference("fdmnes_edge")
    )
    assert not relative.is_absolute
    assert relative.e0_name == "fdmnes_edge"
    with pytest.raises(ValueError, match="relative to E0 'fdmnes_edge'; pass that E0"):
        relative.absolute_energy()
    with pytest.raises(ValueError, match="not to 'half_step'"):
        relative.absolute_energy(8979.0, e0_name="half_step")
    with pytest.raises(ValueError, match="finite"):
        relative.absolute_energy(float("nan"))
    absolute = relative.absolute_energy(8979.0, e0_name="fdmnes_edge")
    np.testing.assert_allclose(absolute, ENERGY)
    assert not absolute.flags.writeable


def test_absolute_axis_refuses_an_added_e0():
    spectrum = _spectrum()
    assert spectrum.absolute_energy() is spectrum.energy
    with pytest.raises(ValueError, match="already absolute"):
        spectrum.absolute_energy(8979.0)


def test_relative_reference_needs_a_name():
    assert relative_reference(" fdmnes_edge ") == "relative:fdmnes_edge"
    with pytest.raises(ValueError, match="needs a name"):
        relative_reference("  ")


def test_pickles_with_its_fields():
    spectrum = _spectrum(element="Cu", edge="K", metadata={"warnings": ["x"]})
    copy = pickle.loads(pickle.dumps(spectrum))
    np.testing.assert_array_equal(copy.energy, spectrum.energy)
    assert (copy.source, copy.kind, copy.element, copy.edge) == ("test", "measured", "Cu", "K")
    assert copy.metadata == {"warnings": ["x"]}


def test_module_imports_nothing_from_other_xasflow_stages():
    # spectrum.py is the bottom layer: importing it must not pull in any stage (or Larch).
    code = (
        "import sys, xasflow.spectrum; "
        "print(sorted(m for m in sys.modules if m.startswith(('xasflow.', 'larch'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "['xasflow.spectrum']"
