"""Typed dataclass configs that are at once the CLI and the YAML.

Declare a config once::

    @dataclass
    class PretrainConfig:
        data: str = field(default="", metadata={"help": "packed token shards"})
        batch_size: int = field(default=8, metadata={"help": "sequences per micro-batch"})

and `config_command(PretrainConfig)` turns it into a typer command taking an optional YAML file and
one ``--flag`` per field (``batch_size`` -> ``--batch-size``; ``metadata={"short": "-o"}`` adds a short
form). Precedence: defaults < YAML < flags.
The resolved config is what the command receives, and `save_config` writes it next to the outputs so
every result can be reproduced from its folder.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from domainfm.core.errors import UserError

C = TypeVar("C")
_SCALARS = (str, int, float, bool, Path)


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Coerce a YAML value to the field's declared type; a mismatch is a one-line UserError."""
    if value is None:
        return None
    base = _unwrap_optional(tp)
    origin = typing.get_origin(base)
    try:
        if origin in (list, tuple):
            (inner, *_) = typing.get_args(base) or (str,)
            items = value if isinstance(value, list | tuple) else [value]
            out = [_coerce(v, inner, name) for v in items]
            return tuple(out) if origin is tuple else out
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base in _SCALARS:
            return base(value)
    except (TypeError, ValueError):
        raise UserError(f"config key {name!r}: cannot read {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def load_config(cls: type[C], yaml_path: str | Path | None = None, **overrides: Any) -> C:
    """Build `cls` from defaults, then the YAML file, then non-None `overrides` (the CLI flags)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if yaml_path is not None:
        p = Path(yaml_path)
        if not p.is_file():
            raise UserError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UserError(f"{p}: expected a mapping of config keys")
        for key, val in data.items():
            name = str(key).replace("-", "_")
            if name not in fields:
                raise UserError(f"{p}: unknown config key {key!r}; known: {', '.join(fields)}")
            values[name] = _coerce(val, _field_type(cls, fields[name]), name)
    for name, val in overrides.items():
        if val is not None:
            if name not in fields:
                raise UserError(f"unknown option {name!r}")
            values[name] = _coerce(val, _field_type(cls, fields[name]), name)
    return cls(**values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically) so the run can be reproduced from its folder."""
    from domainfm.core.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def config_command(cls: type[C], *, config_arg: bool = True,
                   positional: tuple[str, ...] = ()) -> Callable[[Callable[[C], Any]], Callable[..., Any]]:
    """Decorator: turn ``fn(cfg: cls)`` into a typer command with one option per dataclass field.

    `config_arg` adds an optional first argument CONFIG.yaml; `positional` names fields taken as
    positional arguments instead of options. Every option defaults to None, so only flags the user
    actually gave override the YAML.
    """
    import typer

    hints = typing.get_type_hints(cls)

    def decorate(fn: Callable[[C], Any]) -> Callable[..., Any]:
        params: list[inspect.Parameter] = []
        annotations: dict[str, Any] = {}
        if config_arg:
            params.append(inspect.Parameter(
                "config", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=typer.Argument(None, help="optional YAML config; flags override its keys",
                                       show_default=False)))
            annotations["config"] = Path | None
        for f in dataclasses.fields(cls):
            tp = _unwrap_optional(hints[f.name])
            help_text = f.metadata.get("help", "")
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.name in positional:
                info = typer.Argument(None, help=help_text, show_default=False)
            elif tp is bool:
                flag = f.name.replace("_", "-")
                info = typer.Option(None, f"--{flag}/--no-{flag}", help=f"{help_text} [default: {default}]",
                                    show_default=False)
            else:
                short = [f.metadata["short"]] if "short" in f.metadata else []  # e.g. "-o"
                info = typer.Option(None, f"--{f.name.replace('_', '-')}", *short,
                                    help=f"{help_text} [default: {default}]", show_default=False)
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY
                                            if f.name not in positional
                                            else inspect.Parameter.POSITIONAL_OR_KEYWORD, default=info))
            annotations[f.name] = tp | None
        # positional arguments must come first in the signature
        params.sort(key=lambda p: p.kind)

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            yaml_path = kwargs.pop("config", None) if config_arg else None
            cfg = load_config(cls, yaml_path, **kwargs)
            return fn(cfg)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = annotations
        del wrapper.__wrapped__  # typer must read our signature, not fn's
        return wrapper

    return decorate
