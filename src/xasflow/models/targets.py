"""What a model predicts: targets named in config from the dataset's label variables.

A target is one dataset variable (``coordination_number``, ``partial_cn``, ``shell_cn``, ``rdf``,
``partial_rdf``, ``valence``, ``local_composition``, ``grain_boundary``, ``surface``), with the
neighbour element or the shell that selects one slice of it where the variable has such a
dimension, and a kind that decides the head and the loss:

``regression``      one number per spectrum; standardized, mean squared error
``curve``           a g(r) curve per spectrum; centred on the training mean, mean squared error
``classification``  one class per spectrum (e.g. the Si valence 0..4); cross-entropy
``probability``     a 0/1 outcome (e.g. grain-boundary site) predicted as a probability; binary
                    cross-entropy

In config, a target is a variable name (its default kind, e.g. ``rdf``) or a mapping::

    targets:
      - {variable: partial_cn, element: Pt}            # name partial_cn_Pt, regression
      - {variable: valence, kind: classification}      # name valence
      - {variable: shell_cn, shell: 1, weight: 0.5}    # name shell_cn_1 (1-based)

Values a system does not define (valence -1, NaN) are left out of that target's loss and metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from xasflow.errors import UserError

TARGET_KINDS = ("regression", "curve", "classification", "probability")

# the label variables a target may read, with their default kind and the dimension (if any)
# that ``element`` or ``shell`` selects
VARIABLES: dict[str, tuple[str, str | None]] = {
    "coordination_number": ("regression", None),
    "partial_cn": ("regression", "element"),
    "local_composition": ("regression", "element"),
    "shell_cn": ("regression", "shell"),
    "rdf": ("curve", None),
    "partial_rdf": ("curve", "element"),
    "valence": ("classification", None),
    "grain_boundary": ("probability", None),
    "surface": ("probability", None),
}

DEFAULT_TARGETS = ("coordination_number", "rdf")

# which kinds a variable may be read as: a number may be a class (valence) or a regression
# (valence as a number); a 0/1 flag may be regressed as a fraction; curves stay curves
_ALLOWED_KINDS = {
    "regression": ("regression", "classification"),
    "curve": ("curve",),
    "classification": ("classification", "regression"),
    "probability": ("probability", "regression"),
}

UNITS = {
    "coordination_number": "atoms (first shell)",
    "partial_cn": "atoms of the element in the first shell",
    "local_composition": "fraction of the first shell",
    "shell_cn": "atoms in the shell",
    "rdf": "g(r), dimensionless, r in Angstrom",
    "partial_rdf": "g(r) towards the element, dimensionless, r in Angstrom",
    "valence": "ligand neighbours",
    "grain_boundary": "probability of a grain-boundary site",
    "surface": "probability of a surface site",
}


@dataclass(frozen=True)
class TargetSpec:
    """One predicted quantity.

    name:      unique among a model's targets; column and head name.
    variable:  the dataset variable it reads (a key of :data:`VARIABLES`).
    kind:      one of :data:`TARGET_KINDS`.
    element:   neighbour element, for variables with an ``element`` dimension.
    shell:     1-based coordination shell, for ``shell_cn``.
    weight:    weight of its loss in the total loss.
    """

    name: str
    variable: str
    kind: str
    element: str | None = None
    shell: int | None = None
    weight: float = 1.0

    @property
    def is_curve(self) -> bool:
        return self.kind == "curve"

    @property
    def units(self) -> str:
        return UNITS[self.variable]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _default_name(variable: str, element: str | None, shell: int | None, kind: str) -> str:
    name = variable
    if element is not None:
        name += f"_{element}"
    if shell is not None:
        name += f"_{shell}"
    if kind != VARIABLES[variable][0]:
        name += f"_{kind}"
    return name


def parse_target(entry: str | Mapping[str, Any]) -> TargetSpec:
    """A :class:`TargetSpec` from a config entry (a variable name or a mapping); ``UserError``
    naming the entry when it is not valid."""
    mapping = {"variable": entry} if isinstance(entry, str) else dict(entry)
    unknown = sorted(set(mapping) - {"name", "variable", "kind", "element", "shell", "weight"})
    if unknown:
        raise UserError(f"target {entry!r}: unknown key(s) {', '.join(unknown)}")
    variable = mapping.get("variable")
    if variable not in VARIABLES:
        raise UserError(
            f"target {entry!r}: variable {variable!r} is not a label; valid: {', '.join(VARIABLES)}"
        )
    default_kind, dimension = VARIABLES[variable]
    kind = mapping.get("kind", default_kind)
    if kind not in _ALLOWED_KINDS[default_kind]:
        valid = ", ".join(_ALLOWED_KINDS[default_kind])
        raise UserError(f"target {entry!r}: {variable} cannot be read as {kind!r}; valid: {valid}")
    element, shell = mapping.get("element"), mapping.get("shell")
    if (dimension == "element") != (element is not None):
        raise UserError(
            f"target {entry!r}: {variable} {'needs' if dimension == 'element' else 'takes no'} element"
        )
    if (dimension == "shell") != (shell is not None):
        raise UserError(
            f"target {entry!r}: {variable} {'needs' if dimension == 'shell' else 'takes no'} shell"
        )
    if shell is not None and (not isinstance(shell, int) or shell < 1):
        raise UserError(f"target {entry!r}: shell is {shell!r}; valid: 1, 2, ... (1 = first shell)")
    weight = float(mapping.get("weight", 1.0))
    if not weight > 0 or not np.isfinite(weight):
        raise UserError(f"target {entry!r}: weight is {weight}; it must be a positive number")
    name = str(mapping.get("name") or _default_name(variable, element, shell, kind))
    return TargetSpec(name, variable, kind, element, shell, weight)


def parse_targets(entries: Iterable[str | Mapping[str, Any]] | None) -> tuple[TargetSpec, ...]:
    """Every target of a model (``DEFAULT_TARGETS`` when ``entries`` is empty or None)."""
    specs = tuple(parse_target(entry) for entry in (entries or DEFAULT_TARGETS))
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"targets: name(s) {', '.join(repeated)} repeated; give each a distinct 'name'")
    return specs


def target_values(dataset, spec: TargetSpec, source: str = "dataset") -> np.ndarray:
    """The values of ``spec`` for every spectrum of an xarray ``dataset``: (n,) or (n, n_r) float
    (classification and probability targets as their integer values in a float array; undefined
    values are NaN). ``UserError`` naming ``source`` if the dataset lacks the variable, element
    or shell."""
    if spec.variable not in dataset:
        raise UserError(f"{source}: has no label {spec.variable!r} (target {spec.name})")
    variable = dataset[spec.variable]
    if spec.element is not None:
        elements = [str(value) for value in dataset["element"].values.tolist()]
        if spec.element not in elements:
            raise UserError(
                f"{source}: target {spec.name} names element {spec.element!r}; "
                f"the dataset has {', '.join(elements)}"
            )
        variable = variable.isel(element=elements.index(spec.element))
    if spec.shell is not None:
        n_shells = variable.sizes["shell"]
        if spec.shell > n_shells:
            raise UserError(
                f"{source}: target {spec.name} names shell {spec.shell}; the dataset has {n_shells}"
            )
        variable = variable.isel(shell=spec.shell - 1)
    values = np.asarray(variable.values, dtype=np.float64)
    if spec.variable == "valence":
        values = np.where(values < 0, np.nan, values)  # -1: valence undefined for this absorber
    return values


@dataclass(frozen=True, eq=False)  # arrays: no field-wise ==
class TargetScale:
    """Training statistics of one target, mapping values to network space and back.

    regression: ``mean``/``std`` (z-score); curve: ``mean`` (n_r,) (centred only, so the loss
    stays in g(r) units); classification: ``classes`` (the training values, sorted); probability:
    nothing.
    """

    kind: str
    mean: np.ndarray | float = 0.0
    std: float = 1.0
    classes: tuple[int, ...] = ()

    @classmethod
    def fit(cls, kind: str, values: np.ndarray) -> TargetScale:
        values = np.asarray(values, dtype=np.float64)
        defined = (
            values[np.isfinite(values).all(axis=tuple(range(1, values.ndim)))] if values.size else values
        )
        if kind == "regression":
            std = float(defined.std()) if defined.size else 1.0
            return cls(kind, float(defined.mean()) if defined.size else 0.0, std if std > 1e-8 else 1.0)
        if kind == "curve":
            return cls(kind, defined.mean(axis=0) if len(defined) else np.zeros(values.shape[1]))
        if kind == "classification":
            return cls(kind, classes=tuple(sorted({int(round(value)) for value in defined})))
        return cls(kind)

    @property
    def output_size(self) -> int:
        """Width of the network head: 1, n_r or the number of classes."""
        if self.kind == "curve":
            return int(np.asarray(self.mean).size)
        if self.kind == "classification":
            return max(len(self.classes), 1)
        return 1

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Physical values (n,) or (n, n_r) -> float32 network targets; undefined -> NaN (class
        index -1 for classes not seen in training)."""
        values = np.asarray(values, dtype=np.float64)
        if self.kind == "regression":
            return ((values - float(self.mean)) / self.std).astype(np.float32)
        if self.kind == "curve":
            return (values - np.asarray(self.mean)).astype(np.float32)
        if self.kind == "classification":
            index = {value: position for position, value in enumerate(self.classes)}
            return np.array(
                [index.get(int(round(value)), -1) if np.isfinite(value) else -1 for value in values],
                dtype=np.float32,
            )
        return values.astype(np.float32)

    def decode(self, output: np.ndarray) -> np.ndarray:
        """Head output -> physical values: a number, a g(r), class probabilities (n, k) or a
        probability (n,)."""
        output = np.asarray(output, dtype=np.float64)
        if self.kind == "regression":
            return output * self.std + float(self.mean)
        if self.kind == "curve":
            return output + np.asarray(self.mean)
        if self.kind == "classification":
            shifted = np.exp(output - output.max(axis=-1, keepdims=True))
            return shifted / shifted.sum(axis=-1, keepdims=True)
        return 0.5 * (1.0 + np.tanh(0.5 * output))  # the logistic function, without overflow

    def to_dict(self) -> dict[str, Any]:
        mean = np.asarray(self.mean, dtype=np.float64)
        return {
            "kind": self.kind,
            "mean": mean.tolist() if mean.ndim else float(mean),
            "std": float(self.std),
            "classes": [int(value) for value in self.classes],
        }

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> TargetScale:
        mean = mapping.get("mean", 0.0)
        return cls(
            kind=str(mapping["kind"]),
            mean=np.asarray(mean, dtype=np.float64) if isinstance(mean, list) else float(mean),
            std=float(mapping.get("std", 1.0)),
            classes=tuple(int(value) for value in mapping.get("classes", ())),
        )


def specs_from_dicts(entries: Sequence[Mapping[str, Any]]) -> tuple[TargetSpec, ...]:
    """The specs stored in a checkpoint (``TargetSpec.to_dict`` of each)."""
    return tuple(TargetSpec(**dict(entry)) for entry in entries)
