"""The one generation request schema: every field with its type, range and default, and its one validator.

Used by ``tunesmith generate`` (``--prompt`` and prompts-file lines, surface ``"file"``), by
``tunesmith review`` prompts, and by ``POST /v1/generate`` of ``tunesmith serve`` (surface ``"http"``).
The surfaces differ only where stated here: HTTP adds ``format`` and the server's upper limits
(``le_limit`` names an attribute of ``tunesmith.serve.queue.Limits``), and its ``seed`` defaults to
``None`` (a random seed); prompts files also take ``text`` (= prompt), a ``conditions`` object and the
free-form conditions in :data:`FILE_CONDITIONS`. ``melody`` (melody-conditioned models) is a wav path in
prompts files and base64 file bytes over HTTP (decoded by the server, never a path there).

Both surfaces report a bad field with the same :class:`FieldError` message; ``str(RequestError)`` is the
prompts-file form (``duration=-2.0: Input should be greater than 0``), :func:`http_errors` the 422 form.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

MAX_SEED = 2**63 - 1
MAX_MELODY_CHARS = 16_000_000  # a base64 melody upload: ≈ 12 MB of audio (MusicGen reads 30 s of it)
FILE, HTTP = "file", "http"
LABELS = "labels"  # a string or a list of strings (genre, instrument)


@dataclasses.dataclass(frozen=True)
class Field:
    """One request field. ``kind``: str, int, float, :data:`LABELS` or a tuple of allowed strings."""

    name: str
    kind: Any
    default: Any = None
    doc: str = ""
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    le_limit: str | None = None  # HTTP: the Limits attribute that caps the value
    max_length: int | None = None
    length_limit: str | None = None  # HTTP: the Limits attribute that caps a string's length
    attribute: bool = False  # a conditioning attribute (goes into GenerationItem.conditions)
    surfaces: tuple[str, ...] = (FILE, HTTP)


FIELDS: tuple[Field, ...] = (
    Field("prompt", str, "", "text description", length_limit="max_prompt_chars"),
    Field("seed", int, 0, "random seed (HTTP: omit for a random one, see X-Seed)", ge=0, le=MAX_SEED),
    Field("duration", float, 10.0, "seconds", gt=0, le_limit="max_duration"),
    Field("cfg", float, 3.0, "classifier-free guidance (1 = off)", ge=0, le_limit="max_cfg"),
    Field("temperature", float, 1.0, "sampling temperature (0 = greedy)", ge=0, le_limit="max_temperature"),
    Field("top_k", int, 250, "sample among the k most likely tokens (0 = off)", ge=0, le_limit="max_top_k"),
    Field("top_p", float, 0.0, "nucleus sampling mass (0 = off)", ge=0, le=1),
    Field("format", ("wav", "flac"), "wav", "audio format of the response", surfaces=(HTTP,)),
    Field("genre", LABELS, None, "attribute-conditioned models: genre(s)", attribute=True),
    Field("bpm", float, None, "attribute-conditioned models: tempo", gt=0, le=1000, attribute=True),
    Field("key", str, None, 'attribute-conditioned models: e.g. "a minor"', max_length=40, attribute=True),
    Field("instrument", LABELS, None, "attribute-conditioned models: instrument(s)", attribute=True),
    Field(
        "melody",
        str,
        None,
        "melody-conditioned models: audio whose chroma the music follows (prompts files: a wav path; "
        "HTTP: the file's bytes, base64)",
        max_length=MAX_MELODY_CHARS,
        attribute=True,
    ),
)
BY_NAME = {f.name: f for f in FIELDS}
SETTINGS = tuple(f.name for f in FIELDS if not f.attribute and FILE in f.surfaces)  # GenerationItem's settings
DEFAULTS: dict[str, Any] = {name: BY_NAME[name].default for name in SETTINGS}
# prompts files: passed on as is (reference, reference_text, speaker: speech models, tunesmith.inference.higgs)
FILE_CONDITIONS = ("description", "transcript", "moods", "keywords", "reference", "reference_text", "speaker")


@dataclasses.dataclass
class GenerationItem:
    """One thing to generate; the fields of a prompts.jsonl line (defaults from :data:`FIELDS`)."""

    prompt: str = DEFAULTS["prompt"]
    seed: int = DEFAULTS["seed"]
    duration: float = DEFAULTS["duration"]  # seconds
    cfg: float = DEFAULTS["cfg"]
    temperature: float = DEFAULTS["temperature"]
    top_k: int = DEFAULTS["top_k"]
    top_p: float = DEFAULTS["top_p"]
    conditions: dict = dataclasses.field(default_factory=dict)  # extra attributes (genre, bpm, ...)

    def condition(self, text_field: str) -> dict:
        cond = dict(self.conditions)
        if self.prompt:
            cond[text_field] = self.prompt
        return cond

    def batch_key(self) -> tuple:
        return (self.duration, self.cfg, self.temperature, self.top_k, self.top_p)


@dataclasses.dataclass
class FieldError:
    """A bad field: ``message`` is the same on every surface; ``input`` the value given (if any)."""

    field: str
    message: str
    type: str
    input: Any = dataclasses.field(default=None, repr=False)
    has_input: bool = False

    def describe(self) -> str:
        """The prompts-file form: ``name=value: message``."""
        if not self.has_input:
            return self.message if self.field == "body" else f"{self.field}: {self.message}"
        value = self.input
        if BY_NAME.get(self.field, Field("", None)).kind is float and _is_number(value):
            value = float(value)
        return f"{self.field}={value!r}: {self.message}"


class RequestError(ValueError):
    """One or more bad fields (all of them, in schema order)."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        extra = sorted(e.field for e in errors if e.type == "extra_forbidden")
        parts = [e.describe() for e in errors if e.type != "extra_forbidden"]
        if extra:
            parts.insert(0, f"unknown field(s) {extra}; allowed: {sorted(SETTINGS)}")
        super().__init__("; ".join(parts))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


@dataclasses.dataclass(frozen=True)
class FileLimits:
    """Upper bounds for prompts files and ``--prompt`` (the server has its own ``Limits``): only the
    duration is capped, by default at 10 minutes per item (``generate --max-duration``)."""

    max_duration: float = 600.0


def _bound(field: Field, limits: Any, attr: str | None, fixed: float | None) -> float | None:
    if attr is not None and limits is not None and getattr(limits, attr, None) is not None:
        return getattr(limits, attr)
    return fixed


def check_field(field: Field, value: Any, limits: Any = None) -> tuple[Any, FieldError | None]:
    """Validate one value → (value, error or None); a setting's int for a float field becomes a float,
    attributes are kept as given."""

    def bad(message: str, kind: str) -> tuple[Any, FieldError]:
        return value, FieldError(field.name, message, kind, value, True)

    kind = field.kind
    if isinstance(kind, tuple):
        if not isinstance(value, str) or value not in kind:
            return bad("Input should be " + " or ".join(repr(k) for k in kind), "literal_error")
        return value, None
    if kind is LABELS:
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value, None
        return bad("Input should be a valid string or a list of strings", "string_type")
    if kind is str:
        if not isinstance(value, str):
            return bad("Input should be a valid string", "string_type")
        limit = _bound(field, limits, field.length_limit, field.max_length)
        if limit is not None and len(value) > limit:
            return bad(f"String should have at most {int(limit)} characters", "string_too_long")
        return value, None
    if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
        return bad("Input should be a valid integer", "int_type")
    if kind is float and not _is_number(value):
        return bad("Input should be a valid number", "float_type")
    if kind is float and not math.isfinite(value):
        return bad("Input should be a finite number", "finite_number")
    if field.gt is not None and not value > field.gt:
        return bad(f"Input should be greater than {_shown(field.gt)}", "greater_than")
    if field.ge is not None and not value >= field.ge:
        return bad(f"Input should be greater than or equal to {_shown(field.ge)}", "greater_than_equal")
    upper = _bound(field, limits, field.le_limit, field.le)
    if upper is not None and not value <= upper:
        return bad(f"Input should be less than or equal to {_shown(upper)}", "less_than_equal")
    return (float(value) if kind is float and not field.attribute else value), None


def validate(
    data: Any, defaults: Mapping[str, Any] | None = None, *, surface: str = FILE, limits: Any = None
) -> dict[str, Any]:
    """A request object → its values: every setting of the surface (``defaults`` under the given ones, then
    the schema's) plus ``conditions`` (the attributes given). Raises :class:`RequestError` naming every bad
    field. ``null`` means "the default". ``limits``: upper bounds (the server's ``Limits``, or
    :class:`FileLimits`) for the fields that name one.
    """
    if not isinstance(data, dict):
        raise RequestError([FieldError("body", f"expected a JSON object, got {type(data).__name__}", "dict_type")])
    given = dict(data)
    conditions: dict[str, Any] = {}
    if surface == FILE:
        if "text" in given and "prompt" not in given:
            given["prompt"] = given.pop("text")
        given.pop("text", None)
        conditions = dict(given.pop("conditions", None) or {})
        conditions.update({name: given.pop(name) for name in FILE_CONDITIONS if name in given})
    fields = [f for f in FIELDS if surface in f.surfaces]
    errors = [
        FieldError(name, "Extra inputs are not permitted", "extra_forbidden", given[name], True)
        for name in given
        if name not in BY_NAME or surface not in BY_NAME[name].surfaces
    ]
    merged = {**(defaults or {}), **{k: v for k, v in given.items() if v is not None}}
    values: dict[str, Any] = {}
    for field in fields:
        value = (given if field.attribute else merged).get(field.name)
        if value is None:
            if not field.attribute:
                values[field.name] = None if (field.name == "seed" and surface == HTTP) else field.default
            continue
        value, error = check_field(field, value, limits)
        if error is not None:
            errors.append(error)
        elif field.attribute:
            conditions[field.name] = value
        else:
            values[field.name] = value
    if errors:
        raise RequestError(errors)
    values["conditions"] = conditions
    return values


def parse_item(
    data: Any, defaults: Mapping[str, Any] | None = None, limits: FileLimits | None = None
) -> GenerationItem:
    """A prompt dict (with ``defaults`` under it) → GenerationItem; RequestError (a ValueError) naming bad fields.
    ``limits`` default: :class:`FileLimits` ()."""
    return GenerationItem(**validate(data, defaults, surface=FILE, limits=limits or FileLimits()))


def http_errors(errors: list[FieldError]) -> tuple[str, list[dict]]:
    """The 422 form: (one readable line, details ``{field, message, type}``); a value is shown as ``(got …)``."""
    parts, details = [], []
    for err in errors:
        message = err.message
        if err.has_input:
            shown = repr(err.input)
            message += f" (got {shown[:60] + '…' if len(shown) > 60 else shown})"
        parts.append(f"{err.field}: {message}")
        details.append({"field": err.field, "message": message, "type": err.type})
    return "; ".join(parts), details


def json_schema(defaults: Mapping[str, Any], limits: Any) -> dict[str, Any]:
    """The HTTP request body as JSON Schema (for the OpenAPI page), from :data:`FIELDS`."""
    types = {str: "string", int: "integer", float: "number"}
    props: dict[str, Any] = {}
    for field in FIELDS:
        if HTTP not in field.surfaces:
            continue
        if isinstance(field.kind, tuple):
            prop: dict[str, Any] = {"enum": list(field.kind)}
        elif field.kind is LABELS:
            prop = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
        else:
            prop = {"type": types[field.kind]}
        bounds = {
            "exclusiveMinimum": field.gt,
            "minimum": field.ge,
            "maximum": _bound(field, limits, field.le_limit, field.le),
            "maxLength": _bound(field, limits, field.length_limit, field.max_length),
        }
        prop.update({k: v for k, v in bounds.items() if v is not None})
        default = defaults.get(field.name, None if field.name == "seed" else field.default)
        if default is not None:
            prop["default"] = default
        props[field.name] = {**prop, "description": field.doc}
    return {"type": "object", "properties": props, "additionalProperties": False}
