"""The bulk import's body, parsed one element at a time: the same rows as one json.loads
of the whole body for every valid array, and a clear 400 for every broken one."""

from __future__ import annotations

import json

import pytest

from metadata_server.errors import InvalidInput
from metadata_server.http.import_body import import_rows

VALID = [
    pytest.param('[{"a": 1}, {"b": [2, {"c": null}]}]', id="array"),
    pytest.param(' \t\r\n[ {"a": 1} ,\n{"b": 2}\n] \n', id="json-whitespace"),
    pytest.param("[]", id="empty-array"),
    pytest.param('[{"s": "] , ["}]', id="brackets-in-strings"),
    pytest.param('[1, "x", true, [[]]]', id="not-objects"),
]


@pytest.mark.parametrize("text", VALID)
def test_array_rows_are_what_json_loads_gives(text: str) -> None:
    assert import_rows(text.encode()) == json.loads(text)


def test_ndjson_rows_skip_blank_lines() -> None:
    assert import_rows(b'{"a": 1}\n\n  \n{"b": 2}\n') == [{"a": 1}, {"b": 2}]


INVALID = [
    pytest.param(b"[", "not valid JSON", id="unterminated"),
    pytest.param(b'[{"a": 1},]', "not valid JSON", id="trailing-comma"),
    pytest.param(b'[{"a": 1} {"b": 2}]', "expected ',' or ']' at line 1 column 11", id="no-comma"),
    pytest.param(b'[{"a": 1}] [', "extra data at line 1 column 12", id="extra-data"),
    pytest.param(b'[{"a": NaN}]', "NaN is not valid JSON", id="nan"),
    pytest.param(b'[{"a": 1, "a": 2}]', "appears twice", id="repeated-key"),
    pytest.param(b'[\n{"a": 1},\n{"b": }]', "at line 3 column 7", id="position"),
    pytest.param(b"[" * 100_000, "nests too deeply", id="deep"),
    pytest.param(
        b'{"a": 1}\n{"a": 1, "a": 2}\n', "line 2: the key 'a' appears twice", id="ndjson-line"
    ),
    pytest.param(b'[{"a": "\xff"}]', "not UTF-8", id="not-utf8"),
]


@pytest.mark.parametrize(("body", "words"), INVALID)
def test_broken_bodies_are_a_clear_400(body: bytes, words: str) -> None:
    with pytest.raises(InvalidInput) as error:
        import_rows(body)
    assert error.value.http_status == 400 and words in error.value.detail
