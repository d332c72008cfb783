"""The body of a bulk import: a JSON array of guest objects, or NDJSON (one per line).

Parsed one element (or line) at a time, with the rules of every JSON body (no NaN, no
repeated keys). The admin API runs this on a worker thread; one `json.loads` of a whole
32 MiB array would hold the interpreter lock, and so stall the event loop and every
guest, for the whole parse (about half a second), where separate elements let the loop
in between.
"""

from __future__ import annotations

import json
import re

from metadata_server.errors import InvalidInput
from metadata_server.http.middleware import JSON_DECODER, decode_text, parse_json

_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


def _skip(text: str, index: int) -> int:
    """The index of the first non-whitespace character from `index` on."""
    match = _SPACE.match(text, index)
    assert match is not None  # `*` matches the empty string
    return match.end()


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line} column {column}"


def _array(text: str) -> list[object]:
    """The elements of the JSON array that is the whole of `text`."""
    index = _skip(text, _skip(text, 0) + 1)  # past the "["
    items: list[object] = []
    if text.startswith("]", index):
        index += 1
    else:
        while True:
            try:
                item, index = JSON_DECODER.raw_decode(text, index)
            except json.JSONDecodeError as exc:
                raise InvalidInput(
                    f"the request body is not valid JSON: {exc.msg} at {_position(text, exc.pos)}"
                ) from None
            except RecursionError:
                raise InvalidInput("the request body nests too deeply") from None
            items.append(item)
            index = _skip(text, index)
            if text.startswith(",", index):
                index = _skip(text, index + 1)
            elif text.startswith("]", index):
                index += 1
                break
            else:
                raise InvalidInput(
                    "the request body is not valid JSON: expected ',' or ']' at "
                    f"{_position(text, index)}"
                )
    end = _skip(text, index)
    if end != len(text):
        raise InvalidInput(
            f"the request body is not valid JSON: extra data at {_position(text, end)}"
        )
    return items


def import_rows(body: bytes) -> list[object]:
    """A JSON array, or NDJSON (one object per line; blank lines skipped)."""
    text = decode_text(body)
    if text.startswith("[", _skip(text, 0)):
        return _array(text)
    rows: list[object] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(parse_json(line))
        except InvalidInput as exc:
            raise InvalidInput(f"line {number}: {exc.detail}") from None
    return rows
