"""Fuzzed run configs and CSV files: the bad-input harness of tests/test_config_fuzz.py and
benchmarks/fuzz_inputs.py (one generator, so the script measures what the tests check).

A config starts as a valid document built from the real schema (`evo_rules.config.SECTIONS`
and each task's `SETTINGS`) and gets 0-4 damages: a wrong type, an out-of-range or huge value,
nan/inf, an unknown key or section or task, features and seed rules that are not the task's,
then sometimes damaged bytes (truncated, non-UTF-8, NUL). A CSV starts as numeric columns and
gets one damage (constant or non-finite target, text cells, ragged rows, too few rows, bad
names, bad bytes, ...). Valid values stay small (a few hundred episodes), so an accepted input
is also a quick one; out-of-range values are as large as they come.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re

from evo_rules.config import SECTIONS

# the config stage of every task; tinystories-memory is only checked up to its settings (its
# build runs the language model over the data)
TASKS = ("and-match", "and-match-recent", "babi-2", "babi-3", "regression", "tinystories-memory")
BASE_SETTINGS = {"and-match": {"n_train": 120, "n_valid": 60, "n_test": 60},
                 "and-match-recent": {"n_train": 120, "n_valid": 60, "n_test": 60, "candidates": 4}}
WRONG_TYPES = ("many", "", True, False, [1, 2], {"a": 1}, 1.5, 7, [], "nan")
HUGE_INTS = (-1, 0, -(2**63), 2**63 - 1, 2**63, 10**30, 10**7, 3, 500)
BAD_FLOATS = (-1.0, 1.5, 2.0, 1e308, -1e-300, 0.0, 1e-320)
NON_FINITE = (math.nan, math.inf, -math.inf)
BAD_FEATURES = ("nosuch", "x.color", "1abc", "", "Color", "colour", "a b", "q_overlapp", "é")
DAMAGED_BYTES = (b"\xff", b"\xfe\xff", b"\x00", b"\xc3", b"\x80abc", b"[", b'"', b"\n[run]\n")


def task_features(name: str, csv_header: list[str] | None = None) -> tuple[str, ...]:
    if name.startswith("and-match"):
        from evo_rules.fitness.synthetic import VARIANTS

        return VARIANTS[name].features
    if name.startswith("babi"):
        from evo_rules.fitness.babi import FEATURES

        return FEATURES
    if name == "regression":
        return tuple(h for h in (csv_header or ["a", "b", "y"]) if h != "y")
    from evo_rules.fitness.memory import FEATURE_SETS

    return FEATURE_SETS["all"]


def task_schema(name: str) -> dict:
    if name.startswith("and-match"):
        from evo_rules.fitness.synthetic import SETTINGS
    elif name.startswith("babi"):
        from evo_rules.fitness.babi import SETTINGS
    elif name == "regression":
        from evo_rules.fitness.regression import SETTINGS
    else:
        from evo_rules.fitness.memory import SETTINGS
    return SETTINGS


# ---------------------------------------------------------------------------- rule texts

def rule_text(rng: random.Random, features, depth: int = 3) -> str:
    """A random s-expression over `features` (sometimes deep, huge or malformed)."""
    r = rng.random()
    if depth <= 0 or r < 0.25:
        leaf = rng.random()
        if leaf < 0.5 and features:
            return "x." + rng.choice(list(features))
        if leaf < 0.75:
            return "w"
        return rng.choice(["1", "-2.5", "1e308", "-1e300", "0", "1e-320"])
    op = rng.choice(["add", "mul", "exp", "log", "eml"])
    n = 1 if op in ("exp", "log") else rng.randint(2, 3)
    return f"({op} " + " ".join(rule_text(rng, features, depth - 1) for _ in range(n)) + ")"


def seed_rule(rng: random.Random, features) -> str:
    text = rule_text(rng, features)
    kind = rng.random()
    if kind < 0.5:
        return text
    if kind < 0.6:
        return text.replace("x.", "x.no_", 1) if "x." in text else "(add x.nosuch w)"
    if kind < 0.7:
        return text[: rng.randint(0, len(text))]  # unclosed, or empty
    if kind < 0.8:
        d = rng.randint(5, 60)
        return "(exp " * d + "x." + (features[0] if features else "a") + ")" * d
    if kind < 0.9:
        return "(add 1e308 1e308 " + text + ")"
    return rng.choice(["", ")", "(", "(foo x.a)", "(add", "x.", "(add x.a w) extra", "((add))"])


# ---------------------------------------------------------------------------- configs

def valid_document(rng: random.Random, task: str, csv_path: str | None = None,
                   csv_header: list[str] | None = None) -> dict:
    doc = {"run": {"seed": rng.randint(0, 1000), "generations": 0, "population": rng.randint(4, 30)},
           "task": {"name": task, "settings": dict(BASE_SETTINGS.get(task, {}))},
           "evaluation": {"backend": "serial"}}
    if task == "regression" and csv_path:
        doc["task"]["settings"]["path"] = csv_path
    feats = task_features(task, csv_header)
    if rng.random() < 0.4 and feats:
        doc["grammar"] = {"features": rng.sample(list(feats), rng.randint(1, len(feats)))}
    if rng.random() < 0.4:
        doc["search"] = {"seed_rules": [rule_text(rng, feats) for _ in range(rng.randint(1, 3))]}
    return doc


def _schema_keys(doc: dict) -> list[tuple[str, str, object]]:
    """(section, key, default) of every config key, and of the task's settings."""
    keys = [(name, f.name, getattr(cls(), f.name)) for name, cls in SECTIONS.items()
            for f in dataclasses.fields(cls)]
    task = doc.get("task", {}).get("name") if isinstance(doc.get("task"), dict) else None
    if task in TASKS:
        keys += [("task.settings", k, s.kind()) for k, s in task_schema(task).items()]
    return keys


def _put(doc: dict, section: str, key: str, value) -> None:
    if section == "task.settings":
        task = doc.setdefault("task", {})
        settings = task.get("settings")
        if not isinstance(settings, dict):
            settings = task["settings"] = {}
        settings[key] = value
    else:
        table = doc.setdefault(section, {})
        if isinstance(table, dict):
            table[key] = value


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 2:
        return word + "x"
    i = rng.randrange(len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:] if rng.random() < 0.5 else word[:i] + word[i + 1:]


def damage(rng: random.Random, doc: dict, csv_header: list[str] | None = None) -> str:
    """One damage to `doc` (in place); returns what was done."""
    keys = _schema_keys(doc)
    section, key, default = rng.choice(keys)
    kind = rng.choice(["type", "range", "non_finite", "unknown_key", "unknown_section", "features",
                       "seed_rules", "task_name", "range", "type"])
    if kind == "type":
        value = rng.choice([v for v in WRONG_TYPES if type(v) is not type(default)])
    elif kind == "range":
        value = rng.choice(BAD_FLOATS if isinstance(default, float) else HUGE_INTS)
    elif kind == "non_finite":
        value = rng.choice(NON_FINITE)
    elif kind == "unknown_key":
        key, value = _typo(rng, key), rng.choice([1, "x", 0.5])
    elif kind == "unknown_section":
        doc[rng.choice(["runn", "grammer", "task.setting", "x"])] = {"a": 1}
        return kind
    elif kind == "task_name":
        doc.setdefault("task", {})["name"] = rng.choice(["and-mach", "", "regresion", "babi-4", "AND-MATCH"])
        return kind
    else:
        task = doc.get("task", {}).get("name", "and-match")
        feats = list(task_features(task, csv_header)) if task in TASKS else ["a"]
        if kind == "features":
            section, key = "grammar", "features"
            value = rng.sample(feats, min(len(feats), 2)) + [rng.choice(BAD_FEATURES + tuple(map(str.upper, feats)))]
            rng.shuffle(value)
        else:
            section, key = "search", "seed_rules"
            value = [seed_rule(rng, feats) for _ in range(rng.randint(1, 3))]
    _put(doc, section, key, value)
    return f"{kind} {section}.{key}"


_BARE = re.compile(r"[A-Za-z0-9_-]+\Z")


def _key(k) -> str:
    k = str(k)
    return k if _BARE.match(k) else json.dumps(k)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON strings are TOML basic strings (a lone surrogate is not)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def toml_document(doc: dict) -> str:
    lines = [f"{_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{_key(name)}]" if "." not in name else f"[{name}]")
            lines += [f"{_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def damage_bytes(rng: random.Random, data: bytes) -> bytes:
    """Truncate, insert bad bytes, or flip a byte."""
    i = rng.randint(0, len(data))
    r = rng.random()
    if r < 0.3:
        return data[:i]
    if r < 0.8:
        return data[:i] + rng.choice(DAMAGED_BYTES) + data[i:]
    if not data:
        return b"\xff"
    i = min(i, len(data) - 1)
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]


def config_document(rng: random.Random, csv_path: str | None = None,
                    csv_header: list[str] | None = None) -> tuple[bytes, list[str]]:
    """A fuzzed config (TOML bytes) and the damages done to it."""
    task = rng.choice(TASKS)
    doc = valid_document(rng, task, csv_path, csv_header)
    done = [damage(rng, doc, csv_header) for _ in range(rng.choice([0, 1, 1, 1, 2, 4]))]
    data = toml_document(doc).encode("utf-8", "surrogatepass")
    if rng.random() < 0.1:
        data = damage_bytes(rng, data)
        done.append("bytes")
    return data, done


# ---------------------------------------------------------------------------- CSV files

CSV_DAMAGES = ("none", "constant_target", "non_finite", "text_cell", "short_row", "long_row",
               "few_rows", "empty", "header_only", "bad_name", "dup_name", "bytes", "bom",
               "quote", "huge_cell", "crlf", "no_target", "only_target", "blank_lines")


def csv_document(rng: random.Random) -> tuple[bytes, str, list[str]]:
    """A fuzzed CSV file: (bytes, damage, header as written)."""
    header = [f"x{i}" for i in range(rng.randint(1, 3))] + ["y"]
    rows = [[f"{rng.uniform(-5, 5):.6g}" for _ in header] for _ in range(rng.randint(10, 60))]
    what = rng.choice(CSV_DAMAGES)
    if what == "constant_target":
        for r in rows:
            r[-1] = "3"
    elif what == "non_finite":
        rng.choice(rows)[rng.randrange(len(header))] = rng.choice(["nan", "inf", "-inf", "1e999", "NaN"])
    elif what == "text_cell":
        rng.choice(rows)[rng.randrange(len(header))] = rng.choice(["abc", "", "0x1F", "1_0", " ", "1,5"])
    elif what == "short_row":
        rng.choice(rows).pop()
    elif what == "long_row":
        rng.choice(rows).append("1")
    elif what == "few_rows":
        rows = rows[: rng.randint(0, 9)]
    elif what == "header_only":
        rows = []
    elif what == "bad_name":
        header[rng.randrange(len(header))] = rng.choice(["2b", "x y", "", "x.a", "é"])
    elif what == "dup_name" and len(header) > 1:
        header[0] = header[-1]
    elif what == "huge_cell":
        rng.choice(rows)[0] = "1" * 5000
    elif what == "no_target":
        header[-1] = "target"
    elif what == "only_target":
        header, rows = ["y"], [[r[-1]] for r in rows]
    lines = [",".join(header)] + [",".join(r) for r in rows]
    if what == "blank_lines":
        lines.insert(rng.randint(1, len(lines)), "")
    text = ("\r\n" if what == "crlf" else "\n").join(lines) + "\n"
    if what == "quote":
        i = rng.randint(0, len(text))
        text = text[:i] + '"' + text[i:]
    data = b"" if what == "empty" else text.encode("utf-8")
    if what == "bom":
        data = b"\xef\xbb\xbf" + data
    if what == "bytes":
        data = damage_bytes(rng, data)
    return data, what, header


# ---------------------------------------------------------------------------- the check

def outcome(config_path: str) -> tuple[str, str]:
    """Run `evo-rules run`'s steps before the run folder is made: load the config, check and
    build the task, check features and seed rules, make the grammar and the seeds. Returns
    ("accepted", "") or ("rejected", message); any other exception propagates (a bug)."""
    from evo_rules import app
    from evo_rules.config import ConfigError, load
    from evo_rules.rule import parse
    from evo_rules.validate import check_features_before_build, check_task_settings, checked_task

    try:
        cfg = load(config_path)
        if cfg.task.name == "tinystories-memory":
            check_task_settings(cfg)  # building it would run the language model
            check_features_before_build(cfg)
        else:
            task = checked_task(cfg, app.task_handle(cfg).build)
            app.variation(cfg, task.features)
            for text in app.seed_texts(cfg, task):
                parse(text)
    except ConfigError as exc:
        return "rejected", str(exc)
    return "accepted", ""


def good_message(message: str, path: str) -> bool:
    """One line that names the file (the config, which names the data file in turn)."""
    return ("\n" not in message and "\r" not in message and message.startswith(path)
            and 0 < len(message) <= 1000)


def write_csv(rng: random.Random, folder: str, name: str = "data.csv") -> tuple[str, str, list[str]]:
    """A fuzzed CSV file written to `folder`: (path, damage, header as written)."""
    data, what, header = csv_document(rng)
    return write(folder, name, data), what, header


def write(folder: str, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as fh:
        fh.write(data)
    return path
