"""CD-06's content: load the profiles under ``config/``, validate them, name their versions.

Called by ``mangaassist config validate`` and by the config pipeline (``pipelines/config.py``)
before anything is deployed. Validation is two passes, and every ``Problem`` names the file, the
line and the field:

1. the JSON Schema of the profile (``config/schemas/NAME.schema.json``);
2. semantic checks the schema cannot express: template variables are ones the chatbot provides
   (``core.configspec``) and every declared or required one is used; the rendered prompt fits the
   token budget; regular expressions compile (flags: with RE2's rules); ``chunk_overlap`` is below
   ``chunk_words``; flags the code reads exist, strategies and operators are known, dependencies
   and segments resolve.

Evaluation suites (``config/evals/*.yaml``) are validated the same way (``eval-suite`` schema).
A version is ``PROFILE-<12 hex of sha256 of the canonical JSON>``: the same content is the same
version wherever it is computed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml

from mangaassist.core import configspec, saferegex, safeyaml
from mangaassist.core.errors import ConfigError
from mangaassist.core.flags import OPERATORS, compile_re2

KNOWN_STRATEGIES = frozenset(
    {
        "default",
        "userWithId",
        "gradualRolloutUserId",
        "gradualRolloutSessionId",
        "gradualRolloutRandom",
        "flexibleRollout",
        "remoteAddress",
        "applicationHostname",
    }
)

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field or '(top level)'}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class Document:
    """A parsed YAML file and the line (1-based) of every node, by path."""

    path: Path
    data: Any
    lines: dict[Path_, int]

    def line(self, where: Path_) -> int:
        for n in range(len(where), -1, -1):  # the nearest enclosing node that exists
            if where[:n] in self.lines:
                return self.lines[where[:n]]
        return 1

    def problem(self, where: Path_, message: str) -> Problem:
        return Problem(str(self.path), self.line(where), _dotted(where), message)


def _dotted(where: Path_) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _walk(node: yaml.Node, where: Path_, lines: dict[Path_, int]) -> None:
    lines[where] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value
            lines[(*where, name)] = key.start_mark.line + 1
            _walk(value, (*where, name), lines)
            lines[(*where, name)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*where, i), lines)


def load_document(path: Path) -> Document:
    """Parse a YAML file; a syntax error is a ConfigError naming file and line."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    # hostile input refused before parsing: too large, binary, aliases (core.safeyaml)
    text = safeyaml.text_of(path.read_bytes(), str(path))
    node = safeyaml.compose(text, str(path))
    data = safeyaml.load(text, str(path))
    lines: dict[Path_, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return Document(path, {} if data is None else data, lines)


def schema_of(config_dir: Path, name: str) -> dict[str, Any]:
    path = config_dir / "schemas" / f"{name}.schema.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no schema for {name!r}")
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def _schema_problems(doc: Document, schema: dict[str, Any]) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for err in sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))):
        out.append(doc.problem(tuple(err.absolute_path), err.message))
    return out


def validate_profile(config_dir: Path, name: str) -> list[Problem]:
    """Every problem of ``config_dir/NAME.yaml``; an empty list means it may be deployed."""
    if name not in configspec.PROFILES:
        raise ConfigError(f"unknown profile {name!r} (profiles: {', '.join(configspec.PROFILES)})")
    path = config_dir / f"{name}.yaml"
    try:
        doc = load_document(path)
    except ConfigError as exc:
        return [_located(exc, path)]
    problems = _schema_problems(doc, schema_of(config_dir, name))
    if problems:  # semantic checks assume the shape the schema guarantees
        return problems
    return list(_SEMANTIC[name](doc))


def _located(exc: ConfigError, path: Path) -> Problem:
    match = re.match(rf"{re.escape(str(path))}:(\d+): (.*)", str(exc), re.S)
    if match:
        return Problem(str(path), int(match.group(1)), "", match.group(2))
    return Problem(str(path), 1, "", str(exc).removeprefix(f"{path}: "))


def validate_all(config_dir: Path, names: tuple[str, ...] | None = None) -> dict[str, list[Problem]]:
    return {name: validate_profile(config_dir, name) for name in names or configspec.PROFILES}


def _runtime(doc: Document) -> Iterator[Problem]:
    retrieval = doc.data.get("retrieval") or {}
    words, overlap = retrieval.get("chunk_words", 160), retrieval.get("chunk_overlap", 30)
    if overlap >= words:
        yield doc.problem(
            ("retrieval", "chunk_overlap"), f"{overlap} must be below retrieval.chunk_words ({words})"
        )


def _prompts(doc: Document) -> Iterator[Problem]:
    budget = doc.data["token_budget"]
    system = doc.data["system"]
    for intent, spec in doc.data["templates"].items():
        where: Path_ = ("templates", intent)
        declared = list(spec["variables"])
        try:
            used = configspec.template_fields(spec["text"])
        except ValueError as exc:
            yield doc.problem((*where, "text"), f"malformed template: {exc}")
            continue
        for i, var in enumerate(declared):
            if var not in configspec.PROVIDED_VARIABLES:
                provided = ", ".join(sorted(configspec.PROVIDED_VARIABLES))
                yield doc.problem(
                    (*where, "variables", i), f"{var!r} is not provided by the chatbot (provided: {provided})"
                )
            elif var not in used:
                yield doc.problem((*where, "variables", i), f"{var!r} is declared but the text never uses it")
        for var in sorted(set(used) - set(declared)):
            yield doc.problem((*where, "text"), f"uses {{{var}}}, which is not declared in variables")
        for var in sorted(configspec.REQUIRED_VARIABLES - set(used)):
            yield doc.problem((*where, "text"), f"must use the required variable {{{var}}}")
        if set(used) <= set(configspec.PROVIDED_VARIABLES):
            rendered = system + "\n" + configspec.render_template(spec["text"], configspec.SAMPLE_VALUES)
            tokens = configspec.estimate_tokens(rendered)
            if tokens > budget:
                yield doc.problem(
                    (*where, "text"),
                    f"the rendered prompt needs about {tokens} tokens, over token_budget {budget}",
                )


def _guardrails(doc: Document) -> Iterator[Problem]:
    for section in ("pii_patterns", "blocked_topics"):
        for i, item in enumerate(doc.data.get(section) or []):
            try:  # linear-time RE2: these run on every customer message (core.saferegex)
                saferegex.compile_linear(item["regex"])
            except ConfigError as exc:
                yield doc.problem((section, i, "regex"), str(exc).removeprefix("pattern: "))


def _flags(doc: Document) -> Iterator[Problem]:
    features = doc.data.get("features") or []
    names = [f["name"] for f in features]
    segments = {s["id"] for s in doc.data.get("segments") or []}
    seen: set[str] = set()
    for i, feature in enumerate(features):
        where: Path_ = ("features", i)
        if feature["name"] in seen:
            yield doc.problem((*where, "name"), f"flag {feature['name']!r} is defined twice")
        seen.add(feature["name"])
        for j, strategy in enumerate(feature.get("strategies") or []):
            at: Path_ = (*where, "strategies", j)
            if strategy["name"] not in KNOWN_STRATEGIES:
                yield doc.problem((*at, "name"), f"unknown strategy {strategy['name']!r}")
            for seg in strategy.get("segments") or []:
                if seg not in segments:
                    yield doc.problem((*at, "segments"), f"segment {seg} is not defined under segments")
            yield from _constraints(doc, (*at, "constraints"), strategy.get("constraints") or [])
        for j, dep in enumerate(feature.get("dependencies") or []):
            if dep["feature"] not in names:
                yield doc.problem((*where, "dependencies", j, "feature"), f"no flag named {dep['feature']!r}")
    for j, segment in enumerate(doc.data.get("segments") or []):
        yield from _constraints(doc, ("segments", j, "constraints"), segment["constraints"])
    for flag in configspec.FLAGS_READ:
        if flag not in names:
            yield doc.problem(("features",), f"the chatbot reads flag {flag!r}, which is not defined")


def _constraints(doc: Document, where: Path_, constraints: list[dict[str, Any]]) -> Iterator[Problem]:
    for k, c in enumerate(constraints):
        if c["operator"] not in OPERATORS:
            yield doc.problem((*where, k, "operator"), f"unknown operator {c['operator']!r}")
        elif c["operator"] == "REGEX" and compile_re2(str(c.get("value", ""))) is None:
            yield doc.problem((*where, k, "value"), "regular expression does not compile (RE2 rules)")


_SEMANTIC = {"runtime": _runtime, "prompts": _prompts, "guardrails": _guardrails, "flags": _flags}


# -- evaluation suites ------------------------------------------------------------------------------


def load_eval_suites(config_dir: Path) -> tuple[list[dict[str, Any]], list[Problem]]:
    """The suites under ``config_dir/evals`` and their problems (schema: ``eval-suite``)."""
    schema = schema_of(config_dir, "eval-suite")
    suites, problems = [], []
    for path in sorted((config_dir / "evals").glob("*.yaml")):
        try:
            doc = load_document(path)
        except ConfigError as exc:
            problems.append(_located(exc, path))
            continue
        found = _schema_problems(doc, schema)
        for i, case in enumerate(doc.data.get("cases") or [] if not found else []):
            for j, check in enumerate(case["checks"]):
                if check["type"] not in ("cites_source", "valid_json") and "value" not in check:
                    found.append(doc.problem(("cases", i, "checks", j), f"{check['type']} needs a value"))
                if check["type"] == "regex":
                    try:
                        re.compile(str(check.get("value", "")))
                    except re.error as exc:
                        found.append(doc.problem(("cases", i, "checks", j, "value"), f"bad regex: {exc}"))
        problems.extend(found)
        if not found:
            suites.append({**doc.data, "file": str(path)})
    return suites, problems


# -- versions ---------------------------------------------------------------------------------------

version_of = configspec.version_of


def read_profile(config_dir: Path, name: str) -> Any:
    """The content of a valid profile; raises ConfigError listing the problems otherwise."""
    problems = validate_profile(config_dir, name)
    if problems:
        raise ConfigError("; ".join(map(str, problems)))
    return load_document(config_dir / f"{name}.yaml").data
