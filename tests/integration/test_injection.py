"""Config strings never reach a shell unquoted, and a bad study stops Snakemake before any job.

The real run here is one static-crystal `md` job (no LAMMPS): the cheapest job that puts
results_dir on a shell line. The dry runs stop while Snakemake reads the workflow.
"""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _crystal_study(**sections) -> dict:
    return {
        "systems": {"crystal_Cu": {"kind": "crystal", "element": "Cu", "supercell": [2, 2, 2]}},
        "training": {"models": {"mlp": {"architecture": "mlp"}}},
        **sections,
    }


def _write_study(workdir: Path, config: dict | str) -> Path:
    configfile = workdir / "study.yaml"
    configfile.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return configfile


def test_a_command_substitution_in_results_dir_never_runs(tmp_path, run_snakemake):
    results = "res$(touch PWNED)"
    configfile = _write_study(tmp_path, _crystal_study(results_dir=results))
    result = run_snakemake(
        tmp_path, configfile, f"{results}/structures/crystal_Cu/md.json", cores=1, timeout=600
    )
    assert not (tmp_path / "PWNED").exists()
    assert result.returncode != 0
    assert "config key 'results_dir'" in result.stderr and "not allowed" in result.stderr


def _with_potential(file: str, **system) -> dict:
    particle = {
        "kind": "nanoparticle",
        "element": "Cu",
        "shape": "icosahedron",
        "shells": 3,
        "temperature": 300,
        "potential": {"style": "eam", "file": file},
        "md": {"n_snapshots": 1},
        **system,
    }
    return _crystal_study(systems={"np": particle, "crystal_Cu": _crystal_study()["systems"]["crystal_Cu"]})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            _with_potential("Cu_u4.eam"),
            "config key 'systems.np.potential.file' 'Cu_u4.eam' is neither a file",
        ),
        (
            _with_potential("Cu_u3.eam", n_sites=56),
            "config key 'systems.np.n_sites' (56) asks for more sites",
        ),
        (
            yaml.safe_dump(_crystal_study()).replace("kind: crystal", "kind: crystal\n    kind: bulk"),
            "not valid YAML at line 5: duplicate key 'systems.crystal_Cu.kind'",
        ),
    ],
    ids=["missing-potential", "too-many-sites", "duplicate-key"],
)
def test_snakemake_refuses_the_study_before_any_job(tmp_path, run_snakemake, config, message):
    result = run_snakemake(tmp_path, _write_study(tmp_path, config), "-n", cores=1, timeout=600)
    assert result.returncode != 0, result.stdout[-2000:]
    assert message in result.stderr
    assert "Job stats" not in result.stdout


def _shell_placeholders(rule_file: Path) -> list[str]:
    """The {placeholders} of every shell: line of a rule file (string literals joined)."""
    text = rule_file.read_text()
    placeholders = []
    for block in re.findall(r"^\s+shell:\n((?:\s+[rf]?\".*\"\n?)+)", text, re.MULTILINE):
        command = "".join(ast.literal_eval(line.strip()) for line in block.splitlines())
        placeholders += re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", command)
    return placeholders


@pytest.mark.parametrize(
    "rule_file",
    ["structures.smk", "spectra.smk", "dataset.smk", "train.smk", "infer.smk"],
)
def test_every_shell_placeholder_is_quoted(rule_file):
    placeholders = _shell_placeholders(ROOT / "rules" / rule_file)
    assert placeholders, f"no shell line found in {rule_file}"
    assert [name for name in placeholders if not name.endswith(":q")] == []
