r"""The conference document schema: defaults and Kazoo-style validation error bodies.

The schema is ``conference.schema.json`` shipped in this package (draft-04, validated with
``jsonschema.Draft4Validator``). Error bodies follow Kazoo's crossbar: one key per failing field
path (dot-joined, array indexes 0-based, a literal "." inside a key written as "%2E"), each
``{"<keyword>": {"message": ..., "target": ..., "value": ...}}``; the message texts are the ones
Kazoo's kz_json_schema module produces.

``pattern`` is an ECMA-262 regular expression, where ``$`` (without the multiline flag) is the
end of the string. ``jsonschema`` runs it with Python's ``re.search``, where ``$`` also matches
before a final newline: ``"^[0-9]+$"`` would take ``"4000\n"``, a number that gets around the
uniqueness of ``"4000"``. The validator here reads ``$`` as ECMA-262 does (``\Z``), so the
schema keeps the patterns Kazoo and api.md publish and still refuses the newline.

Values no backend can store (a lone surrogate or NUL in any string or key, a number beyond a
double) are reported too, at their own paths (``confd.store.values``).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

import jsonschema
import jsonschema.validators

from confd.store.values import REASON_NOT_FINITE, value_problems

SCHEMA_PACKAGE = "confd.store"
SCHEMA_RESOURCE = "conference.schema.json"

PATH_SEPARATOR = "."
ESCAPED_SEPARATOR = "%2E"

MSG_TYPE = "Value did not match type(s): {target}"
MSG_MIN_LENGTH = "String must be at least {target} characters"
MSG_MAX_LENGTH = "String must not be more than {target} characters"
MSG_PATTERN = "Failed to match pattern '{target}'"
MSG_UNIQUE_ITEMS = "List of items is not unique"
MSG_MINIMUM = "Value must be at least {target}"
MSG_MAXIMUM = "Value must be at most {target}"
MSG_ENUM = "Value not found in enumerated list of values"
MSG_MIN_ITEMS = "The list must have at least {target} items"
MSG_MAX_ITEMS = "The list is more than {target} items"
MSG_MIN_PROPERTIES = "The object must have at least {target} keys"
MSG_ADDITIONAL_PROPERTIES = (
    "Strict checking of data is enabled; only include schema-defined properties"
)
MSG_REQUIRED = "Field is required but missing"
MSG_TEXT = "String must be Unicode text without NUL characters: it holds {reason}"
MSG_NUMBER = "Number must be within the range of a double"
KEYWORD_TEXT = "text"
KEYWORD_NUMBER = "number"

# keyword -> message template; "{target}" is the schema's constraint value.
_TARGET_MESSAGES = {
    "minLength": MSG_MIN_LENGTH,
    "maxLength": MSG_MAX_LENGTH,
    "pattern": MSG_PATTERN,
    "minimum": MSG_MINIMUM,
    "maximum": MSG_MAXIMUM,
    "enum": MSG_ENUM,
    "minItems": MSG_MIN_ITEMS,
    "maxItems": MSG_MAX_ITEMS,
    "minProperties": MSG_MIN_PROPERTIES,
}
# Kazoo also echoes the offending string as "cause" for these two.
_WITH_CAUSE = frozenset({"minLength", "maxLength"})


def load_packaged_schema() -> dict[str, Any]:
    """Read the conference schema shipped in the package."""
    text = resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    return json.loads(text)


def error_path(parts: Iterable[Any]) -> str:
    """Kazoo's dotted key for a JSON path (``["member", "numbers", 0]`` -> "member.numbers.0")."""
    return PATH_SEPARATOR.join(str(p).replace(PATH_SEPARATOR, ESCAPED_SEPARATOR) for p in parts)


def _type_target(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def _format_number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def kazoo_errors(errors: Iterable[jsonschema.ValidationError]) -> dict[str, dict[str, Any]]:
    """Turn jsonschema errors into Kazoo's validation error body (every error, merged by path)."""
    body: dict[str, dict[str, Any]] = {}

    def add(path: list[Any], keyword: str, detail: dict[str, Any]) -> None:
        body.setdefault(error_path(path), {})[keyword] = detail

    for err in errors:
        path = list(err.absolute_path)
        keyword = str(err.validator)
        target = err.validator_value
        if keyword == "required":
            # One entry per missing property, under the property's own path (as Kazoo).
            present = err.instance if isinstance(err.instance, dict) else {}
            for name in target:
                if name not in present:
                    add(path + [name], keyword, {"message": MSG_REQUIRED, "value": name})
            continue
        if keyword == "type":
            types = _type_target(target)
            detail = {"message": MSG_TYPE.format(target=types), "target": types}
        elif keyword == "uniqueItems":
            detail = {"message": MSG_UNIQUE_ITEMS}
        elif keyword == "additionalProperties":
            detail = {"message": MSG_ADDITIONAL_PROPERTIES}
        elif keyword in _TARGET_MESSAGES:
            shown = _format_number(target) if keyword != "pattern" else target
            detail = {"message": _TARGET_MESSAGES[keyword].format(target=shown), "target": target}
        else:
            detail = {"message": err.message, "target": target}
        if keyword in _WITH_CAUSE:
            detail["cause"] = err.instance
        detail["value"] = err.instance
        add(path, keyword, detail)
    return body


def value_errors(doc: Any) -> dict[str, dict[str, Any]]:
    """Kazoo-style errors for what no backend can store (see ``confd.store.values``); the
    offending value is not echoed (it is what cannot be written anywhere)."""
    body: dict[str, dict[str, Any]] = {}
    for path, reason in value_problems(doc):
        if reason == REASON_NOT_FINITE:
            keyword, detail = KEYWORD_NUMBER, {"message": MSG_NUMBER}
        else:
            keyword, detail = KEYWORD_TEXT, {"message": MSG_TEXT.format(reason=reason)}
        body.setdefault(error_path(path), {})[keyword] = detail
    return body


@functools.lru_cache(maxsize=256)
def python_pattern(ecma: str) -> re.Pattern[str]:
    """An ECMA-262 ``pattern`` compiled for ``re.search``: every ``$`` anchor (outside a
    character class, not escaped) becomes ``\\Z``, the end of the string as ECMA-262 means it
    (Python's ``$`` also matches before a final newline)."""
    out: list[str] = []
    in_class = escaped = False
    for char in ecma:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            out.append(r"\Z")
            continue
        out.append(char)
    return re.compile("".join(out))


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """The ``pattern`` keyword with ECMA-262's ``$`` (replaces jsonschema's ``re.search``)."""
    if validator.is_type(instance, "string") and not python_pattern(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# Draft-04 as jsonschema implements it, with ECMA-262's end-of-string for ``pattern``.
ConferenceValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"pattern": _ecma_pattern}
)


def fill_defaults(instance: Any, schema: dict[str, Any]) -> None:
    """Set every missing property that has a ``default``, at every depth, in place.

    A default object (``member: {}``) is inserted first and then filled itself, so a document
    created as ``{}`` gets ``member.join_muted: true``. Values of the wrong type are left alone
    for the validator to report.
    """
    if not isinstance(instance, dict):
        return
    for name, subschema in schema.get("properties", {}).items():
        if name not in instance and "default" in subschema:
            instance[name] = copy.deepcopy(subschema["default"])
        if name in instance:
            fill_defaults(instance[name], subschema)


class ConferenceSchema:
    """Validator for conference documents (the packaged schema unless another is given)."""

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        self.schema = schema if schema is not None else load_packaged_schema()
        ConferenceValidator.check_schema(self.schema)
        self._validator = ConferenceValidator(self.schema)

    def with_defaults(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A deep copy of ``doc`` with the schema defaults filled in at every depth."""
        filled = copy.deepcopy(doc)
        fill_defaults(filled, self.schema)
        return filled

    def errors(self, doc: Any) -> dict[str, dict[str, Any]]:
        """Kazoo error body for ``doc`` (schema, then values no backend stores); empty when
        valid."""
        body = kazoo_errors(self._validator.iter_errors(doc))
        for path, detail in value_errors(doc).items():
            body.setdefault(path, {}).update(detail)
        return body
