"""Network architectures: plain ``nn.Module``s mapping a spectrum to its structural descriptors.

Both networks are multitask: one shared trunk reads the (standardized) XANES spectrum, and two
linear heads give the (standardized) first-shell coordination number and the partial RDF g(r).
Loss, optimizer and normalization live in :class:`~xasflow.models.module.SpectrumRegressor`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _dense_stack(n_inputs: int, hidden_sizes: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    """Linear -> ReLU -> Dropout per hidden size; returns the stack and its output width."""
    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden_sizes:
        layers += [nn.Linear(width, int(size)), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(size)
    return nn.Sequential(*layers), width


class _TwoHeads(nn.Module):
    """Coordination-number head (one value) and RDF head (``n_r`` values) on shared features.

    Both start at zero output (the training mean once standardization is undone).
    """

    def __init__(self, n_features: int, n_r: int) -> None:
        super().__init__()
        self.coordination_number = nn.Linear(n_features, 1)
        self.rdf = nn.Linear(n_features, n_r)
        # targets are standardized / centered on the training mean: zero heads start every
        # prediction at the mean-predicting baseline instead of at random offsets per r point
        for head in (self.coordination_number, self.rdf):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        return {
            "coordination_number": self.coordination_number(features).squeeze(-1),
            "rdf": self.rdf(features),
        }


class SpectrumMLP(nn.Module):
    """Fully connected network on the spectrum.

    Parameters
    ----------
    n_energy:      number of energy grid points of the input spectrum.
    n_r:           number of r grid points of the RDF output.
    hidden_sizes:  widths of the shared dense layers (empty: linear model).
    dropout:       dropout probability after each dense layer.

    ``forward(mu)`` takes ``mu`` of shape (batch, n_energy) and returns
    ``{"coordination_number": (batch,), "rdf": (batch, n_r)}``.
    """

    def __init__(
        self, n_energy: int, n_r: int, hidden_sizes: Sequence[int] = (128, 64), dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.n_energy = int(n_energy)
        self.trunk, n_features = _dense_stack(self.n_energy, hidden_sizes, dropout)
        self.heads = _TwoHeads(n_features, int(n_r))

    def forward(self, mu: Tensor) -> dict[str, Tensor]:
        return self.heads(self.trunk(mu))


class SpectrumCNN(nn.Module):
    """1D convolutional network on the spectrum, then dense layers.

    Each convolution block is Conv1d (``kernel_size`` points, "same" padding) -> ReLU ->
    MaxPool1d(2), so the energy axis is halved per block; the flattened features go through
    dense layers of ``hidden_sizes`` and then the two heads.

    Parameters
    ----------
    n_energy:      number of energy grid points of the input spectrum.
    n_r:           number of r grid points of the RDF output.
    channels:      output channels of each convolution block (at least one block).
    kernel_size:   convolution width in energy grid points.
    hidden_sizes:  widths of the dense layers after the convolutions (may be empty).
    dropout:       dropout probability after each dense layer.

    ``forward(mu)`` takes ``mu`` of shape (batch, n_energy) and returns
    ``{"coordination_number": (batch,), "rdf": (batch, n_r)}``.
    """

    def __init__(
        self,
        n_energy: int,
        n_r: int,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 5,
        hidden_sizes: Sequence[int] = (64,),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("SpectrumCNN needs at least one convolution block (channels is empty)")
        self.n_energy = int(n_energy)
        blocks: list[nn.Module] = []
        length, in_channels = self.n_energy, 1
        for out_channels in channels:
            blocks += [
                nn.Conv1d(in_channels, int(out_channels), kernel_size, padding=kernel_size // 2),
                nn.ReLU(),
                nn.MaxPool1d(2),
            ]
            # output length of a padded convolution, then of the pooling
            length = (length + 2 * (kernel_size // 2) - kernel_size + 1) // 2
            if length < 1:
                raise ValueError(
                    f"{len(channels)} convolution blocks with kernel_size {kernel_size} leave no energy "
                    f"points from {self.n_energy}; use fewer channels entries"
                )
            in_channels = int(out_channels)
        self.convolutions = nn.Sequential(*blocks)
        self.dense, n_features = _dense_stack(in_channels * length, hidden_sizes, dropout)
        self.heads = _TwoHeads(n_features, int(n_r))

    def forward(self, mu: Tensor) -> dict[str, Tensor]:
        features = self.convolutions(mu.unsqueeze(1))  # (batch, channels, n_energy // 2**blocks)
        return self.heads(self.dense(torch.flatten(features, start_dim=1)))
