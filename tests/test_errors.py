"""One catalogue of errors: every code in `ErrorCode` (unique), every MetadataError class
anywhere in the package takes its code from it, a code always means one HTTP status, and
the OpenAPI `Error` schema lists exactly these codes."""

from __future__ import annotations

import importlib
import pkgutil

import metadata_server
from metadata_server.errors import ErrorCode, MetadataError
from metadata_server.http.openapi import openapi_document


def error_classes() -> set[type[MetadataError]]:
    for module in pkgutil.walk_packages(metadata_server.__path__, "metadata_server."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: set[type[MetadataError]] = set()
    todo: list[type[MetadataError]] = [MetadataError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return {cls for cls in found if cls.__module__.startswith("metadata_server")}


def test_every_error_takes_its_code_from_the_catalogue_and_a_code_means_one_status() -> None:
    statuses: dict[ErrorCode, set[int]] = {}
    for cls in error_classes():
        assert isinstance(cls.code, ErrorCode), cls
        statuses.setdefault(cls.code, set()).add(cls.http_status)
    assert {code: s for code, s in statuses.items() if len(s) > 1} == {}
    assert len({code.value for code in ErrorCode}) == len(ErrorCode)


def test_the_openapi_error_schema_lists_the_codes() -> None:
    schema = openapi_document()["components"]["schemas"]["Error"]
    assert schema["properties"]["error"]["enum"] == [code.value for code in ErrorCode]
