"""Method configs from YAML: ``--config file.yaml`` overrides fields of the method's ``Config``.

The YAML is a mapping of config field names to values, e.g. for AMR::

    lr: 1.0e-3
    epochs: 10
    mask_ratio: 0.9

An optional ``trainer:`` mapping sets engine options (:class:`~fastskel.engine.trainer.TrainOptions`,
e.g. ``clip_grad``, ``checkpoint_every``). Unknown keys are an error that lists the valid ones.
Values are checked against the type of each field's default (an int is accepted for a float,
``"1e-3"`` — YAML 1.1 reads it as a string — is converted, a list becomes a tuple).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["load_yaml", "apply_overrides", "config_to_dict", "graph_value", "split_trainer_section"]


def load_yaml(path) -> Dict[str, Any]:
    """A YAML mapping from ``path`` (empty file → ``{}``); clear errors for a missing file, a YAML
    syntax error (with the line) or a document that is not a mapping."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config: no such file: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config: {p} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config: {p} must hold a mapping of field: value, got a {type(data).__name__}")
    return data


def graph_value(value: Any, where: str = "config") -> Any:
    """A ``graph`` field's value in checkpoint-safe form: a built-in name stays a string; a
    :class:`~fastskel.graph.SkeletonGraph`, a mapping or a YAML/JSON file becomes the graph's plain
    dict (:meth:`~fastskel.graph.SkeletonGraph.to_dict`), so no object is ever pickled."""
    from fastskel.graph import SkeletonGraph

    if isinstance(value, SkeletonGraph):
        return value.to_dict()
    if isinstance(value, Mapping):
        return SkeletonGraph.from_dict(value, source=f"{where}: graph").to_dict()
    if isinstance(value, (str, Path)):
        value = str(value)
        if value == "" or value in SkeletonGraph.builtin_names():  # "" = graph-free (AMR, MAMP)
            return value
        return SkeletonGraph.get(value).to_dict()
    raise ValueError(f"{where}: field 'graph' expects a built-in name {list(SkeletonGraph.builtin_names())}, "
                     f"a .yaml/.json file or a mapping {{edges: [...], center: ...}}, got {value!r}")


def _coerce(name: str, value: Any, default: Any, where: str) -> Any:
    if name == "graph":
        return graph_value(value, where) if value is not None else value
    if default is None or value is None:
        return value
    t = type(default)
    bad = ValueError(f"{where}: field {name!r} expects a {t.__name__} (default {default!r}), got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
        return value
    if isinstance(default, float):
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (list, tuple)):
            raise bad
        if default and len(value) == len(default):
            value = [_coerce(f"{name}[{i}]", v, d, where) for i, (v, d) in enumerate(zip(value, default))]
        return _nested(value, tuple) if isinstance(default, tuple) else list(value)
    return value


def _nested(v: Any, kind=tuple) -> Any:
    """Lists (as YAML gives them) → tuples, recursively."""
    if isinstance(v, (list, tuple)):
        return kind(_nested(x, kind) for x in v)
    return v


def apply_overrides(cfg, overrides: Optional[Mapping[str, Any]], where: str = "config"):
    """A copy of dataclass ``cfg`` with ``overrides`` applied (unknown keys → ``ValueError`` listing
    the valid field names)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"cfg: expected a dataclass instance, got {type(cfg).__name__}")
    if not overrides:
        return cfg
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {type(cfg).__name__}; "
                         f"valid keys: {sorted(fields)}")
    new = {k: _coerce(k, v, getattr(cfg, k), where) for k, v in overrides.items()}
    return dataclasses.replace(cfg, **new)


def config_to_dict(cfg) -> Dict[str, Any]:
    """A dataclass config as a plain dict (tuples kept) for checkpoints and logs."""
    out = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if out.get("graph") is not None and not isinstance(out["graph"], str):
        out["graph"] = graph_value(out["graph"])
    return out


def split_trainer_section(data: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(method_overrides, trainer_overrides)`` from a loaded YAML mapping."""
    data = dict(data)
    trainer = data.pop("trainer", None) or {}
    if not isinstance(trainer, dict):
        raise ValueError(f"config: 'trainer' must be a mapping of option: value, got {trainer!r}")
    return data, trainer
