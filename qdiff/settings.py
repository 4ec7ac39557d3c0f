"""Settings declared once, checked where they are read: `qdiff/schemas/<runner>.schema.yaml` is a
JSON-Schema subset that qdiff checks here and that the workflow's study schema reuses (`$ref`),
so Snakemake rejects the same typos and bad values at DAG time. Also the settings-file reader
shared by the commands (a YAML error or a list where a mapping belongs names the file).

Declared runners: featurize, train, sample (the study's `models.sample` too) and evaluate (no
study section). `qdiff report` has no settings beyond its command-line flags (--convention, a
choice argparse checks; the metrics files, checked as qdiff.report reads them): no declaration."""
from __future__ import annotations

import functools
import re
from pathlib import Path

from .errors import InputFileError, SettingsError

SCHEMA_DIR = Path(__file__).parent / "schemas"
# YAML 1.2 floats: PyYAML follows YAML 1.1, where `1e-05` (no dot) is a string, not a number; the
# workflow passes settings as JSON (json.dumps(1e-05) == "1e-05"), and users write `lr: 1e-5`.
_FLOAT_12 = r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"  # exponent forms only
_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, (list, tuple)),
    "null": lambda v: v is None,
}


def load_yaml(text):
    """yaml.safe_load with YAML 1.2 floats (`1e-5` is a number), for settings files and `--set`."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_FLOAT_12), list("-+0123456789."))
    return yaml.load(text, Loader=Loader)


@functools.cache
def schema(name: str) -> dict:
    """The declaration `qdiff/schemas/<name>.schema.yaml`."""
    import yaml

    return yaml.safe_load((SCHEMA_DIR / f"{name}.schema.yaml").read_text())


_ARTICLE = {"integer": "an ", "array": "an ", "object": "an ", "null": ""}


def _show(value) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def _errors(value, s: dict, path: str, root: dict | None = None) -> list[str]:
    """Messages for every way `value` breaks schema `s` (first per key), each naming the key;
    `root` resolves local `$ref`s (#/$defs/...)."""
    root = root if root is not None else s
    if "$ref" in s:
        target = root
        for part in s["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        s = {**target, **{k: v for k, v in s.items() if k != "$ref"}}
    where = path or "the settings"
    types = s.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            return [f"{where} {_show(value)} is not {' or '.join(_ARTICLE.get(t, 'a ') + t for t in types)}"
                    + (f" ({s['description']})" if "description" in s else "")]
    if "const" in s and value != s["const"]:
        return [f"{where} {_show(value)}: must be {_show(s['const'])}"]
    if "enum" in s and value not in s["enum"]:
        return [f"{where} {_show(value)} is not allowed; choose one of {', '.join(map(str, s['enum']))}"]
    out = []
    if _TYPES["number"](value):
        for key, ok, word in (("minimum", lambda v, b: v >= b, ">="), ("maximum", lambda v, b: v <= b, "<="),
                              ("exclusiveMinimum", lambda v, b: v > b, ">"), ("exclusiveMaximum", lambda v, b: v < b, "<")):
            if key in s and not ok(value, s[key]):
                out.append(f"{where} {_show(value)} is out of range; must be {word} {s[key]}"
                           + (f" ({s['description']})" if "description" in s else ""))
    if isinstance(value, str) and len(value) < s.get("minLength", 0):
        out.append(f"{where}: must not be empty")
    if isinstance(value, str) and "pattern" in s and not re.search(s["pattern"], value):
        out.append(f"{where} {_show(value)} is not {s.get('description', 'of the form ' + s['pattern'])}")
    if isinstance(value, (list, tuple)):
        if len(value) < s.get("minItems", 0) or len(value) > s.get("maxItems", len(value)):
            n = (s.get("minItems"), s.get("maxItems"))
            out.append(f"{where}: {len(value)} items; needs " + (f"exactly {n[0]}" if n[0] == n[1] else f"between {n[0] or 0} and {n[1] or 'any'}"))
        if s.get("uniqueItems") and len({repr(v) for v in value}) < len(value):
            out.append(f"{where}: {list(value)} repeats an item; each may appear once")
        if "items" in s:
            for i, item in enumerate(value):
                out += _errors(item, s["items"], f"{path}[{i}]", root)
    if isinstance(value, dict):
        props = s.get("properties", {})
        for key in s.get("required", []):
            if key not in value:
                out.append(f"{where}: missing {_dotted(path, key)}")
        extra = s.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                out += _errors(item, props[key], _dotted(path, key), root)
            elif extra is False:
                out.append(f"unknown setting {_dotted(path, key)!r}; known: {', '.join(sorted(props))}")
            elif isinstance(extra, dict):
                out += _errors(item, extra, _dotted(path, key), root)
    for sub in s.get("allOf", []):
        if "if" in sub:
            if not _errors(value, sub["if"], path, root):
                out += _errors(value, sub.get("then", {}), path, root)
            elif "else" in sub:
                out += _errors(value, sub["else"], path, root)
        else:
            out += _errors(value, sub, path, root)
    return out


def _dotted(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def check(value, name: str, prefix: str = "") -> None:
    """SettingsError listing every setting of `value` that `schema(name)` rejects."""
    errors = list(dict.fromkeys(_errors(value, schema(name), prefix)))
    if errors:
        raise SettingsError(f"bad settings ({name}): " + "; ".join(errors))


def check_declared(values: dict, name: str) -> None:
    """`check` of the entries of a runner's keyword arguments that schema `name` declares as
    settings (None: not given, the runner's default); its other arguments (paths, device, seed)
    are checked where they are used. NumPy scalars count as the Python numbers they hold."""
    declared = schema(name).get("properties", {})
    check({key: _plain(v) for key, v in values.items() if key in declared and v is not None}, name)


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def check_section(value, name: str, section: str) -> None:
    """`check` of one section of schema `name` (e.g. the featurize settings of one dataset)."""
    declared = schema(name)
    if section not in declared.get("properties", {}):
        return
    errors = list(dict.fromkeys(_errors(value, declared["properties"][section], "", declared)))
    if errors:
        raise SettingsError(f"bad settings ({name} {section}): " + "; ".join(errors))


def load_settings_file(path, section: str | None = None) -> dict:
    """The mapping in a YAML settings file (its `section` if it has one, else the whole mapping);
    an unreadable file, invalid YAML, or anything but a mapping is an error naming the file."""
    import yaml

    try:
        text = Path(path).read_text()
    except UnicodeDecodeError as err:
        raise InputFileError(f"{path}: not a text (YAML) settings file ({err.reason})") from err
    try:
        loaded = load_yaml(text)
    except yaml.YAMLError as err:
        raise SettingsError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SettingsError(f"{path}: a settings file holds a mapping (key: value lines), not a {type(loaded).__name__}")
    if section is not None and section in loaded:
        loaded = loaded[section]
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise SettingsError(f"{path}: `{section}` must be a mapping of settings, not a {type(loaded).__name__}")
    return dict(loaded)
