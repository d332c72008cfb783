"""The registry transfer format: every guest record in full, as NDJSON, for moving a
registry between backends (SQLite ⇄ PostgreSQL) or machines.

Line 1 is a header (format, version, record count, a warning); each further line is one
stored record exactly as the backends keep it: the spec with its password hash and
user-data, plus the server fields (instance id, state, times, message). An export is
therefore as secret as the database itself. Reading checks every line (and the count, so
a cut file is refused) before anything is written. Pure: no files, no store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from metadata_server.errors import InvalidInput, InvalidRows, MetadataError, RowError
from metadata_server.model import VM, parse_vm, spec_to_json
from metadata_server.store.records import vm_from_record, vm_to_record

FORMAT = "metadata-server-registry"
VERSION = 1
WARNING = (
    "full guest records, with password hashes and user-data, for moving a registry: "
    "keep this file as private as the database"
)


def export_lines(vms: Sequence[VM]) -> Iterator[str]:
    """The export, one line at a time (each without its newline)."""
    header = {"format": FORMAT, "version": VERSION, "count": len(vms), "warning": WARNING}
    yield json.dumps(header, separators=(",", ":"))
    for vm in vms:
        yield vm_to_record(vm)


def _header(line: str) -> int:
    """The record count the header announces; InvalidInput when it is no export header."""
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InvalidInput(
            "not a registry export (its first line must be the metadata-server-registry "
            "header); guest lists for the admin API go to `metadata-server vm import`"
        )
    if header.get("version") != VERSION:
        raise InvalidInput(f"export format version {header.get('version')!r} is not {VERSION}")
    count = header.get("count")
    if type(count) is not int or count < 0:
        raise InvalidInput("the export header has no valid record count")
    return count


def _record(line: str) -> VM:
    try:
        vm = vm_from_record(line)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"not a guest record ({type(exc).__name__}: {exc})") from None
    # The record must also pass the same validation as a guest given to the admin API.
    spec: dict[str, Any] = spec_to_json(vm.spec, secrets=True)
    parsed = parse_vm(spec).spec
    if parsed != vm.spec:
        raise InvalidInput("the record is not in its normal form", field="mac")
    return vm


def read_export(lines: Iterable[str]) -> tuple[list[VM], list[int]]:
    """Every record of an export and the line number of each; InvalidRows (`index` =
    line number) for any bad line."""
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise InvalidInput("the export is empty")
    expected = _header(numbered[0][1])
    vms: list[VM] = []
    line_numbers: list[int] = []
    errors: list[RowError] = []
    for number, line in numbered[1:]:
        try:
            vms.append(_record(line))
            line_numbers.append(number)
        except MetadataError as exc:
            errors.append(RowError(number, exc.field, exc.detail))
    if errors:
        raise InvalidRows(errors)
    if len(vms) != expected:
        raise InvalidInput(
            f"the export announces {expected} records but holds {len(vms)}: "
            "it is incomplete or was edited"
        )
    return vms, line_numbers
