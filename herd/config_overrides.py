"""Stage configs from files and the command line: a YAML/JSON file plus `key=value` dotted overrides.

Builds any (nested) config dataclass, coercing strings to each field's type; unknown keys are user errors.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union

from herd.errors import HerdError

T = TypeVar("T")
NONE_WORDS = ("none", "null", "~")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """The `cls` config read from `path` (YAML or JSON; None: defaults) with `key=value` overrides on top.

    `optim.lr=3e-4` sets a nested field; `data.sources.web=/shards/web` sets a key of a dict field;
    values are coerced to the field's type (`none`/`null` for optional fields, JSON for lists and dicts).
    """
    data = read_config_file(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, overrides))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's mapping: `.json` as JSON, anything else as YAML (which also reads JSON)."""
    path = Path(path)
    if not path.is_file():
        raise HerdError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise HerdError(f"config file {path} is not valid JSON: {e}") from None
    else:
        try:
            import yaml
        except ImportError:
            raise HerdError(f"reading {path} needs PyYAML: pip install pyyaml (or write the config as .json)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise HerdError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HerdError(f"config file {path} must hold a mapping of option: value, got {type(data).__name__}")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of `data` with each `dotted.key=value` set (values stay strings; `from_dict` coerces them)."""
    out = json.loads(json.dumps(data, default=str))  # a deep copy that also turns Paths into strings
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HerdError(f"override {item!r} is not key=value; write e.g. optim.lr=3e-4")
        *parents, leaf = key.strip().split(".")
        node = out
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise HerdError(f"override {item!r}: {'.'.join(parents[: i + 1])} is a value, not a section")
            node = child
        node[leaf] = value
    return out


def from_dict(cls: type[T], data: Mapping[str, Any], *, base: T | None = None, where: str = "") -> T:
    """Build dataclass `cls` from `data` (fields of `base`, else the defaults, fill the rest)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise HerdError(
            f"unknown config key {where + unknown[0]!r}; valid keys{' in ' + where[:-1] if where else ''}: "
            f"{', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        current = getattr(base, name) if base is not None else _default(fields[name])
        kwargs[name] = coerce(value, hints[name], f"{where}{name}", current)
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str, current: Any = None) -> Any:
    """`value` (as read from a file or a string from the command line) as type `hint`; `key` names it in errors."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in NONE_WORDS)):
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(value, option, key, current)
            except HerdError as e:
                errors.append(str(e))
        raise HerdError(errors[0] if len(errors) == 1 else f"config key {key!r}: cannot read {value!r} as {hint}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise HerdError(f"config key {key!r} is a section; set its fields, e.g. {key}.<field>=...")
        base = current if isinstance(current, hint) else None
        return from_dict(hint, value, base=base, where=key + ".")
    if origin in (dict, Mapping):
        key_type, value_type = args or (str, Any)
        value = _parsed(value, dict, key)
        merged = dict(current) if isinstance(current, dict) and isinstance(value, dict) else {}
        for k, v in value.items():
            merged[coerce(k, key_type, f"{key}.{k}")] = coerce(v, value_type, f"{key}.{k}", merged.get(k))
        return merged
    if origin in (list, Sequence, tuple):
        value = _parsed(value, list, key)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise HerdError(f"config key {key!r} takes {len(args)} values, got {len(value)}")
            return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise HerdError(f"config key {key!r} must be one of {', '.join(map(str, args))}; got {value!r}")
    return _scalar(value, hint, key)


def _scalar(value: Any, hint: Any, key: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in TRUE_WORDS + FALSE_WORDS:
            return value.lower() in TRUE_WORDS
    elif hint in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = int(value)
            except ValueError:
                try:
                    number = float(value)  # 3e-4, or 1e6 for an int
                except ValueError:
                    number = None
        is_number = isinstance(number, (int, float)) and not isinstance(number, bool)
        if is_number and (hint is float or float(number).is_integer()):
            return hint(number)
    elif hint in (str, Path):
        if isinstance(value, (str, Path)):
            return hint(value)
    else:
        raise TypeError(f"config key {key!r} has a type ({hint}) that config files cannot set")
    raise HerdError(f"config key {key!r} takes a {getattr(hint, '__name__', hint)}, got {value!r}")


def _parsed(value: Any, kind: type, key: str) -> Any:
    """A list or dict given inline on the command line as JSON."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if kind is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, kind):
        example = '["a", "b"]' if kind is list else '{"a": 1}'
        raise HerdError(f"config key {key!r} takes a {kind.__name__} (JSON on the command line: {key}='{example}')")
    return value


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (Paths as strings), the inverse of `from_dict`."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
