"""Typed configs: strict pydantic models, YAML in, errors that name the file, line, key and fix.

Each runner's config class lives beside its runner (`TrainConfig` in train/config.py, `DecodeConfig` in
inference/config.py, ...). This module holds the shared base and the YAML loader.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from safecls.errors import ConfigError


class StrictModel(BaseModel):
    """A typo'd key is an error, never ignored; configs are values (frozen)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


C = TypeVar("C", bound=BaseModel)


class _LineLoader(yaml.SafeLoader):
    """Keeps the line of each mapping key, so errors can point at it."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = loader.construct_mapping(node, deep=deep)
    lines = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        lines[key] = key_node.start_mark.line + 1
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(obj: Any, path: tuple = (), out: dict | None = None) -> tuple[Any, dict]:
    out = {} if out is None else out
    if isinstance(obj, dict):
        lines = obj.pop("__lines__", {})
        for k, ln in lines.items():
            out[path + (k,)] = ln
        return {k: _strip_lines(v, path + (k,), out)[0] for k, v in obj.items()}, out
    if isinstance(obj, list):
        return [_strip_lines(v, path + (i,), out)[0] for i, v in enumerate(obj)], out
    return obj, out


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text) if text.strip() else ""


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """`a.b=1` style overrides; values are parsed as YAML scalars."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lora.r=8")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p} is not a section")
        node[parts[-1]] = _parse_value(value)
    return data


def format_validation_error(err: ValidationError, cls: type[BaseModel], source: str, lines: dict) -> str:
    msgs = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(map(str, loc)) or "(top level)"
        line = lines.get(loc)
        where = f"{source}:{line}" if line else source
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(cls, loc[:-1])
            near = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            msgs.append(f"{where}: {key}: unknown key{hint} valid keys here: {', '.join(valid)}")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            msgs.append(f"{where}: {key}: {e['msg']}{got_s}")
    return "\n".join(msgs)


def _valid_keys(cls: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = cls
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), ann)
    return sorted(getattr(model, "model_fields", {}))


def validate(cls: type[C], data: dict, *, source: str = "config", lines: dict | None = None) -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, cls, source, lines or {})) from None


def load_config(path: str | Path, cls: type[C], overrides: list[str] | None = None) -> C:
    """Read YAML into `cls`, apply `--set` overrides, and raise ConfigError before any model loads."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    data, lines = _strip_lines(raw)
    data = apply_overrides(data, overrides)
    return validate(cls, data, source=str(path), lines=lines)


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def add_field_flags(parser: Any, cls: type[BaseModel], names: list[str], *, dest_prefix: str = "") -> None:
    """One `--flag-name` per config field, its help the field's description and default: a field is documented once,
    on its class. Every flag defaults to "not given" (None), so `given_fields` passes on only what the user set and the
    class's own defaults apply to the rest."""
    import types
    import typing

    for name in names:
        field = cls.model_fields[name]
        ann = field.annotation
        optional = typing.get_origin(ann) in (typing.Union, types.UnionType)
        base = next(a for a in typing.get_args(ann) if a is not type(None)) if optional else ann
        default = field.get_default(call_default_factory=True)
        text = (field.description or "") + (f" (default: {default})" if default not in (None, "", []) else "")
        flag, dest = "--" + name.replace("_", "-"), dest_prefix + name
        if base is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif typing.get_origin(base) is typing.Literal:
            parser.add_argument(flag, dest=dest, choices=list(typing.get_args(base)), default=None, help=text)
        elif typing.get_origin(base) is list:
            parser.add_argument(flag, dest=dest, action="append", default=None, help=text)
        else:
            parser.add_argument(flag, dest=dest, type=base, default=None, help=text)


def given_fields(args: Any, names: list[str], *, dest_prefix: str = "") -> dict[str, Any]:
    """The fields of `add_field_flags` the user gave on the command line."""
    return {n: v for n in names if (v := getattr(args, dest_prefix + n, None)) is not None}
