"""PostgreSQL URLs: which values are URLs, which are refused before connecting, and the
redacted form used in every message (pure; no server needed)."""

from __future__ import annotations

import pytest

from metadata_server.errors import ConfigError
from metadata_server.store.dsn import check, is_postgres_url, redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://mds:s3cret@db1/registry", "postgresql://mds:***@db1/registry"),
        (
            "postgresql://mds:s3cret@/registry?host=/run/postgresql",
            "postgresql://mds:***@/registry?host=/run/postgresql",
        ),
        (
            "postgres://mds@db1:5432,db2:5432/registry?password=s3cret&target_session_attrs=read-write",
            "postgres://mds@db1:5432,db2:5432/registry?password=***&target_session_attrs=read-write",
        ),
        ("postgresql://db1/registry", "postgresql://db1/registry"),
        ("postgresql://mds:p%40ss@db1/registry", "postgresql://mds:***@db1/registry"),
    ],
    ids=["user-password", "unix-socket", "query-password", "no-password", "quoted-password"],
)
def test_redact_hides_every_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    check(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://mds:s3cret@db1:notaport/registry", "bad port 'notaport'"),
        ("postgresql://mds:s3cret@db1:70000/registry", "bad port '70000'"),
        ("postgresql://mds:s3cret@[::1/registry", "cannot parse"),
        ("postgresql://mds:s3cret@db1/a/b", "may not contain '/'"),
    ],
    ids=["port-not-a-number", "port-too-big", "broken-ipv6", "slash-in-name"],
)
def test_bad_urls_are_refused_before_connecting(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        check(url)
    assert message in error.value.detail
    assert "s3cret" not in error.value.detail


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("postgresql://db1/registry", True),
        ("postgres://db1/registry", True),
        ("/var/lib/metadata-server/registry.db", False),
        ("sqlite:///var/lib/registry.db", False),
        ("./postgresql.db", False),
    ],
)
def test_which_values_are_postgres_urls(value: str, expected: bool) -> None:
    assert is_postgres_url(value) is expected
