"""Config from a YAML recipe plus ``key=value`` overrides, into a typed dataclass.

Dotted keys reach nested fields (``tiny.lm_hidden=128``, ``tasks.shapes=2``) and change only
that entry; a key given a whole value replaces the recipe's (``tasks={shapes: 1}`` trains on
shapes alone, ``token_weights={}`` clears them). Values are read as YAML (``steps=100`` is an int,
``trainable=[lm]`` a list), with YAML 1.2's booleans: only true/false, so
``token_weights={yes: 5}`` keeps the word "yes" (YAML 1.1 would make it True).
Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Sequence, TypeVar, get_type_hints

import yaml

from vrm import VrmError

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans (true/false, any case), not 1.1's
    yes/no/on/off."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def read_yaml(text: str) -> Any:
    """Parse YAML text with `_Loader` (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_Loader)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``.

    >>> parse_overrides(["steps=10", "tiny.lm_hidden=64", "tasks={shapes: 1}"])
    {'steps': 10, 'tiny': {'lm_hidden': 64}, 'tasks': {'shapes': 1}}
    """
    return with_overrides({}, items)


def _split(item: str) -> list[Any]:
    """``"a.b=1"`` -> ``["a", "b", 1]``: the dotted key's parts, then the value read as YAML."""
    if "=" not in item:
        raise VrmError(f"expected key=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = read_yaml(raw)
    except yaml.YAMLError:
        value = raw
    return [*key.strip().split("."), value]


def with_overrides(values: dict[str, Any], items: Sequence[str]) -> dict[str, Any]:
    """``values`` with each ``key=value`` of ``items`` set at its dotted path, in order: the value
    replaces what was there (a dict too), the entries beside it stay.

    >>> with_overrides({"tasks": {"a": 1, "b": 2}, "w": {"yes": 5}}, ["tasks.a=3", "w={}"])
    {'tasks': {'a': 3, 'b': 2}, 'w': {}}
    """
    out = dict(values)
    for item in items:
        *parents, last, value = _split(item)
        node = out
        for p in parents:
            node[p] = dict(node[p]) if isinstance(node.get(p), dict) else {}
            node = node[p]
        node[last] = value
    return out


def coerce(value: Any, hint: Any, name: str) -> Any:
    """YAML reads ``3e-3`` as text and ``1`` as an int: convert to the field's scalar type."""
    try:
        if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            return float(value)
        if hint is int and isinstance(value, str):
            return int(value)
        if hint is bool and not isinstance(value, bool):
            raise VrmError(f"option {name!r} must be true or false, got {value!r}")
    except ValueError:
        raise VrmError(f"option {name!r} must be a number, got {value!r}") from None
    return value


def build(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Instantiate dataclass ``cls`` from a dict, nested dataclasses included, with clear errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    unknown = set(values) - set(fields)
    if unknown:
        raise VrmError(f"unknown option(s) {sorted(unknown)}{where}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = build(type(default), {**dataclasses.asdict(default), **value}, f" in {name}")
        kwargs[name] = coerce(value, hints.get(name), name)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise VrmError(f"bad config{where}: {e}") from None


def recipe_has(recipe: str | Path, section: str) -> bool:
    """Whether the YAML recipe has a top-level ``section`` (a missing or bad file: False; loading
    it reports the error)."""
    try:
        data = read_yaml(Path(recipe).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and section in data


def load_config(cls: type[T], recipe: str | Path | None, section: str | None, overrides: Sequence[str] = ()) -> T:
    """Defaults of ``cls`` <- ``recipe[section]`` <- ``overrides``."""
    values: dict[str, Any] = {}
    if recipe:
        path = Path(recipe)
        if not path.is_file():
            raise VrmError(f"{path}: recipe not found")
        try:
            data = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise VrmError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if section:
            if section not in data:
                raise VrmError(f"{path}: no '{section}' section (has: {', '.join(data)})")
            data = data[section] or {}
        values = data
    return build(cls, with_overrides(values, overrides))
