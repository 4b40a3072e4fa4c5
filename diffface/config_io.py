"""Dataclass configs from YAML files and ``--set key=value`` overrides: one implementation for every job.

:class:`YamlConfig` gives a (nested) dataclass ``from_dict``, ``from_yaml`` and ``with_overrides``:
unknown keys and values of the wrong type raise a ``ValueError`` that names the key (and the file),
nested dataclasses update recursively, and tuples accept comma-separated strings.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Settings(YamlConfig):
    ...     rounds: int = 3
    ...     norm: str = "l21"
    >>> Settings().with_overrides(["rounds=5"]).rounds
    5
"""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import yaml


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 does: ``1e-3`` is a float (YAML 1.1, PyYAML's
    default, needs a dot and a signed exponent, ``1.0e-3``, and reads ``1e-3`` as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str):
    """YAML ``text`` parsed safely, numbers as in YAML 1.2 (:class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


def read_yaml_mapping(path: str | Path) -> dict:
    """The mapping in a YAML file (an empty file is ``{}``); a missing file, bad YAML or a non-mapping
    raise an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        mapping = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: a config file must hold a mapping, got {type(mapping).__name__}")
    return mapping


def parse_overrides(overrides: Sequence[str], example: str = "key=value") -> list[dict]:
    """``key=value`` items with dotted keys as nested mappings (values parsed as YAML scalars or lists)."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value (e.g. {example})")
        try:
            nested: Any = load_yaml(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({str(exc).splitlines()[0]})") from exc
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        parsed.append(nested)
    return parsed


def plain(value):
    """Tuples to lists, paths to strings, recursively (for YAML and JSON)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def coerce_setting(value, current, key: str):
    """``value`` as the type of the field's current value, or a ``ValueError`` naming the key."""
    if current is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(current, str):
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if isinstance(current, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return tuple(value)
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return {**current, **value}
    return value


def field_values(obj) -> dict:
    """A dataclass's fields as ``{name: value}`` (one level: nested dataclasses stay objects)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def typed_changes(current: dict, mapping: dict, prefix: str = "", build: bool = True) -> dict:
    """``mapping``'s entries as the types of ``current``'s values (a dataclass's :func:`field_values`); a
    nested dataclass is updated recursively (``build=False``: only checked, its entry left as the checked
    mapping, so that nothing is constructed and no dataclass's own checks run). Unknown keys and wrong types
    raise ``ValueError`` naming the key."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {mapping!r}")
    changes = {}
    for key, value in mapping.items():
        if key not in current:
            raise ValueError(f"unknown config key {prefix + str(key)!r}; {prefix.rstrip('.') or 'the config'} "
                             f"has {', '.join(current)}")
        if is_dataclass(current[key]):
            changes[key] = (update_dataclass(current[key], value, f"{prefix}{key}.") if build else
                            typed_changes(field_values(current[key]), value, f"{prefix}{key}.", build=False))
        else:
            changes[key] = coerce_setting(value, current[key], prefix + key)
    return changes


def merge_mappings(base: dict, update: dict) -> dict:
    """``base`` with ``update``'s entries, nested mappings merged key by key (``update`` wins)."""
    merged = dict(base)
    for key, value in update.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge_mappings(merged[key], value) if both else value
    return merged


def update_dataclass(obj, mapping: dict, prefix: str = ""):
    """A copy of dataclass ``obj`` with the fields in ``mapping`` set (nested dataclasses recursively)."""
    return _replace(obj, typed_changes(field_values(obj), mapping, prefix), prefix)


def _replace(obj, changes: dict, prefix: str = ""):
    try:
        return replace(obj, **changes)
    except TypeError as exc:
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: {exc}") from exc


class YamlConfig:
    """Mixin for dataclass configs: ``from_dict``, ``from_yaml``, ``with_overrides``, ``updated`` and
    ``layered``, one mechanism for every job's settings (fit, build-dataset, train, demo)."""

    @classmethod
    def from_dict(cls, mapping: dict, base=None):
        """``base`` (default: the defaults) updated from a nested mapping; unknown keys raise ``ValueError``."""
        return (base if base is not None else cls()).updated(mapping)

    @classmethod
    def from_yaml(cls, path: str | Path, base=None):
        """``base`` updated from a YAML file; errors name the file."""
        return (base if base is not None else cls()).updated(read_yaml_mapping(path), str(path))

    def with_overrides(self, overrides: Sequence[str]):
        """Apply ``key=value`` items with dotted keys (``texture.norm=l1``); values parsed as YAML."""
        return self.layered([(nested, "--set") for nested in parse_overrides(overrides)])

    def updated(self, changes: dict, source: str = ""):
        """A copy with ``changes`` (a nested mapping) applied; errors name ``source`` and the key."""
        return self.layered([(changes, source)])

    def layered(self, layers: Sequence[tuple[dict, str]]):
        """A copy with each ``(changes, source)`` applied in turn (later layers win: defaults < file < options <
        ``--set``), checked as a whole at the end, so a setting that needs another may get it from any layer.
        Unknown keys and wrong types raise ``ValueError`` naming the layer's source and the key."""
        values, merged = field_values(self), {}
        for changes, source in layers:  # each layer's keys and types, checked against the config's own
            try:
                typed_changes(values, changes, build=False)
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}" if source else str(exc)) from exc
            merged = merge_mappings(merged, changes)
        return _replace(self, {**values, **typed_changes(values, merged)})
