"""Network architectures: plain ``nn.Module``s mapping a spectrum to its structural descriptors.

Every network is a shared trunk that reads the (standardized) spectrum and one linear head per
target (:mod:`xasflow.models.targets`), named like the target, of the target's output width (1
for a number or a probability logit, n_r for a g(r) curve, one logit per class). ``forward(mu)``
returns ``{target name: (batch, width)}``. Loss, optimizer and normalization live in
:class:`~xasflow.models.module.SpectrumRegressor`; :class:`Ensemble` holds independent members.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


class Heads(nn.Module):
    """One linear head per target on shared features.

    ``head_sizes`` maps target names (in order) to output widths. With ``cascade``, every head
    after the first also reads the first head's output, so later targets (partial CNs) are
    conditioned on the first (the total CN). All heads start at zero output: targets are
    standardized or centred on the training mean, so every prediction starts at the
    mean-predicting baseline instead of at random offsets.
    """

    def __init__(self, n_features: int, head_sizes: Mapping[str, int], cascade: bool = False) -> None:
        super().__init__()
        self.names = list(head_sizes)
        self.cascade = bool(cascade) and len(self.names) > 1
        first_width = int(head_sizes[self.names[0]])
        self.heads = nn.ModuleDict()
        for position, (name, size) in enumerate(head_sizes.items()):
            extra = first_width if self.cascade and position > 0 else 0
            head = nn.Linear(n_features + extra, int(size))
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            self.heads[name] = head

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        first = self.heads[self.names[0]](features)
        outputs = {self.names[0]: first}
        conditioned = torch.cat([features, first], dim=-1) if self.cascade else features
        for name in self.names[1:]:
            outputs[name] = self.heads[name](conditioned)
        return outputs


class SpectrumMLP(nn.Module):
    """Fully connected network on the spectrum.

    Parameters
    ----------
    n_energy:      number of energy grid points of the input spectrum.
    head_sizes:    output width per target name.
    hidden_sizes:  widths of the shared dense layers (empty: linear model).
    dropout:       dropout probability after each dense layer.
    """

    def __init__(
        self,
        n_energy: int,
        head_sizes: Mapping[str, int],
        hidden_sizes: Sequence[int] = (128, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_energy = int(n_energy)
        self.trunk, n_features = _dense_stack(self.n_energy, hidden_sizes, dropout)
        self.heads = Heads(n_features, head_sizes)

    def forward(self, mu: Tensor) -> dict[str, Tensor]:
        return self.heads(self.trunk(mu))


def _pooled_length(length: int, kernel_size: int, n_blocks: int, n_energy: int) -> int:
    """Energy points left after ``n_blocks`` of padded convolution + max pooling by 2."""
    for _ in range(n_blocks):
        length = (length + 2 * (kernel_size // 2) - kernel_size + 1) // 2
        if length < 1:
            raise ValueError(
                f"{n_blocks} convolution blocks with kernel_size {kernel_size} leave no energy "
                f"points from {n_energy}; use fewer channels entries"
            )
    return length


def _convolution_blocks(channels: Sequence[int], kernel_size: int) -> nn.Sequential:
    """Conv1d (``kernel_size``, "same" padding) -> ReLU -> MaxPool1d(2) per entry of ``channels``."""
    blocks: list[nn.Module] = []
    in_channels = 1
    for out_channels in channels:
        blocks += [
            nn.Conv1d(in_channels, int(out_channels), kernel_size, padding=kernel_size // 2),
            nn.ReLU(),
            nn.MaxPool1d(2),
        ]
        in_channels = int(out_channels)
    return nn.Sequential(*blocks)


class SpectrumCNN(nn.Module):
    """1D convolutional network on the spectrum, then dense layers.

    Each convolution block is Conv1d (``kernel_size`` points, "same" padding) -> ReLU ->
    MaxPool1d(2), so the energy axis is halved per block; the flattened features go through
    dense layers of ``hidden_sizes`` and then the heads.

    Parameters
    ----------
    n_energy:      number of energy grid points of the input spectrum.
    head_sizes:    output width per target name.
    channels:      output channels of each convolution block (at least one block).
    kernel_size:   convolution width in energy grid points.
    hidden_sizes:  widths of the dense layers after the convolutions (may be empty).
    dropout:       dropout probability after each dense layer.
    """

    def __init__(
        self,
        n_energy: int,
        head_sizes: Mapping[str, int],
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 5,
        hidden_sizes: Sequence[int] = (64,),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("SpectrumCNN needs at least one convolution block (channels is empty)")
        self.n_energy = int(n_energy)
        length = _pooled_length(self.n_energy, kernel_size, len(channels), self.n_energy)
        self.convolutions = _convolution_blocks(channels, kernel_size)
        self.dense, n_features = _dense_stack(int(channels[-1]) * length, hidden_sizes, dropout)
        self.heads = Heads(n_features, head_sizes)

    def forward(self, mu: Tensor) -> dict[str, Tensor]:
        features = self.convolutions(mu.unsqueeze(1))  # (batch, channels, n_energy // 2**blocks)
        return self.heads(self.dense(torch.flatten(features, start_dim=1)))


class MultiscaleCNN(nn.Module):
    """Cascade multiscale CNN: parallel convolution branches of different kernel widths.

    Each branch is a stack of convolution blocks (as in :class:`SpectrumCNN`) with its own
    kernel width: narrow kernels see pre-edge and white-line features a few eV wide, wide ones
    the post-edge oscillations. The branches' flattened features are concatenated and go
    through dense layers; the heads are cascaded (:class:`Heads`): the first target's prediction
    is an input of every later head.

    Parameters
    ----------
    n_energy:      number of energy grid points of the input spectrum.
    head_sizes:    output width per target name (the first is the cascade's root).
    channels:      output channels of each block of every branch.
    kernel_sizes:  kernel width of each branch, in energy grid points.
    hidden_sizes:  widths of the dense layers after the concatenation.
    dropout:       dropout probability after each dense layer.
    cascade:       condition later heads on the first (False: independent heads).
    """

    def __init__(
        self,
        n_energy: int,
        head_sizes: Mapping[str, int],
        channels: Sequence[int] = (16, 32),
        kernel_sizes: Sequence[int] = (3, 9, 21),
        hidden_sizes: Sequence[int] = (64,),
        dropout: float = 0.1,
        cascade: bool = True,
    ) -> None:
        super().__init__()
        if not channels or not kernel_sizes:
            raise ValueError(
                "MultiscaleCNN needs at least one block (channels) and one branch (kernel_sizes)"
            )
        self.n_energy = int(n_energy)
        self.branches = nn.ModuleList(_convolution_blocks(channels, int(size)) for size in kernel_sizes)
        n_flat = sum(
            int(channels[-1]) * _pooled_length(self.n_energy, int(size), len(channels), self.n_energy)
            for size in kernel_sizes
        )
        self.dense, n_features = _dense_stack(n_flat, hidden_sizes, dropout)
        self.heads = Heads(n_features, head_sizes, cascade=cascade)

    def forward(self, mu: Tensor) -> dict[str, Tensor]:
        signal = mu.unsqueeze(1)
        features = torch.cat([torch.flatten(branch(signal), start_dim=1) for branch in self.branches], dim=1)
        return self.heads(self.dense(features))


class Ensemble(nn.Module):
    """Independent networks of one architecture (a deep ensemble), evaluated together.

    ``forward(mu)`` returns ``{target: (members, batch, width)}``. The members differ only in
    their random initialization (and dropout draws); they share the batches.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, mu: Tensor) -> dict[str, Tensor]:
        outputs = [member(mu) for member in self.members]
        return {name: torch.stack([output[name] for output in outputs]) for name in outputs[0]}
