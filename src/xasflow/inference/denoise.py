"""Self-supervised, physics-constrained denoising of 2D XANES image stacks.

A stack holds one spectrum per pixel, mu(E) or photon counts, on one energy grid. The pixels of
a sample made of a few known phases are, up to noise, non-negative mixtures of the reference
spectra plus a smooth background:

    mu_p(E) = sum_r f_pr R_r(E) + sum_b c_pb P_b(E) [+ sum_k g_pk Q_k(E)]

with R the references (edge steps), P Legendre polynomials of degree 0..``background_order``
over the energy range, and Q an optional small learned residual basis (penalised) for what the
references cannot hold.

The network (:class:`DenoiseNetwork`, a plain ``nn.Module``) reads the stack as an image whose
channels are the energies, plus the per-pixel least-squares coefficients of references and
background and their box means over 5, 9 and 17 pixels (fixed linear maps of its input), and
writes, per pixel, the fractions f (softplus, so >= 0), the background coefficients c and the
residual coefficients g; its output spectrum is the formula above, so whatever it predicts is a
physical spectrum. Its starting point is a learned mix, per coefficient, of the least-squares
map and its box means; dilated residual convolutions learn corrections to it. (Without that
starting point the network did not reach the per-pixel fit in 500 steps: Fe foil and Fe3C are
nearly collinear, and the likelihood says little about how they share a pixel.)

It is trained on the stack itself, without labels, by the Noise2Self blind-spot scheme (Batson &
Royer, ICML 2019): at each step a grid of pixels, one in ``mask_spacing`` x ``mask_spacing``,
has its spectrum replaced by the mean of its 8 neighbours (in random patches), and the loss is
the negative log-likelihood of the *measured* spectra of those pixels only (Poisson for counts,
Gaussian with a learned variance per energy for mu). The network never sees the value it is
scored on, and pixel noise is independent, so the best it can do is to predict the noise-free
spectrum from the neighbourhood: it cannot learn the noise.

A blind-spot prediction ignores the pixel's own measurement, which at high dose is the best
evidence there is (and a sharp boundary between phases is not predictable from neighbours). So,
as Laine et al. (NeurIPS 2019) do for images, the final estimate combines the two: the network's
prediction from the neighbours, taken exactly blind (one pass per mask phase), is a Gaussian
prior on each pixel's coefficients, with a variance per coefficient estimated from the stack
(empirical Bayes, method of moments); the pixel's own spectrum is the likelihood (Poisson
approximated by its Gaussian, variance = rate / dose); the posterior mode with non-negative
fractions is solved per pixel by :func:`scipy.optimize.nnls`. At low dose the prior dominates
(spatial denoising); at high dose the likelihood does, and the result tends to the per-pixel
least-squares fit.

Without an image shape the pixels have no neighbours: the network then reads each spectrum alone
(1x1 convolutions), energies are blind-spot masked instead of pixels, and its fractions are the
answer (no posterior: the prior would not be independent of the pixel's noise).

Hand-written here, and why: the masking and the J-invariant passes (a few lines; no library
implements Noise2Self for multi-channel stacks with a physics head), the masked least squares of
the energy blind spot (a batched solve), and the empirical-Bayes variance (one formula). Losses,
optimiser and solvers are torch's and scipy's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn
from torch.nn import functional

from xasflow.errors import UserError

logger = logging.getLogger(__name__)

#: Format tag written into every checkpoint; a file without it is refused.
CHECKPOINT_FORMAT = "xasflow-denoise-1"
#: Smallest model mu (edge steps) used as a Poisson rate, so that log(rate) stays finite.
MIN_RATE = 1e-4
#: Smallest prior variance of a coefficient: the prior never becomes an exact constraint.
MIN_PRIOR_VARIANCE = 1e-8
#: Fraction of energies hidden per step when the pixels have no spatial neighbours.
ENERGY_MASK_FRACTION = 0.25
INPUT_KINDS = ("mu", "counts")
#: Sharpness of the softplus that keeps fractions >= 0: within ~0.1 of max(x, 0) beyond |x| > 0.1.
SOFTPLUS_SHARPNESS = 20.0
#: Sides (pixels) of the box means of the least-squares maps the network reads besides each
#: pixel: wide context is what denoises at low dose, and a mean is hard for a few convolutions
#: to learn from noisy gradients.
CONTEXT_SIZES = (5, 9, 17)


class DenoiseError(UserError):
    """Inputs or settings the denoiser refuses: shapes that disagree, NaN, negative counts, a
    checkpoint made for other references or energies."""


@dataclass(frozen=True)
class DenoiseSettings:
    """How a stack is denoised. Defaults agree with ``imaging.network`` in the config schema.

    Attributes:
        input: ``"mu"`` (absorption, any units, e.g. normalized edge steps; Gaussian likelihood
            with a learned variance per energy) or ``"counts"`` (photon counts; Poisson likelihood).
        counts_per_unit: for counts: the expected counts of a pixel whose mu is 1 in the units of
            the references (the dose per energy point); required for counts, unused for mu.
        background_order: highest degree of the Legendre polynomials of the smooth background
            (0 = a constant offset, 1 = offset and slope); -1 for none.
        residual_components: learned energy functions of the free residual (0 = none).
        residual_weight: weight of the mean squared residual (edge steps^2) in the loss.
        smoothness_weight: weight of the mean squared difference of the fractions of
            neighbouring pixels in the loss (0 = none; the blind spot already smooths).
        channels: feature channels of the network.
        dilations: one 3x3 convolution per entry, with that dilation; the receptive field is
            1 + 2 * sum(dilations) pixels across.
        mask_spacing: one pixel in mask_spacing x mask_spacing is hidden per step (>= 2, so that
            no hidden pixel is the neighbour of another).
        epochs: passes over the stack; one epoch scores each pixel about once as a hidden pixel.
        batch_size: patches per optimiser step.
        patch_size: side of a square training patch, pixels (the whole image if smaller).
        learning_rate: Adam learning rate.
        posterior: combine the network's blind prediction with each pixel's own spectrum
            (module docstring); False returns the network's fractions.
        seed: seeds the weights, the patches and the masks: same seed, same result.
    """

    input: str = "mu"
    counts_per_unit: float | None = None
    background_order: int = 1
    residual_components: int = 0
    residual_weight: float = 1.0
    smoothness_weight: float = 0.0
    channels: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    mask_spacing: int = 4
    epochs: int = 30
    batch_size: int = 4
    patch_size: int = 48
    learning_rate: float = 1e-2
    posterior: bool = True
    seed: int = 0

    def __post_init__(self):
        problems = _settings_problems(self)
        if problems:
            raise DenoiseError(f"denoise settings: {problems[0]}")

    @classmethod
    def from_mapping(cls, values: Mapping) -> DenoiseSettings:
        """Settings from a config mapping (``imaging.network``); unknown keys are refused by name."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DenoiseError(
                f"denoise settings: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}"
            )
        given = dict(values)
        if "dilations" in given:
            given["dilations"] = tuple(given["dilations"])
        return cls(**given)


def _settings_problems(settings: DenoiseSettings) -> list[str]:
    checks = [
        (settings.input in INPUT_KINDS, f"input={settings.input!r}; valid: {', '.join(INPUT_KINDS)}"),
        (
            settings.input == "mu" or _positive(settings.counts_per_unit),
            f"counts_per_unit={settings.counts_per_unit!r}; counts need a positive counts_per_unit",
        ),
        (settings.background_order >= -1, f"background_order={settings.background_order}; valid: -1 or more"),
        (
            settings.residual_components >= 0,
            f"residual_components={settings.residual_components}; valid: 0 or more",
        ),
        (settings.mask_spacing >= 2, f"mask_spacing={settings.mask_spacing}; valid: 2 or more"),
        (settings.epochs >= 0, f"epochs={settings.epochs}; valid: 0 or more"),
        (
            settings.batch_size >= 1 and settings.patch_size >= 1,
            "batch_size and patch_size must be 1 or more",
        ),
        (
            settings.channels >= 1 and all(d >= 1 for d in settings.dilations),
            "channels and dilations must be >= 1",
        ),
        (_positive(settings.learning_rate), f"learning_rate={settings.learning_rate}; must be > 0"),
        (
            settings.residual_weight >= 0 and settings.smoothness_weight >= 0,
            "residual_weight and smoothness_weight must be >= 0",
        ),
    ]
    return [message for ok, message in checks if not ok]


def _positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


# --- the network ----------------------------------------------------------------------------------


def background_basis(energy: np.ndarray, order: int) -> np.ndarray:
    """Legendre polynomials of degree 0..order on ``energy`` mapped to [-1, 1]: shape (order + 1, n)."""
    energy = np.asarray(energy, dtype=float)
    scaled = 2.0 * (energy - energy[0]) / (energy[-1] - energy[0]) - 1.0
    return np.polynomial.legendre.legvander(scaled, order).T if order >= 0 else np.zeros((0, energy.size))


class DenoiseNetwork(nn.Module):
    """Stack image (batch, n_energies, height, width) -> fractions, background and residual maps.

    The spectrum it predicts is ``fractions @ references + background @ basis + residual @ Q``
    (module docstring). ``input_mean`` and ``input_scale`` (per energy) standardize what it reads;
    they are fixed by the first stack it was trained on and kept when fine-tuned.
    """

    def __init__(
        self,
        references: np.ndarray,
        basis: np.ndarray,
        input_mean: np.ndarray,
        input_scale: np.ndarray,
        residual_components: int = 0,
        channels: int = 32,
        dilations: tuple[int, ...] = (1, 2, 4, 8),
        spatial: bool = True,
    ):
        super().__init__()
        n_refs, n_energies = references.shape
        self.register_buffer("references", torch.as_tensor(references, dtype=torch.float32))
        self.register_buffer("basis", torch.as_tensor(basis, dtype=torch.float32))
        self.register_buffer("input_mean", torch.as_tensor(input_mean, dtype=torch.float32))
        self.register_buffer("input_scale", torch.as_tensor(input_scale, dtype=torch.float32))
        # Gaussian noise variance per energy (mu input); learned with the rest.
        self.log_variance = nn.Parameter(torch.full((n_energies,), -4.0))
        self.residual_basis = nn.Parameter(0.01 * torch.randn(residual_components, n_energies))
        kernel = 3 if spatial else 1
        design = np.vstack([references, basis])
        # Least-squares coefficients of the spectrum it reads, a fixed linear map of its input:
        # they give the network the physics directly, and keep the blind spot blind.
        self.register_buffer("projection", torch.as_tensor(np.linalg.pinv(design), dtype=torch.float32))
        self.context_sizes = CONTEXT_SIZES if spatial else ()
        self.scale_logits = nn.Parameter(torch.zeros(design.shape[0], 1 + len(self.context_sizes)))
        self.encoder = nn.Conv2d(n_energies + design.shape[0] * (1 + len(self.context_sizes)), channels, 1)
        self.blocks = nn.ModuleList(
            nn.Conv2d(
                channels, channels, kernel, dilation=d, padding=d if spatial else 0, padding_mode="replicate"
            )
            for d in dilations
        )
        self.head = nn.Conv2d(channels, n_refs + basis.shape[0] + residual_components, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.n_refs, self.n_background = n_refs, basis.shape[0]
        self.spatial = spatial

    def forward(self, stack: torch.Tensor, visible: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``stack`` (N, E, H, W) mu; ``visible`` (N, E, H, W) bool: the energies it may read
        (None: all). Hidden energies must already hold ``input_mean``."""
        standardized = (stack - self.input_mean[:, None, None]) / self.input_scale[:, None, None]
        coefficients = self._least_squares(stack, visible)
        context = [_box_mean(coefficients, size) for size in self.context_sizes]
        features = functional.gelu(self.encoder(torch.cat([standardized, coefficients, *context], dim=1)))
        # The starting point of each coefficient: a learned mix of its least-squares map and the
        # box means of it, one weight per scale (few parameters, so well set by noisy gradients).
        scales = torch.stack([coefficients, *context], dim=-1)
        base = (scales * torch.softmax(self.scale_logits, dim=-1)[None, :, None, None, :]).sum(-1)
        for block in self.blocks:  # residual blocks: each refines, none has to carry the signal alone
            features = features + functional.gelu(block(features))
        out = self.head(features)
        # The head corrects the starting point (zero at the start).
        fractions = functional.softplus(
            base[:, : self.n_refs] + out[:, : self.n_refs], beta=SOFTPLUS_SHARPNESS
        )
        background_coefficients = (
            base[:, self.n_refs :] + out[:, self.n_refs : self.n_refs + self.n_background]
        )
        residual_coefficients = out[:, self.n_refs + self.n_background :]
        background = torch.einsum("nbhw,be->nehw", background_coefficients, self.basis)
        residual = torch.einsum("nkhw,ke->nehw", residual_coefficients, self.residual_basis)
        model = torch.einsum("nrhw,re->nehw", fractions, self.references) + background + residual
        return {
            "fractions": fractions,
            "background_coefficients": background_coefficients,
            "background": background,
            "residual": residual,
            "model": model,
        }

    def _least_squares(self, stack: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
        """(N, K, H, W) least-squares coefficients of references and background, from the visible
        energies only, so that a hidden energy cannot leak into them."""
        if visible is None:
            return torch.einsum("nehw,ek->nkhw", stack, self.projection)
        design = torch.cat([self.references, self.basis])
        weights = visible.float().permute(0, 2, 3, 1)  # (N, H, W, E)
        normal = torch.einsum("ke,nhwe,le->nhwkl", design, weights, design)
        right = torch.einsum("ke,nhwe->nhwk", design, weights * stack.permute(0, 2, 3, 1))
        return torch.linalg.solve(normal, right).permute(0, 3, 1, 2)


# --- the result and the checkpoint ---------------------------------------------------------------


@dataclass(frozen=True)
class DenoiseResult:
    """What :func:`denoise_stack` returns. Shapes: P pixels, E energies, R references.

    Attributes:
        denoised: (P, E) float32, in the units of the input (mu or counts).
        fractions: (P, R) >= 0, edge steps of each reference in each pixel (the posterior
            estimate when ``settings.posterior``, else the network's).
        network_fractions: (P, R) >= 0, the network's blind prediction from the neighbours.
        background: (P, E) float32, the smooth background, in the units of the input.
        residual: (P, E) float32, the free residual, in the units of the input (zeros if none).
        loss_history: (epochs,) mean training loss of each epoch.
        prior_std: (R + B,) standard deviation of the prior on each coefficient (NaN if no
            posterior was formed).
        network: the trained network (for :meth:`save_checkpoint`).
        settings: the settings used.
        energy: (E,) eV.
    """

    denoised: np.ndarray
    fractions: np.ndarray
    network_fractions: np.ndarray
    background: np.ndarray
    residual: np.ndarray
    loss_history: np.ndarray
    prior_std: np.ndarray
    network: DenoiseNetwork
    settings: DenoiseSettings
    energy: np.ndarray

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the trained network to ``path`` (torch format); :func:`denoise_stack` reads it
        back as ``checkpoint=`` to apply it (``epochs=0``) or fine-tune it on another stack."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "state_dict": self.network.state_dict(),
            "energy": torch.as_tensor(self.energy, dtype=torch.float64),
            "background_order": self.settings.background_order,
            "residual_components": self.settings.residual_components,
            "channels": self.settings.channels,
            "dilations": list(self.settings.dilations),
            "spatial": self.network.spatial,
        }
        temporary = path.with_name(path.name + ".partial")
        torch.save(payload, temporary)
        temporary.replace(path)
        return path


def _load_network(
    path: str | Path, energy: np.ndarray, references: np.ndarray
) -> tuple[DenoiseNetwork, dict]:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise DenoiseError(f"{path}: not a readable denoiser checkpoint ({type(error).__name__})") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DenoiseError(f"{path}: not a denoiser checkpoint (format {CHECKPOINT_FORMAT} expected)")
    saved_energy = payload["energy"].numpy()
    if saved_energy.shape != energy.shape or not np.allclose(saved_energy, energy, atol=1e-3):
        raise DenoiseError(
            f"{path}: trained on {saved_energy.size} energies "
            f"{saved_energy[0]:.1f}-{saved_energy[-1]:.1f} eV; this stack has {energy.size} energies "
            f"{energy[0]:.1f}-{energy[-1]:.1f} eV (put it on the same grid)"
        )
    state = payload["state_dict"]
    if tuple(state["references"].shape) != references.shape:
        raise DenoiseError(
            f"{path}: trained with {state['references'].shape[0]} references; {references.shape[0]} given"
        )
    network = DenoiseNetwork(
        references,
        background_basis(energy, payload["background_order"]),
        state["input_mean"].numpy(),
        state["input_scale"].numpy(),
        payload["residual_components"],
        payload["channels"],
        tuple(payload["dilations"]),
        payload["spatial"],
    )
    state = {**state, "references": torch.as_tensor(references, dtype=torch.float32)}
    network.load_state_dict(state)
    return network, payload


# --- the entry point ------------------------------------------------------------------------------


def denoise_stack(
    spectra: np.ndarray,
    energy: np.ndarray,
    references: np.ndarray,
    settings: DenoiseSettings | Mapping | None = None,
    checkpoint: str | Path | None = None,
    image_shape: tuple[int, int] | None = None,
) -> DenoiseResult:
    """Denoise a stack of pixel spectra by a network trained on the stack itself.

    Args:
        spectra: (P, E) mu or counts (``settings.input``), pixels in row-major image order when
            ``image_shape`` is given.
        energy: (E,) eV, strictly increasing.
        references: (R, E) reference spectra, in the units mu is given in (for counts: the units
            ``counts_per_unit`` refers to).
        settings: :class:`DenoiseSettings`, or a mapping of its fields; None for the defaults.
        checkpoint: a file written by :meth:`DenoiseResult.save_checkpoint`: its network is the
            starting point, trained ``settings.epochs`` more on this stack (0: applied as is). Its
            architecture settings replace those in ``settings``.
        image_shape: (ny, nx) with ny * nx = P, so that the network uses spatial neighbours;
            None: every pixel is denoised alone.

    Returns a :class:`DenoiseResult`. Raises :class:`DenoiseError` (a ``UserError``) for shapes that
    do not agree, values that are not finite, negative counts, or an unusable checkpoint.
    """
    settings = _as_settings(settings)
    spectra, energy, references = _checked_inputs(spectra, energy, references, settings, image_shape)
    scale = settings.counts_per_unit if settings.input == "counts" else 1.0
    mu = spectra / scale
    ny, nx = image_shape if image_shape is not None else (spectra.shape[0], 1)
    image = torch.as_tensor(mu.T.reshape(1, -1, ny, nx), dtype=torch.float32)
    observed = torch.as_tensor(spectra.T.reshape(1, -1, ny, nx), dtype=torch.float32)

    torch.manual_seed(settings.seed)
    if checkpoint is None:
        network = _new_network(mu, references, energy, settings, spatial=image_shape is not None)
    else:
        network, saved = _load_network(checkpoint, energy, references)
        settings = dataclasses.replace(
            settings,
            background_order=saved["background_order"],
            residual_components=saved["residual_components"],
            channels=saved["channels"],
            dilations=tuple(saved["dilations"]),
        )
    spatial = network.spatial
    if spatial != (image_shape is not None):
        raise DenoiseError(
            f"{checkpoint}: trained {'with' if spatial else 'without'} an image shape; "
            f"this stack {'has' if image_shape is not None else 'has no'} image_shape"
        )
    history = _train(network, image, observed, settings, spatial)
    network.eval()
    with torch.no_grad():
        prior = _blind_prediction(network, image, settings, spatial)
    return _result(network, prior, mu, references, energy, settings, history, spatial, scale)


def _as_settings(settings) -> DenoiseSettings:
    if settings is None:
        return DenoiseSettings()
    if isinstance(settings, DenoiseSettings):
        return settings
    if isinstance(settings, Mapping):
        return DenoiseSettings.from_mapping(settings)
    raise DenoiseError(
        f"denoise settings: {type(settings).__name__} given; a DenoiseSettings or a mapping is needed"
    )


def _checked_inputs(spectra, energy, references, settings, image_shape):
    spectra = np.asarray(spectra, dtype=np.float64)
    energy = np.asarray(energy, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    if spectra.ndim != 2 or energy.ndim != 1 or references.ndim != 2:
        raise DenoiseError(
            f"spectra {spectra.shape}, energy {energy.shape}, references {references.shape}: "
            "need (pixels, energies), (energies,) and (references, energies)"
        )
    if spectra.shape[1] != energy.size or references.shape[1] != energy.size:
        raise DenoiseError(
            f"spectra have {spectra.shape[1]} energies, references {references.shape[1]}, "
            f"energy {energy.size}; all three must agree"
        )
    for name, values in (("spectra", spectra), ("energy", energy), ("references", references)):
        if not np.all(np.isfinite(values)):
            bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            raise DenoiseError(f"{name}: {bad} values are NaN or infinite; all must be finite")
    if energy.size < 3 or np.any(np.diff(energy) <= 0):
        raise DenoiseError(f"energy: {energy.size} values; at least 3, strictly increasing, are needed")
    if settings.input == "counts" and spectra.min() < 0:
        raise DenoiseError(f"spectra: counts cannot be negative (smallest {spectra.min():.4g})")
    if image_shape is not None and (len(image_shape) != 2 or int(np.prod(image_shape)) != spectra.shape[0]):
        raise DenoiseError(f"image_shape {tuple(image_shape)} does not hold {spectra.shape[0]} pixels")
    return spectra, energy, references


def _new_network(mu, references, energy, settings, spatial) -> DenoiseNetwork:
    input_scale = mu.std(axis=0)
    input_scale = np.where(input_scale > 0, input_scale, 1.0)
    return DenoiseNetwork(
        references,
        background_basis(energy, settings.background_order),
        mu.mean(axis=0),
        input_scale,
        settings.residual_components,
        settings.channels,
        settings.dilations,
        spatial,
    )


# --- training --------------------------------------------------------------------------------------


def _box_mean(image: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over the pixels of a size x size box around every pixel that lie inside the image."""
    return functional.avg_pool2d(image, size, stride=1, padding=size // 2, count_include_pad=False)


def _neighbour_mean(image: torch.Tensor) -> torch.Tensor:
    """Mean of the (up to 8) neighbours of every pixel inside the image: what a hidden pixel shows.

    Padding by replication would put copies of an edge pixel among its own neighbours and leak
    its noise through the blind spot; zero padding with a count of the real neighbours does not.
    """
    sums = functional.avg_pool2d(image, 3, stride=1, padding=1, count_include_pad=True) * 9.0 - image
    ones = torch.ones_like(image[:, :1])
    counts = functional.avg_pool2d(ones, 3, stride=1, padding=1, count_include_pad=True) * 9.0 - 1.0
    return sums / counts


def _grid_mask(height: int, width: int, spacing: int, phase: tuple[int, int]) -> torch.Tensor:
    rows = (torch.arange(height) % spacing == phase[0])[:, None]
    columns = (torch.arange(width) % spacing == phase[1])[None, :]
    return (rows & columns)[None, None]


def _negative_log_likelihood(network, output, observed, settings) -> torch.Tensor:
    """Element-wise NLL of the observed spectra given the model (Poisson counts or Gaussian mu)."""
    if settings.input == "counts":
        rate = output["model"].clamp_min(MIN_RATE) * settings.counts_per_unit
        return functional.poisson_nll_loss(rate, observed, log_input=False, full=False, reduction="none")
    variance = network.log_variance.exp()[None, :, None, None].expand_as(observed)
    return functional.gaussian_nll_loss(output["model"], observed, variance, reduction="none")


def _loss(network, output, observed, hidden, settings) -> torch.Tensor:
    likelihood = _negative_log_likelihood(network, output, observed, settings)
    loss = (likelihood * hidden).sum() / hidden.sum().clamp_min(1)
    if settings.residual_components:
        loss = loss + settings.residual_weight * output["residual"].pow(2).mean()
    if settings.smoothness_weight:
        fractions = output["fractions"]
        roughness = (fractions[..., 1:, :] - fractions[..., :-1, :]).pow(2).mean() + (
            fractions[..., 1:] - fractions[..., :-1]
        ).pow(2).mean()
        loss = loss + settings.smoothness_weight * roughness
    return loss


def _spatial_batch(image, observed, settings, generator):
    """Random patches, each with its own grid of hidden pixels shown as their neighbours' mean."""
    _, _, height, width = image.shape
    size_y, size_x = min(settings.patch_size, height), min(settings.patch_size, width)
    inputs, targets, masks = [], [], []
    neighbours = _neighbour_mean(image)
    for _ in range(settings.batch_size):
        top = int(torch.randint(height - size_y + 1, (1,), generator=generator))
        left = int(torch.randint(width - size_x + 1, (1,), generator=generator))
        phase = tuple(int(v) for v in torch.randint(settings.mask_spacing, (2,), generator=generator))
        window = (slice(None), slice(None), slice(top, top + size_y), slice(left, left + size_x))
        mask = _grid_mask(size_y, size_x, settings.mask_spacing, phase)
        inputs.append(torch.where(mask, neighbours[window], image[window]))
        targets.append(observed[window])
        masks.append(mask.expand_as(observed[window]))
    return torch.cat(inputs), torch.cat(targets), torch.cat(masks)


def _spectral_batch(image, observed, network, settings, generator):
    """Random pixels, each with a random quarter of its energies hidden (shown as the stack mean)."""
    n_pixels = image.shape[2]
    count = min(n_pixels, settings.batch_size * settings.patch_size**2)
    chosen = torch.randperm(n_pixels, generator=generator)[:count]
    pixels, targets = image[:, :, chosen], observed[:, :, chosen]
    hidden = torch.rand(pixels.shape, generator=generator) < ENERGY_MASK_FRACTION
    mean = network.input_mean[None, :, None, None].expand_as(pixels)
    return torch.where(hidden, mean, pixels), targets, hidden


def _steps_per_epoch(image, settings, spatial) -> int:
    _, _, height, width = image.shape
    if spatial:
        scored_per_step = (
            settings.batch_size * min(settings.patch_size, height) * min(settings.patch_size, width)
        )
        scored_per_step /= settings.mask_spacing**2
        return max(1, math.ceil(height * width / scored_per_step))
    # Without neighbours an epoch is mask_spacing^2 draws of hidden energies for every pixel,
    # as many steps as a spatial epoch on an image that fits one batch.
    return (
        math.ceil(height / min(height, settings.batch_size * settings.patch_size**2))
        * settings.mask_spacing**2
    )


def _train(network, image, observed, settings, spatial) -> np.ndarray:
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    steps = _steps_per_epoch(image, settings, spatial)
    # Cosine decay: blind-spot gradients are noisy (one pixel in mask_spacing^2 is scored), and a
    # falling step size averages them out at the end of training.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, settings.epochs * steps))
    history = []
    network.train()
    for epoch in range(settings.epochs):
        total = 0.0
        for _ in range(steps):
            if spatial:
                inputs, targets, hidden = _spatial_batch(image, observed, settings, generator)
                output = network(inputs)
            else:
                inputs, targets, hidden = _spectral_batch(image, observed, network, settings, generator)
                output = network(inputs, visible=~hidden)
            loss = _loss(network, output, targets, hidden.float(), settings)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        history.append(total / steps)
        logger.debug("denoise epoch %d: loss %.5g", epoch, history[-1])
    if history:
        logger.info(
            "denoiser: %d epochs x %d steps, loss %.5g -> %.5g", len(history), steps, history[0], history[-1]
        )
    return np.asarray(history)


def _blind_prediction(network, image, settings, spatial) -> dict[str, torch.Tensor]:
    """The network's output where every pixel is predicted while hidden (J-invariant): one pass
    per mask phase, each pixel taken from the pass that hid it."""
    if not spatial:
        return network(image)
    _, _, height, width = image.shape
    neighbours = _neighbour_mean(image)
    combined: dict[str, torch.Tensor] = {}
    for row in range(settings.mask_spacing):
        for column in range(settings.mask_spacing):
            mask = _grid_mask(height, width, settings.mask_spacing, (row, column))
            output = network(torch.where(mask, neighbours, image))
            for key, value in output.items():
                combined[key] = torch.where(mask, value, combined[key]) if key in combined else value.clone()
    return combined


# --- the posterior ---------------------------------------------------------------------------------


def _pixels(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, ny, nx) -> (ny * nx, C) float64."""
    return tensor[0].detach().reshape(tensor.shape[1], -1).T.double().numpy()


def _noise_variance(mu: np.ndarray, model_mu: np.ndarray, design: np.ndarray, settings) -> np.ndarray:
    """Variance of each measured mu value (P, E).

    Counts: the Poisson variance rate / dose, the rate from the network's blind prediction.
    Mu: per energy, the mean square residual of the per-pixel least-squares fits (degrees of
    freedom corrected); the network's learned variance is not used, as the blind-spot loss makes
    it hold the prediction error as well as the noise.
    """
    if settings.input == "counts":
        floor = 0.5 / settings.counts_per_unit  # half a count: pixels predicted dark still carry noise
        return np.maximum(model_mu, floor) / settings.counts_per_unit
    fitted = mu @ np.linalg.pinv(design) @ design
    dof = max(1, design.shape[1] - design.shape[0])
    variance = np.mean((mu - fitted) ** 2, axis=0) * design.shape[1] / dof
    return np.broadcast_to(np.maximum(variance, np.finfo(float).tiny), mu.shape)


def posterior_coefficients(
    design: np.ndarray,
    measured: np.ndarray,
    noise_variance: np.ndarray,
    prior_mean: np.ndarray,
    n_nonnegative: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel posterior mode of linear coefficients under a Gaussian prior, the first
    ``n_nonnegative`` constrained to be >= 0.

    Args:
        design: (K, E) the functions the coefficients multiply (references, then background).
        measured: (P, E) measured spectra.
        noise_variance: (P, E) variance of each measured value.
        prior_mean: (P, K) the prior mean of every coefficient (the network's blind prediction).
        n_nonnegative: how many leading coefficients are fractions (>= 0).

    The prior variance per coefficient is the method-of-moments estimate over all pixels: the
    spread of (least-squares estimate - prior mean) less the mean least-squares variance, floored
    at :data:`MIN_PRIOR_VARIANCE`. Returns ``(coefficients (P, K), prior_variance (K,))``.
    """
    weights = 1.0 / noise_variance
    fisher = np.einsum("ke,pe,le->pkl", design, weights, design)
    projected = np.einsum("ke,pe->pk", design, weights * measured)
    covariance = np.linalg.inv(fisher)
    least_squares = np.einsum("pkl,pl->pk", covariance, projected)
    spread = np.mean((least_squares - prior_mean) ** 2, axis=0)
    prior_variance = np.maximum(
        spread - np.mean(np.diagonal(covariance, axis1=1, axis2=2), axis=0), MIN_PRIOR_VARIANCE
    )
    precision = fisher + np.diag(1.0 / prior_variance)
    right = projected + prior_mean / prior_variance
    # Minimising c' H c - 2 b' c is the least-squares problem |L' c - L^-1 b| with H = L L';
    # free coefficients enter nnls as a difference of two non-negative ones.
    cholesky = np.linalg.cholesky(precision)
    n_free = design.shape[0] - n_nonnegative
    coefficients = np.empty_like(prior_mean)
    for pixel in range(measured.shape[0]):
        upper = cholesky[pixel].T
        target = np.linalg.solve(cholesky[pixel], right[pixel])
        matrix = np.hstack([upper, -upper[:, n_nonnegative:]])
        solution, _ = nnls(matrix, target)
        coefficients[pixel] = solution[: design.shape[0]]
        coefficients[pixel, n_nonnegative:] -= solution[design.shape[0] :] if n_free else 0.0
    return coefficients, prior_variance


def _result(network, prior, mu, references, energy, settings, history, spatial, scale) -> DenoiseResult:
    network_fractions = _pixels(prior["fractions"])
    background = _pixels(prior["background"])
    residual = _pixels(prior["residual"])
    model = _pixels(prior["model"])
    n_refs = references.shape[0]
    prior_std = np.full(n_refs + network.n_background, np.nan)
    fractions = network_fractions
    if spatial and settings.posterior:
        basis = network.basis.double().numpy()
        design = np.vstack([references, basis])
        prior_mean = np.hstack([network_fractions, _pixels(prior["background_coefficients"])])
        coefficients, prior_variance = posterior_coefficients(
            design, mu - residual, _noise_variance(mu, model, design, settings), prior_mean, n_refs
        )
        fractions = coefficients[:, :n_refs]
        background = coefficients[:, n_refs:] @ basis
        model = fractions @ references + background + residual
        prior_std = np.sqrt(prior_variance)
    return DenoiseResult(
        denoised=(model * scale).astype(np.float32),
        fractions=fractions,
        network_fractions=network_fractions,
        background=(background * scale).astype(np.float32),
        residual=(residual * scale).astype(np.float32),
        loss_history=history,
        prior_std=prior_std,
        network=network,
        settings=settings,
        energy=energy,
    )
