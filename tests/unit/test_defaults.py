"""Defaults live in the schema; a parameter class that keeps its own (for library callers who
build it in Python) must agree with the schema, key by key."""

from __future__ import annotations

import dataclasses

import pytest

from xasflow.config import load_schema
from xasflow.inference.pseudo import PseudoExperimentParams
from xasflow.models.augment import AugmentationParams
from xasflow.spectra.feff import FeffParams
from xasflow.structures.labels import LabelParams

SCHEMA = load_schema()["properties"]
# schema key -> class field, where the two are spelt differently
RENAMED = {"feff_dialect": "dialect"}


def _class_default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _comparable(value):
    if isinstance(value, tuple):
        return [_comparable(item) for item in value]
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    return value


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        (SCHEMA["labels"], LabelParams),
        (SCHEMA["spectra"], FeffParams),
        (SCHEMA["training"]["properties"]["augmentation"], AugmentationParams),
        (SCHEMA["inference"]["properties"]["pseudo_experiment"], PseudoExperimentParams),
    ],
    ids=["labels", "spectra", "augmentation", "pseudo_experiment"],
)
def test_class_defaults_agree_with_the_schema(section, cls):
    fields = {field.name: field for field in dataclasses.fields(cls)}
    compared = 0
    for key, entry in section["properties"].items():
        name = RENAMED.get(key, key)
        if "default" not in entry or name not in fields:
            continue
        default = _class_default(fields[name])
        if default is dataclasses.MISSING:
            continue
        expected = entry["default"]
        if isinstance(default, tuple) and isinstance(expected, dict):  # pair_cutoffs: mapping vs pairs
            expected = [[list(key.split("-")), value] for key, value in expected.items()]
        assert _comparable(default) == expected, (
            f"{cls.__name__}.{name}: class {default!r}, schema {expected!r}"
        )
        compared += 1
    assert compared >= 3  # every section here has at least three defaults
