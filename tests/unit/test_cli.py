"""The CLI tells user errors (one line, exit 2) from bugs (traceback kept)."""

from __future__ import annotations

import pytest
import yaml

from xasflow import cli
from xasflow.errors import UserError

CONFIG = {
    "absorber": "Cu",
    "systems": {"cu_crystal": {"kind": "crystal", "element": "Cu", "lattice_constant": 3.615}},
}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def _md_arguments(config_file, tmp_path):
    return [
        "structures",
        "md",
        "--config",
        str(config_file),
        "--system",
        "cu_crystal",
        "--out-dir",
        str(tmp_path),
    ]


def test_a_user_error_is_one_line_and_exit_2(config_file, tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise UserError(f"{config_file}: the lattice is wrong\nsecond line is not shown")

    monkeypatch.setattr("xasflow.structures.pipeline.simulate_system", refuse)
    assert cli.main(_md_arguments(config_file, tmp_path)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"xasflow: error: {config_file}: the lattice is wrong"]


@pytest.mark.parametrize("bug", [ValueError, KeyError, FileNotFoundError])
def test_a_bug_keeps_its_traceback(config_file, tmp_path, monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug("an internal invariant broke")

    monkeypatch.setattr("xasflow.structures.pipeline.simulate_system", broken)
    with pytest.raises(bug, match="internal invariant"):
        cli.main(_md_arguments(config_file, tmp_path))


def test_an_unknown_system_is_a_user_error(config_file, tmp_path, capsys):
    arguments = [
        "structures",
        "md",
        "--config",
        str(config_file),
        "--system",
        "nope",
        "--out-dir",
        str(tmp_path),
    ]
    assert cli.main(arguments) == 2
    assert "system 'nope' is not in the configuration" in capsys.readouterr().err


def test_the_static_crystal_runs_through_the_cli(config_file, tmp_path):
    assert cli.main(_md_arguments(config_file, tmp_path)) == 0
    assert (tmp_path / "snapshots.extxyz").stat().st_size > 0


def test_progress_lines_survive_importing_larch():
    """Larch sets the root logger to WARNING when imported; xasflow's INFO lines (epochs, sites)
    must still reach the job log."""
    import logging

    cli.configure_logging(verbose=False)
    import larch  # noqa: F401

    assert logging.getLogger("xasflow.models.train").isEnabledFor(logging.INFO)
