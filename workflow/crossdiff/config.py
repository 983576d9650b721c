"""Configuration: JSON-schema validation that fills defaults everywhere and names bad keys.

``validate(config)`` checks a config dict against workflow/schemas/config.schema.yaml, fills in every
default (also inside per-dataset entries and the branch of a ``oneOf`` that matches), and raises
CrossdiffError naming the key path and what was expected.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from crossdiff.errors import CrossdiffError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def deep_merge(*layers):
    """Layers of settings merged into one, later layers winning: mappings merge key by key at every depth,
    anything else (lists, scalars, ``None``) replaces what an earlier layer had. A layer that is ``None``
    (a section the config leaves out) is skipped. The inputs are not modified.

    >>> deep_merge({"lora": {"r": 16, "alpha": 64}}, None, {"lora": {"r": 32}})
    {'lora': {'r': 32, 'alpha': 64}}
    """
    out: dict = {}
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise TypeError(f"deep_merge: expected mappings, got {type(layer).__name__}")
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def load_schema(path: Path | None = None) -> dict:
    return yaml.safe_load(Path(path or SCHEMA_PATH).read_text())


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


def _fill(instance, schema: dict, root: dict):
    """Fill defaults into ``instance`` following ``schema`` (after it has been validated)."""
    schema = _resolve(schema, root)
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [_fill(x, schema["items"], root) for x in instance]
    if not isinstance(instance, dict):
        return instance
    for branch in schema.get("oneOf", []):
        branch = _resolve(branch, root)
        if jsonschema.Draft7Validator({**branch, "definitions": root.get("definitions", {})}).is_valid(instance):
            _fill(instance, branch, root)
            break
    props = schema.get("properties", {})
    for key, sub in props.items():
        sub_r = _resolve(sub, root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        elif key not in instance and "default" in sub_r:
            instance[key] = copy.deepcopy(sub_r["default"])
        if key in instance:
            instance[key] = _fill(instance[key], sub_r, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in instance:
            if key not in props:
                instance[key] = _fill(instance[key], extra, root)
    return instance


def _describe(error: jsonschema.ValidationError, root: dict) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(_resolve(error.schema, root).get("properties", {}))
        bad = sorted(set(error.instance) - set(allowed))
        where = f"{path}." if error.absolute_path else ""
        return (f"unknown key(s) {', '.join(where + b for b in bad)}"
                + (f"; expected one of: {', '.join(allowed)}" if allowed else ""))
    if error.validator == "oneOf":
        # report the branch whose 'source' matches, if any
        source = error.instance.get("source") if isinstance(error.instance, dict) else None
        for branch in error.schema["oneOf"]:
            if _resolve(branch, root).get("properties", {}).get("source", {}).get("const") == source:
                sub = next(iter(jsonschema.Draft7Validator({**branch, "definitions": root.get("definitions", {})}).iter_errors(error.instance)), None)
                if sub is not None:
                    sub.path.extendleft(reversed(list(error.absolute_path)))
                    return _describe(sub, root)
        sources = [_resolve(b, root)["properties"]["source"]["const"] for b in error.schema["oneOf"]]
        return f"{path}.source = {source!r}; expected one of: {', '.join(sources)}"
    return f"{path}: {error.message}"


def check_references(c: dict) -> list[str]:
    """Cross-references the schema cannot express (dataset names, bin numbers)."""
    problems = []
    datasets = c["datasets"]
    names = c["study"]["datasets"]
    for name in names or []:
        if name not in datasets:
            problems.append(f"study.datasets: unknown dataset {name!r}; expected one of: {', '.join(datasets)}")
        elif c["models"] and datasets[name]["items"]["source"] == "none":
            problems.append(f"study.datasets: dataset {name!r} has items.source none; fine-tuning needs its items")
    problems += _resolve_bins(c)
    for b in c["study"]["train_bins"] or []:
        if b >= c["bins"]["n_bins"]:
            problems.append(f"study.train_bins: bin {b} does not exist; expected 0..{c['bins']['n_bins'] - 1}")
    irt = c["irt"]
    if irt["model"] == "4pl-standard":
        for where, engine in [("irt.engine", irt["engine"])] + [("irt.stability.engines", e) for e in irt["stability"]["engines"]]:
            if engine != "fast":
                problems.append(f"{where}: {engine} cannot fit irt.model: 4pl-standard (floor and ceiling per item): "
                                "py-irt has no such model (its 4pl has no guessing floor); use engine fast, or irt.model 4pl")
    for i, m in enumerate(c["models"]):
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in m["id"]):
            problems.append(f"models.{i}.id: {m['id']!r} holds a control character (newline, tab, ...); "
                            f"expected a hub id or path on one line")
        for name, spec in (m.get("solutions") or {}).items():
            if name not in datasets:
                problems.append(f"models.{i}.solutions: unknown dataset {name!r}; expected one of: {', '.join(datasets)}")
            elif not (spec.get("path") or spec.get("hub_id")):
                problems.append(f"models.{i}.solutions.{name}: give a path (table) or a hub_id")
        w = m.get("warmup_dataset")
        if w is not None and w not in datasets:
            problems.append(f"models.{i}.warmup_dataset: unknown dataset {w!r}; expected one of: {', '.join(datasets)}")
    return problems


def _resolve_bins(c: dict) -> list[str]:
    """``bins.n_bins`` from the scheme (null: 10, or len(edges) + 1), and edges / cutoffs that fit it."""
    b, problems = c["bins"], []
    edges = b.get("edges")
    if b["scheme"] == "quantiles":
        if not edges:
            problems.append("bins.scheme = 'quantiles' needs bins.edges, the quantile levels to cut at (e.g. [0.3, 0.7])")
        elif list(edges) != sorted(set(edges)):
            problems.append(f"bins.edges: {edges}; expected strictly ascending quantile levels in (0, 1)")
        elif b["n_bins"] is not None and b["n_bins"] != len(edges) + 1:
            problems.append(f"bins.n_bins = {b['n_bins']} but bins.edges {edges} cut {len(edges) + 1} bins; "
                            "leave n_bins out or make them agree")
        else:
            b["n_bins"] = len(edges) + 1
    elif edges:
        problems.append(f"bins.edges {edges} is set but bins.scheme is {b['scheme']!r}; set scheme: quantiles")
    if b["n_bins"] is None:
        b["n_bins"] = 10
    for name, d in c["datasets"].items():
        cut = (d.get("bins") or {}).get("cutoffs")
        if cut is None:
            continue
        if list(cut) != sorted(set(cut)):
            problems.append(f"datasets.{name}.bins.cutoffs: {cut}; expected strictly ascending values")
        elif len(cut) + 1 != b["n_bins"]:
            problems.append(f"datasets.{name}.bins.cutoffs {cut} cut {len(cut) + 1} bins but bins.n_bins is "
                            f"{b['n_bins']}; every dataset of a study has the same number of bins")
    return problems


def validate(config: dict, schema: dict | None = None, origin: str = "config") -> dict:
    """Return a validated copy of ``config`` with all defaults filled in."""
    schema = schema or load_schema()
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    lines = [f"{origin}: {_describe(e, schema)}" for e in errors]
    filled = None if errors else _fill(copy.deepcopy(config), schema, schema)
    if filled is not None:
        lines = [f"{origin}: {p}" for p in check_references(filled)]
    if lines:
        raise CrossdiffError("invalid configuration:\n  " + "\n  ".join(lines))
    return filled


def load(path: str | Path) -> dict:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise CrossdiffError(f"{p}: config file not found") from None
    except yaml.YAMLError as exc:
        raise CrossdiffError(f"{p}: not valid YAML: {exc}") from None
    return validate(raw, origin=str(p))
