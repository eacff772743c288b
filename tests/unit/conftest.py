"""Fixtures shared by the unit test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory):
    """model.ckpt of a 3-epoch MLP on the synthetic dataset of test_models (absorber Cu, K edge,
    energy grid -20..+60 eV relative to E0), trained once per test session; tests copy it before
    changing it."""
    import torch
    from test_models import _params, _synthetic_dataset

    from xasflow.dataset.schema import write_dataset
    from xasflow.models import train_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("checkpoint")
        dataset = write_dataset(_synthetic_dataset(), folder / "spectra.zarr")
        train_model(dataset, _params(max_epochs=3), folder / "mlp")
    finally:
        torch.set_num_threads(threads)
    return folder / "mlp" / "model.ckpt"
