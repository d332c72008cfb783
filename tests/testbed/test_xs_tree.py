"""The pure xenstore model: paths, permissions, errors, watches' visibility, transactions,
domain release; and the wire helpers. No sockets, no tools."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from metadata_server_testbed.xen.xs_tree import (
    RELEASE_DOMAIN,
    Caller,
    Perm,
    Store,
    access_for,
    may_see,
    parse_perm,
)
from metadata_server_testbed.xen.xs_wire import XsError, c_atoi, one_arg, strings

DOM0 = Caller(0)
D5 = Caller(5)
D6 = Caller(6)


def store_with_guests() -> Store:
    store = Store()
    for domid in (5, 6):
        store.introduce(domid)
        base = f"/local/domain/{domid}"
        store.mkdir(DOM0, base)
        store.set_perms(DOM0, base, [b"n0", f"r{domid}".encode()])
        store.mkdir(DOM0, f"{base}/data")
        store.set_perms(DOM0, f"{base}/data", [f"n{domid}".encode()])
    store.write(DOM0, "/granted", b"")
    store.set_perms(DOM0, "/granted", [b"n0", b"w5", b"r6"])
    return store


def error_of(call: object) -> str:
    assert callable(call)
    with pytest.raises(XsError) as caught:
        call()
    return caught.value.name


@pytest.mark.parametrize(
    ("raw", "caller", "expected"),
    [
        (b"/a/b", DOM0, "/a/b"),
        (b"data/x", D5, "/local/domain/5/data/x"),
        (b"name", DOM0, "/local/domain/0/name"),
        (b"/", DOM0, "/"),
        (b"@releaseDomain", DOM0, "@releaseDomain"),
    ],
    ids=["absolute", "relative-guest", "relative-dom0", "root", "special"],
)
def test_canonical_paths(raw: bytes, caller: Caller, expected: str) -> None:
    assert Store().canonical(caller, raw, special=True) == expected


@pytest.mark.parametrize(
    "raw",
    [b"", b"/a/", b"/a//b", b"/a b", b"/\xff", b"/a*", b"/" + b"a" * 2049, None],
    ids=["empty", "trailing-slash", "double-slash", "space", "non-ascii", "star", "long", "none"],
)
def test_invalid_paths(raw: bytes | None) -> None:
    assert error_of(lambda: Store().canonical(DOM0, raw)) == "EINVAL"


def test_special_names_only_where_allowed() -> None:
    assert error_of(lambda: Store().canonical(DOM0, b"@releaseDomain")) == "EINVAL"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"n0", Perm("n", 0)),
        (b"r5", Perm("r", 5)),
        (b"w0x10", Perm("w", 16)),
        (b"b010", Perm("b", 8)),
    ],
    ids=["none", "read", "hex", "octal"],
)
def test_parse_perm(text: bytes, expected: Perm) -> None:
    assert parse_perm(text) == expected


@pytest.mark.parametrize("text", [b"x5", b"r", b"r5x", b"r-1", b"r70000", b""], ids=str)
def test_parse_perm_refuses(text: bytes) -> None:
    assert error_of(lambda: parse_perm(text)) == "EINVAL"


@pytest.mark.parametrize(
    ("perms", "caller", "read", "write"),
    [
        ((Perm("n", 0),), DOM0, True, True),
        ((Perm("n", 0),), D5, False, False),
        ((Perm("r", 0),), D5, True, False),
        ((Perm("n", 5),), D5, True, True),
        ((Perm("n", 0), Perm("w", 5)), D5, False, True),
        ((Perm("n", 0), Perm("w", 5)), D6, False, False),
        ((Perm("b", 0), Perm("n", 5)), D5, False, False),
        ((Perm("b", 0), Perm("n", 5)), D6, True, True),
        ((Perm("n", 0), Perm("r", 5), Perm("w", 5)), D5, True, False),
        ((Perm("n", 0), Perm("b", 5, ignored=True)), D5, False, False),
        ((Perm("n", 0), Perm("r", 7)), Caller(5, target=7), True, False),
    ],
    ids=[
        "dom0-always",
        "default-none",
        "default-read",
        "owner-always",
        "granted-write-only",
        "not-granted",
        "listed-none-beats-default",
        "default-for-unlisted",
        "first-match-wins",
        "ignored-entry",
        "target-inherits",
    ],
)
def test_access(perms: tuple[Perm, ...], caller: Caller, read: bool, write: bool) -> None:
    access = access_for(caller, perms)
    assert (bool(access.READ & access), bool(access.WRITE & access)) == (read, write)


@pytest.mark.parametrize(
    ("caller", "op", "path", "expected"),
    [
        (D5, "read", "/local/domain/6/name", "EACCES"),
        (D5, "read", "/local/domain/5/nothing", "ENOENT"),
        (D5, "read", "/local/domain/6/nothing", "EACCES"),
        (D5, "read", "/granted", "EACCES"),
        (D6, "read", "/granted/nothing", "ENOENT"),
        (D5, "write", "/local/domain/6/data/x", "EACCES"),
        (D5, "write", "/local/domain/5/x", "EACCES"),
        (D6, "write", "/granted/x", "EACCES"),
        (D5, "rm", "/local/domain/5/domid", "EACCES"),
        (D5, "rm", "/local/domain/5/data/a/b", "ENOENT"),
        (DOM0, "rm", "/", "EINVAL"),
        (D5, "set_perms", "/granted", "EACCES"),
        (D5, "give_away", "/local/domain/5/data", "EPERM"),
    ],
    ids=[
        "read-other-domain",
        "missing-under-readable",
        "missing-under-unreadable",
        "write-only-grant-cannot-read",
        "missing-under-read-grant",
        "write-other-domain",
        "write-own-readonly-dir",
        "write-without-grant",
        "rm-readonly",
        "rm-missing-parent",
        "rm-root",
        "chmod-not-owner",
        "give-away-ownership",
    ],
)
def test_refusals(caller: Caller, op: str, path: str, expected: str) -> None:
    store = store_with_guests()
    calls = {
        "read": lambda: store.read(caller, path),
        "write": lambda: store.write(caller, path, b"v"),
        "rm": lambda: store.rm(caller, path),
        "set_perms": lambda: store.set_perms(caller, path, [b"n5"]),
        "give_away": lambda: store.set_perms(caller, path, [b"n6"]),
    }
    version = store.version
    assert error_of(calls[op]) == expected
    assert store.version == version  # a refused request changes nothing


def test_created_nodes_inherit_and_guest_owns_them() -> None:
    store = store_with_guests()
    store.write(D5, "/granted/a/b", b"x")
    assert store.get_perms(DOM0, "/granted/a/b") == (Perm("n", 5), Perm("w", 5), Perm("r", 6))
    assert store.read(D5, "/granted/a/b") == b"x"  # the owner may read what it made
    assert store.read(D6, "/granted/a/b") == b"x"  # r6 was inherited
    assert store.directory(DOM0, "/granted") == ("a",)


def test_rm_events_children_exact_root_not() -> None:
    store = store_with_guests()
    store.write(DOM0, "/t/a/b", b"1")
    changes = store.rm(DOM0, "/t")
    assert [(c.path, c.exact) for c in changes] == [
        ("/t/a/b", True),
        ("/t/a", True),
        ("/t", False),
    ]
    assert "/t/a" not in store.nodes and "t" not in store.directory(DOM0, "/")


def test_rm_missing_node_with_parent_is_fine() -> None:
    assert store_with_guests().rm(DOM0, "/local/nothing") == []


def test_watch_visibility() -> None:
    store = store_with_guests()
    [change] = store.write(DOM0, "/local/domain/5/data/secret", b"s")
    assert may_see(D5, change, store.special_perms)
    assert not may_see(D6, change, store.special_perms)
    [released] = store.release(6)[-1:]
    assert released.path == RELEASE_DOMAIN
    assert may_see(DOM0, released, store.special_perms)
    assert not may_see(D5, released, store.special_perms)


def test_transaction_isolation_and_conflict() -> None:
    store = store_with_guests()
    tx = store.begin(1)
    store.write(DOM0, "/tx", b"in", tx)
    assert "/tx" not in store.nodes
    assert store.read(DOM0, "/tx", tx) == b"in"
    assert [c.path for c in store.commit(tx)] == ["/tx"]
    assert store.read(DOM0, "/tx") == b"in"

    late = store.begin(2)
    store.write(DOM0, "/tx", b"late", late)
    store.write(DOM0, "/other", b"meanwhile")
    assert error_of(lambda: store.commit(late)) == "EAGAIN"
    assert store.read(DOM0, "/tx") == b"in"


def test_release_removes_owned_nodes_and_grants() -> None:
    store = store_with_guests()
    store.write(D5, "/granted/mine", b"x")
    store.write(DOM0, "/acl", b"")
    store.set_perms(DOM0, "/acl", [b"n0", b"r5"])
    changes = store.release(5)
    paths = [c.path for c in changes]
    assert "/local/domain/5/data" in paths and "/granted/mine" in paths
    assert paths[-1] == RELEASE_DOMAIN
    assert "/local/domain/5/data" not in store.nodes
    assert "/local/domain/5" in store.nodes  # Dom0's: the toolstack removes it
    store.introduce(5)  # a new domain with the same id inherits nothing
    assert error_of(lambda: store.read(D5, "/acl")) == "EACCES"


def test_unknown_domains_in_permissions_are_inert() -> None:
    store = store_with_guests()
    store.write(DOM0, "/future", b"")
    store.set_perms(DOM0, "/future", [b"n0", b"r9"])
    store.introduce(9)
    assert error_of(lambda: store.read(Caller(9), "/future")) == "EACCES"
    assert error_of(lambda: store.set_perms(DOM0, "/future", [b"n10"])) == "ENOENT"


def test_guest_quota_on_node_size() -> None:
    store = store_with_guests()
    assert error_of(lambda: store.write(D5, "/local/domain/5/data/big", b"x" * 2048)) == "ENOSPC"
    store.write(DOM0, "/local/domain/5/data/big", b"x" * 4000)  # Dom0 has no quota


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(b"a\0", b"a"), (b"\0", b""), (b"a", None), (b"a\0b\0", None), (b"", None)],
    ids=["one", "empty-string", "no-nul", "two", "nothing"],
)
def test_one_arg(payload: bytes, expected: bytes | None) -> None:
    assert one_arg(payload) == expected


def test_strings_and_atoi() -> None:
    assert strings(b"a\0b\0tail") == [b"a", b"b"]
    assert [c_atoi(x) for x in (b"12", b" 7x", b"-3", b"x", b"")] == [12, 7, -3, 0, 0]


PACKAGE = Path(__file__).resolve().parents[2] / "testbed" / "metadata_server_testbed" / "xen"


@pytest.mark.parametrize("module", ["xs_wire", "xs_tree"])
def test_model_modules_are_pure(module: str) -> None:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    forbidden = {"asyncio", "os", "socket", "subprocess", "time", "aiohttp", "pyroute2"}
    assert not imported & forbidden
    assert {name for name in imported if name.startswith("metadata_server")} <= {
        "metadata_server_testbed.xen.xs_wire"
    }


def test_guest_quota_on_node_count() -> None:
    store = store_with_guests()
    for k in range(9):  # data/ + 9 directories + 990 leaves = 1000 nodes owned by 5
        for j in range(110):
            store.write(D5, f"/local/domain/5/data/d{k}/n{j}", b"")
    assert error_of(lambda: store.write(D5, "/local/domain/5/data/d0/more", b"")) == "ENOSPC"
    store.write(DOM0, "/local/domain/5/data/d0/more", b"")  # Dom0 has no quota
