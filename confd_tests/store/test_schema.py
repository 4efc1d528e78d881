"""The conference schema: Kazoo error bodies and defaults (no database involved)."""

from __future__ import annotations

import jsonschema
import pytest

from confd.store.schema import ConferenceSchema, error_path, fill_defaults, kazoo_errors

PATTERN = "^[0-9]+$"


@pytest.fixture(scope="module")
def schema() -> ConferenceSchema:
    return ConferenceSchema()


def test_empty_document_is_valid_and_gets_defaults_at_every_depth(schema):
    doc = schema.with_defaults({})
    assert schema.errors(doc) == {}
    assert doc == {
        "conference_numbers": [],
        "member": {"join_muted": True, "join_deaf": False, "numbers": [], "pins": []},
        "moderator": {"join_muted": False, "join_deaf": False, "numbers": [], "pins": []},
        "play_name": False,
    }


def test_defaults_do_not_override_given_values(schema):
    doc = schema.with_defaults({"member": {"join_muted": False}, "play_name": True})
    assert doc["member"] == {"join_muted": False, "join_deaf": False, "numbers": [], "pins": []}
    assert doc["play_name"] is True
    assert doc["moderator"]["join_muted"] is False


def test_with_defaults_leaves_input_alone(schema):
    original = {"member": {}}
    schema.with_defaults(original)
    assert original == {"member": {}}


def test_defaults_skip_values_of_the_wrong_type():
    tree = {"member": 5}
    fill_defaults(tree, ConferenceSchema().schema)
    assert tree["member"] == 5


def test_unknown_keys_are_allowed(schema):
    doc = {"ui_metadata": {"origin": "x"}, "custom": [1, 2]}
    assert schema.errors(doc) == {}


@pytest.mark.parametrize(
    "doc, key, keyword, detail",
    [
        (
            {"name": "x" * 129},
            "name",
            "maxLength",
            {
                "message": "String must not be more than 128 characters",
                "target": 128,
                "cause": "x" * 129,
                "value": "x" * 129,
            },
        ),
        (
            {"name": ""},
            "name",
            "minLength",
            {
                "message": "String must be at least 1 characters",
                "target": 1,
                "cause": "",
                "value": "",
            },
        ),
        (
            {"name": 7},
            "name",
            "type",
            {"message": "Value did not match type(s): string", "target": "string", "value": 7},
        ),
        (
            {"owner_id": "a" * 31},
            "owner_id",
            "minLength",
            {
                "message": "String must be at least 32 characters",
                "target": 32,
                "cause": "a" * 31,
                "value": "a" * 31,
            },
        ),
        (
            {"owner_id": "a" * 33},
            "owner_id",
            "maxLength",
            {
                "message": "String must not be more than 32 characters",
                "target": 32,
                "cause": "a" * 33,
                "value": "a" * 33,
            },
        ),
        (
            {"conference_numbers": ["12", "1a"]},
            "conference_numbers.1",
            "pattern",
            {"message": f"Failed to match pattern '{PATTERN}'", "target": PATTERN, "value": "1a"},
        ),
        (
            {"conference_numbers": ["12", "12"]},
            "conference_numbers",
            "uniqueItems",
            {"message": "List of items is not unique", "value": ["12", "12"]},
        ),
        (
            {"conference_numbers": "12"},
            "conference_numbers",
            "type",
            {"message": "Value did not match type(s): array", "target": "array", "value": "12"},
        ),
        (
            {"member": {"join_muted": "yes"}},
            "member.join_muted",
            "type",
            {
                "message": "Value did not match type(s): boolean",
                "target": "boolean",
                "value": "yes",
            },
        ),
        (
            {"member": []},
            "member",
            "type",
            {"message": "Value did not match type(s): object", "target": "object", "value": []},
        ),
        (
            {"moderator": {"numbers": ["9", "9"]}},
            "moderator.numbers",
            "uniqueItems",
            {"message": "List of items is not unique", "value": ["9", "9"]},
        ),
        (
            {"member": {"pins": ["12*"]}},
            "member.pins.0",
            "pattern",
            {"message": f"Failed to match pattern '{PATTERN}'", "target": PATTERN, "value": "12*"},
        ),
        (
            {"member": {"play_entry_prompt": 1}},
            "member.play_entry_prompt",
            "type",
            {"message": "Value did not match type(s): boolean", "target": "boolean", "value": 1},
        ),
        (
            {"play_entry_tone": ""},
            "play_entry_tone",
            "minLength",
            {
                "message": "String must be at least 1 characters",
                "target": 1,
                "cause": "",
                "value": "",
            },
        ),
        (
            {"play_exit_tone": 3},
            "play_exit_tone",
            "type",
            {
                "message": "Value did not match type(s): boolean, string",
                "target": "boolean, string",
                "value": 3,
            },
        ),
        (
            {"wait_for_moderator": "true"},
            "wait_for_moderator",
            "type",
            {
                "message": "Value did not match type(s): boolean",
                "target": "boolean",
                "value": "true",
            },
        ),
        (
            {"max_participants": -1},
            "max_participants",
            "minimum",
            {"message": "Value must be at least 0", "target": 0, "value": -1},
        ),
        (
            {"max_participants": 2.5},
            "max_participants",
            "type",
            {"message": "Value did not match type(s): integer", "target": "integer", "value": 2.5},
        ),
        (
            {"profile_name": ["default"]},
            "profile_name",
            "type",
            {
                "message": "Value did not match type(s): string",
                "target": "string",
                "value": ["default"],
            },
        ),
        (
            {"flags": ["a", 2]},
            "flags.1",
            "type",
            {"message": "Value did not match type(s): string", "target": "string", "value": 2},
        ),
    ],
)
def test_rule_reports_kazoo_error(schema, doc, key, keyword, detail):
    assert schema.errors(schema.with_defaults(doc)) == {key: {keyword: detail}}


@pytest.mark.parametrize(
    "doc",
    [
        {"play_entry_tone": True},
        {"play_entry_tone": "tone_stream://%(200,0,500,600,700)"},
        {"play_exit_tone": False},
        {"max_participants": 0},
        {"owner_id": "0" * 32},
        {"name": "x" * 128},
        {"member": {"numbers": ["100", "200"], "pins": ["1234", "1234"]}},
        {"flags": ["video"], "language": "en-us", "domain": "example.com"},
    ],
)
def test_valid_values(schema, doc):
    assert schema.errors(schema.with_defaults(doc)) == {}


def test_every_error_is_reported_in_one_body(schema):
    doc = schema.with_defaults(
        {
            "name": "",
            "conference_numbers": ["1", "x"],
            "member": {"join_deaf": "no", "numbers": ["2", "2"]},
            "max_participants": -5,
        }
    )
    errors = schema.errors(doc)
    assert set(errors) == {
        "name",
        "conference_numbers.1",
        "member.join_deaf",
        "member.numbers",
        "max_participants",
    }
    assert set(errors["name"]) == {"minLength"}
    assert errors["member.numbers"]["uniqueItems"]["value"] == ["2", "2"]


def test_two_keywords_on_one_path_are_merged():
    s = ConferenceSchema(
        {"type": "object", "properties": {"n": {"minLength": 3, "pattern": "^[a-z]+$"}}}
    )
    errors = s.errors({"n": "A1"})
    assert set(errors) == {"n"}
    assert set(errors["n"]) == {"minLength", "pattern"}
    assert errors["n"]["minLength"]["target"] == 3


def test_required_is_reported_under_the_missing_property():
    s = ConferenceSchema(
        {
            "type": "object",
            "properties": {"member": {"type": "object", "required": ["pin", "name"]}},
            "required": ["member"],
        }
    )
    assert s.errors({}) == {
        "member": {"required": {"message": "Field is required but missing", "value": "member"}}
    }
    assert s.errors({"member": {"name": "x"}}) == {
        "member.pin": {"required": {"message": "Field is required but missing", "value": "pin"}}
    }


def test_other_keywords_fall_back_to_a_message_and_target():
    validator = jsonschema.Draft4Validator({"type": "array", "maxItems": 1, "enum": [[1]]})
    errors = kazoo_errors(validator.iter_errors([1, 2]))
    assert errors[""]["maxItems"] == {
        "message": "The list is more than 1 items",
        "target": 1,
        "value": [1, 2],
    }
    assert errors[""]["enum"]["message"] == "Value not found in enumerated list of values"


def test_error_path_escapes_dots_and_counts_from_zero():
    assert error_path(["member", "numbers", 0]) == "member.numbers.0"
    assert error_path(["ui.meta", "x"]) == "ui%2Emeta.x"
