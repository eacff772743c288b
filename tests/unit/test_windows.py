"""The energy-window study finds the region that carries each target.

In the synthetic spectra of test_targets, the valence lives only in a pre-edge peak (-8 eV) and
the grain-boundary flag only in a post-edge bump (+35 eV): each target must be read from its
own window and not from the other.
"""

from __future__ import annotations

import csv

import pytest
import torch
from test_targets import _dataset, _params

from xasflow.dataset.schema import write_dataset
from xasflow.errors import UserError
from xasflow.models.windows import DEFAULT_WINDOWS, parse_windows, skill, window_study


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_each_target_is_read_from_its_own_window(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "d.zarr")
    params = _params(
        architecture="mlp",
        targets=({"variable": "valence", "kind": "classification"}, "grain_boundary"),
        ensemble=1,
        max_epochs=40,
        hidden_sizes=(32,),
    )
    windows = parse_windows(["pre_edge:-20:-4", "post_edge:25:50"])
    rows = window_study(path, params, windows, tmp_path / "windows")
    network = {(row["window"], row["target"]): row["skill"] for row in rows if row["model"] == "network"}
    assert network[("pre_edge", "valence")] > 0.6
    assert network[("post_edge", "valence")] < 0.2
    assert network[("post_edge", "grain_boundary")] > 0.5
    assert network[("pre_edge", "grain_boundary")] < 0.2
    with open(tmp_path / "windows" / "windows.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) == 2 * 2 * 6  # windows x targets x (network + 5 baselines)
    assert (tmp_path / "windows" / "windows.png").stat().st_size > 1000
    assert (tmp_path / "windows" / "pre_edge" / "model.ckpt").is_file()


def test_skill_is_the_share_of_the_baseline_error_removed():
    assert skill("regression", {"mae": 0.5}, {"mae": 2.0}) == pytest.approx(0.75)
    assert skill("classification", {"accuracy": 0.8}, {"accuracy": 0.6}) == pytest.approx(0.5)
    assert skill("probability", {"brier": 0.3}, {"brier": 0.2}) == pytest.approx(-0.5)
    assert skill("regression", {"mae": None}, {"mae": 1.0}) is None


def test_window_arguments():
    assert parse_windows(None) == DEFAULT_WINDOWS
    assert parse_windows(["edge:-3:5"]) == {"edge": (-3.0, 5.0)}
    for bad in ("edge:5:-3", "edge:-3", "edge:a:b"):
        with pytest.raises(UserError, match="NAME:LOW:HIGH"):
            parse_windows([bad])
