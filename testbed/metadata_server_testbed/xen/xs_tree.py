"""The xenstore database as xenstored keeps it: nodes, permissions, transactions, domains.

A pure model of Xen 4.17's tools/xenstore/xenstored_core.c semantics, so the stand-in
server answers exactly as the real daemon would:

- Paths: ASCII letters, digits and `-/_@`; no trailing or doubled `/`; relative paths
  are taken against `/local/domain/<caller domid>`; `@...` names only special watches.
- Permissions are a list like `n0 r5`: the first entry names the *owner* and is also the
  default for every domain not listed; later entries grant `n`/`r`/`w`/`b` to one domain
  (the first matching entry wins). The owner and Dom0 always have full access, and only
  they may change permissions; an unprivileged owner may not give a node away (EPERM).
- A missing node reports ENOENT only if the nearest existing ancestor grants the
  requested access, else EACCES, so nothing leaks about nodes a caller cannot see.
- Creating a node needs write access to the nearest existing ancestor; new nodes
  inherit the parent's permissions, and an unprivileged creator becomes their owner.
- Transactions work on a copy of the tree; committing one that changed something fails
  with EAGAIN when any other change was committed since it started
  (docs/misc/xenstore.txt; the real daemon's per-node check only conflicts less often).
- Permission entries naming a domain that does not exist grant nothing, and releasing
  a domain deletes the nodes it owns and makes entries naming it inert, so a later
  domain with the same id inherits nothing.
- Unprivileged domains have xenstored's default quotas: 1000 nodes, 2048-byte nodes
  (value and child names), 5 permission entries, 128 watches, 10 transactions.

Every operation checks everything before it changes anything, and returns the watch
events (`Change`) it caused; delivering them is the server's job. Pure: no I/O.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from metadata_server_testbed.xen.xs_wire import DOMID_FIRST_RESERVED, REL_PATH_MAX, XsError

INTRODUCE_DOMAIN = "@introduceDomain"
RELEASE_DOMAIN = "@releaseDomain"
SPECIAL_NODES = (INTRODUCE_DOMAIN, RELEASE_DOMAIN)

# xenstored's default quotas for unprivileged domains (xenstored_core.c, Xen 4.17).
MAX_ENTRY_SIZE = 2048
MAX_NODES_PER_DOMAIN = 1000
MAX_PERMS_PER_NODE = 5
MAX_TRANSACTIONS = 10
MAX_WATCHES = 128
# oxenstored's quota-maxsize (Debian's Xen runs oxenstored): a longer value is refused
# with E2BIG for every domain, dom0 too (found on real Xen: the lab's dom0 could not
# leave a guest a 2,049-byte command)
MAX_VALUE_SIZE = 2048

_PATH_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/_@")
_LOCAL_PREFIX = re.compile(r"^/local/domain/[0-9]{1,5}/")
_PERM_RE = re.compile(rb"^([nrwb])(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")


class Access(enum.Flag):
    NONE = 0
    READ = 1
    WRITE = 2
    OWNER = 4


FULL = Access.READ | Access.WRITE | Access.OWNER


@dataclass(frozen=True)
class Perm:
    """One permission entry: `kind` is n, r, w or b; `ignored` entries name a domain
    xenstored did not know when they were set, and grant nothing."""

    kind: str
    domid: int
    ignored: bool = False

    @property
    def access(self) -> Access:
        return {
            "n": Access.NONE,
            "r": Access.READ,
            "w": Access.WRITE,
            "b": Access.READ | Access.WRITE,
        }[self.kind]

    def __str__(self) -> str:
        return f"{self.kind}{self.domid}"


def parse_perm(text: bytes) -> Perm:
    """`b5` → Perm("b", 5); the domid is read like C strtol(.., 0): decimal, 0x.., 0..."""
    match = _PERM_RE.fullmatch(text)
    if not match:
        raise XsError("EINVAL")
    digits = match.group(2)
    if digits[:2] in (b"0x", b"0X"):
        domid = int(digits[2:], 16)
    elif digits.startswith(b"0"):
        domid = int(digits, 8)
    else:
        domid = int(digits)
    if domid > 0xFFFF:
        raise XsError("EINVAL")
    return Perm(match.group(1).decode(), domid)


@dataclass(frozen=True)
class Node:
    value: bytes
    perms: tuple[Perm, ...]
    children: tuple[str, ...]
    generation: int

    @property
    def owner(self) -> int:
        return self.perms[0].domid

    def record_size(self) -> int:
        """Size of xenstored's record for this node (header, perms, value, child names),
        the figure its node-size quota limits."""
        return 20 + 8 * len(self.perms) + len(self.value) + sum(len(c) + 1 for c in self.children)


@dataclass(frozen=True)
class Caller:
    """Who is asking: a domain id (0 is Dom0, privileged) and an optional SET_TARGET."""

    domid: int
    target: int | None = None

    @property
    def privileged(self) -> bool:
        return self.domid == 0


@dataclass(frozen=True)
class Change:
    """A watch event: `path` was written, created, removed or re-permissioned.

    `exact` events (a node removed below the removed root, a special event) match only
    watches on that very path; others match watches on the path and its ancestors. The
    permissions are those at the time of the change, for deciding who may see it.
    """

    path: str
    exact: bool
    perms: tuple[Perm, ...]
    parent_perms: tuple[Perm, ...] | None = None
    old_perms: tuple[Perm, ...] | None = None


@dataclass
class Transaction:
    id: int
    nodes: dict[str, Node]
    start_version: int
    changes: list[Change] = field(default_factory=list)


def access_for(caller: Caller, perms: tuple[Perm, ...]) -> Access:
    """What `caller` may do to a node with `perms` (xenstored's perm_for_conn)."""
    owner = perms[0].domid
    if caller.privileged or owner == caller.domid or owner == caller.target:
        return FULL
    for perm in perms[1:]:
        if not perm.ignored and perm.domid in (caller.domid, caller.target):
            return perm.access
    return perms[0].access


def may_see(caller: Caller, change: Change, special_perms: dict[str, tuple[Perm, ...]]) -> bool:
    """Whether a watch of `caller` fires for `change` (xenstored's watch_permitted): the
    node, its parent, or the node's permissions before the change allow reading."""
    if change.path.startswith("@"):
        perms = special_perms.get(change.path)
        return perms is not None and Access.READ in access_for(caller, perms)
    candidates = (change.old_perms, change.perms, change.parent_perms)
    return any(p is not None and Access.READ in access_for(caller, p) for p in candidates)


def parent_of(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


def child_path(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


def is_under(path: str, ancestor: str) -> bool:
    """`path` is `ancestor` or below it (every path is under `/`)."""
    return ancestor == "/" or path == ancestor or path.startswith(ancestor + "/")


class Store:
    """The committed tree, the known domains and the special nodes' permissions."""

    def __init__(self) -> None:
        self._generations = itertools.count(1)
        self.version = 0  # bumps with every committed change; transactions compare it
        self.domains: set[int] = {0}
        self.targets: dict[int, int] = {}
        dom0_only = (Perm("n", 0),)
        self.special_perms: dict[str, tuple[Perm, ...]] = {
            name: dom0_only for name in SPECIAL_NODES
        }
        self.nodes: dict[str, Node] = {}
        layout = {
            "/": ("tool", "local"),
            "/tool": ("xenstored",),
            "/tool/xenstored": (),
            "/local": ("domain",),
            "/local/domain": ("0",),
            "/local/domain/0": ("domid", "name"),
            "/local/domain/0/domid": (),
            "/local/domain/0/name": (),
        }
        values = {"/local/domain/0/domid": b"0", "/local/domain/0/name": b"Domain-0"}
        for path, children in layout.items():
            self.nodes[path] = Node(values.get(path, b""), dom0_only, children, self._gen())

    def _gen(self) -> int:
        return next(self._generations)

    def caller(self, domid: int) -> Caller:
        return Caller(domid, self.targets.get(domid))

    # --- paths -----------------------------------------------------------------------

    def canonical(self, caller: Caller, raw: bytes | None, *, special: bool = False) -> str:
        """A request's path → absolute path; EINVAL for anything xenstored refuses."""
        if raw is None or any(byte not in _PATH_BYTES for byte in raw):
            raise XsError("EINVAL")
        text = raw.decode("ascii")
        if text.startswith("@"):
            if not special or len(text) > REL_PATH_MAX:
                raise XsError("EINVAL")
            return text
        if not text.startswith("/"):
            text = f"/local/domain/{caller.domid}/{text}"
        if (text.endswith("/") and text != "/") or "//" in text:
            raise XsError("EINVAL")
        match = _LOCAL_PREFIX.match(text)
        if len(text) > (match.end() if match else 0) + REL_PATH_MAX:
            raise XsError("EINVAL")
        return text

    # --- reading ---------------------------------------------------------------------

    def _view(self, tx: Transaction | None) -> dict[str, Node]:
        return tx.nodes if tx is not None else self.nodes

    def _nearest(self, nodes: dict[str, Node], path: str) -> Node:
        """The nearest existing strict ancestor of `path` (the root always exists)."""
        while True:
            path = parent_of(path)
            node = nodes.get(path)
            if node is not None:
                return node

    def _get(self, caller: Caller, nodes: dict[str, Node], path: str, need: Access) -> Node:
        if not path.startswith("/"):  # only canonical paths get here
            raise XsError("EINVAL")
        node = nodes.get(path)
        if node is not None:
            if need in access_for(caller, node.perms):
                return node
            raise XsError("EACCES")
        if path != "/" and access_for(caller, self._nearest(nodes, path).perms) & need:
            raise XsError("ENOENT")
        raise XsError("EACCES")

    def read(self, caller: Caller, path: str, tx: Transaction | None = None) -> bytes:
        return self._get(caller, self._view(tx), path, Access.READ).value

    def directory(
        self, caller: Caller, path: str, tx: Transaction | None = None
    ) -> tuple[str, ...]:
        return self._get(caller, self._view(tx), path, Access.READ).children

    def generation(self, caller: Caller, path: str, tx: Transaction | None = None) -> int:
        return self._get(caller, self._view(tx), path, Access.READ).generation

    def get_perms(
        self, caller: Caller, path: str, tx: Transaction | None = None
    ) -> tuple[Perm, ...]:
        if path.startswith("@"):
            perms = self.special_perms.get(path)
            if perms is None:
                raise XsError("ENOENT")
            if Access.READ not in access_for(caller, perms):
                raise XsError("EACCES")
            return perms
        return self._get(caller, self._view(tx), path, Access.READ).perms

    # --- writing ---------------------------------------------------------------------

    def _commit(
        self, tx: Transaction | None, updates: dict[str, Node | None], changes: list[Change]
    ) -> list[Change]:
        """Apply checked updates (None deletes) to the tree or the transaction."""
        nodes = self._view(tx)
        for path, node in updates.items():
            if node is None:
                nodes.pop(path, None)
            else:
                nodes[path] = node
        if tx is not None:
            tx.changes.extend(changes)
            return []
        self.version += 1
        return changes

    def _check_size(self, caller: Caller, nodes: Iterable[Node | None]) -> None:
        if caller.privileged:
            return
        if any(node is not None and node.record_size() >= MAX_ENTRY_SIZE for node in nodes):
            raise XsError("ENOSPC")

    def _create(
        self, caller: Caller, nodes: dict[str, Node], path: str, value: bytes
    ) -> dict[str, Node | None]:
        """The nodes to write to create `path` and its missing ancestors."""
        missing = [path]
        while parent_of(missing[-1]) not in nodes:
            missing.append(parent_of(missing[-1]))
        parent_path = parent_of(missing[-1])
        parent = nodes[parent_path]
        updates: dict[str, Node | None] = {}
        for new_path in reversed(missing):
            name = new_path.rsplit("/", 1)[1]
            updates[parent_path] = replace(
                parent, children=(*parent.children, name), generation=self._gen()
            )
            perms = parent.perms
            if not caller.privileged:
                perms = (replace(perms[0], domid=caller.domid), *perms[1:])
            node = Node(value if new_path == path else b"", perms, (), self._gen())
            parent_path, parent = new_path, node
        updates[parent_path] = parent
        if not caller.privileged:
            owned = sum(1 for node in nodes.values() if node.owner == caller.domid)
            if owned + len(missing) > MAX_NODES_PER_DOMAIN:
                raise XsError("ENOSPC")
        return updates

    def write(
        self, caller: Caller, path: str, value: bytes, tx: Transaction | None = None
    ) -> list[Change]:
        nodes = self._view(tx)
        try:
            node = self._get(caller, nodes, path, Access.WRITE)
        except XsError as error:
            if error.name != "ENOENT":
                raise
            updates = self._create(caller, nodes, path, value)
        else:
            updates = {path: replace(node, value=value, generation=self._gen())}
        self._check_size(caller, updates.values())
        written = updates[path]
        assert written is not None
        parent = updates.get(parent_of(path)) or nodes.get(parent_of(path))
        change = Change(path, False, written.perms, parent.perms if parent else None)
        return self._commit(tx, updates, [change])

    def mkdir(self, caller: Caller, path: str, tx: Transaction | None = None) -> list[Change]:
        nodes = self._view(tx)
        try:
            self._get(caller, nodes, path, Access.WRITE)
            return []
        except XsError as error:
            if error.name != "ENOENT":
                raise
        updates = self._create(caller, nodes, path, b"")
        self._check_size(caller, updates.values())
        created = updates[path]
        assert created is not None
        parent = updates.get(parent_of(path))
        change = Change(path, False, created.perms, parent.perms if parent else None)
        return self._commit(tx, updates, [change])

    def _subtree(self, nodes: dict[str, Node], root: str) -> list[str]:
        """`root` and everything below it, every node after its descendants (iterative:
        a path of 2048 characters can be a thousand levels deep)."""
        order = []
        stack = [root]
        while stack:
            path = stack.pop()
            order.append(path)
            stack.extend(child_path(path, name) for name in nodes[path].children)
        order.reverse()
        return order

    def _remove(
        self, nodes: dict[str, Node], root: str, updates: dict[str, Node | None]
    ) -> list[Change]:
        changes = []
        for path in self._subtree(nodes, root):
            node = nodes[path]
            parent_path = parent_of(path)
            parent = nodes[parent_path]
            changes.append(Change(path, path != root, node.perms, parent.perms))
            updates[path] = None
        parent_path = parent_of(root)
        parent = updates.get(parent_path) or nodes[parent_path]
        name = root.rsplit("/", 1)[1]
        updates[parent_path] = replace(
            parent,
            children=tuple(c for c in parent.children if c != name),
            generation=self._gen(),
        )
        return changes

    def rm(self, caller: Caller, path: str, tx: Transaction | None = None) -> list[Change]:
        nodes = self._view(tx)
        try:
            self._get(caller, nodes, path, Access.WRITE)
        except XsError as error:
            # Removing what is not there is fine, as long as the parent is.
            if error.name == "ENOENT" and parent_of(path) in nodes:
                return []
            raise
        if path == "/":
            raise XsError("EINVAL")
        updates: dict[str, Node | None] = {}
        changes = self._remove(nodes, path, updates)
        return self._commit(tx, updates, changes)

    def set_perms(
        self,
        caller: Caller,
        path: str,
        raw_perms: list[bytes],
        tx: Transaction | None = None,
    ) -> list[Change]:
        if not raw_perms:
            raise XsError("EINVAL")
        if not caller.privileged and len(raw_perms) > MAX_PERMS_PER_NODE:
            raise XsError("ENOSPC")
        perms = tuple(self._mark_unknown(parse_perm(raw)) for raw in raw_perms)
        if perms[0].ignored:
            raise XsError("ENOENT")
        if path.startswith("@"):
            current = self.special_perms.get(path)
            if current is None:
                raise XsError("EINVAL")
            if access_for(caller, current) & (Access.WRITE | Access.OWNER) != (
                Access.WRITE | Access.OWNER
            ):
                raise XsError("EACCES")
            self.special_perms[path] = perms
            self.version += 1
            return []
        nodes = self._view(tx)
        node = self._get(caller, nodes, path, Access.WRITE | Access.OWNER)
        if not caller.privileged and perms[0].domid != node.owner:
            raise XsError("EPERM")
        updated = replace(node, perms=perms, generation=self._gen())
        self._check_size(caller, [updated])
        parent = nodes.get(parent_of(path)) if path != "/" else None
        change = Change(path, False, perms, parent.perms if parent else None, node.perms)
        return self._commit(tx, {path: updated}, [change])

    def _mark_unknown(self, perm: Perm) -> Perm:
        return perm if perm.domid in self.domains else replace(perm, ignored=True)

    # --- transactions ------------------------------------------------------------------

    def begin(self, tx_id: int) -> Transaction:
        return Transaction(tx_id, dict(self.nodes), self.version)

    def commit(self, tx: Transaction) -> list[Change]:
        """Make a transaction's changes visible, or EAGAIN if the tree moved meanwhile."""
        if not tx.changes:
            return []
        if tx.start_version != self.version:
            raise XsError("EAGAIN")
        self.nodes = tx.nodes
        self.version += 1
        return list(tx.changes)

    # --- domains -----------------------------------------------------------------------

    def introduce(self, domid: int) -> list[Change]:
        if not 0 < domid < DOMID_FIRST_RESERVED:
            raise XsError("EINVAL")
        if domid in self.domains:
            return []
        self.domains.add(domid)
        self.version += 1
        return [Change(INTRODUCE_DOMAIN, True, ())]

    def is_introduced(self, domid: int) -> bool:
        return domid in self.domains

    def set_target(self, domid: int, target: int) -> None:
        if domid not in self.domains or target not in self.domains:
            raise XsError("ENOENT")
        self.targets[domid] = target

    def release(self, domid: int) -> list[Change]:
        """Forget a domain: delete the nodes it owns, make permission entries naming it
        inert (a later domain with the same id must not inherit them), fire
        @releaseDomain."""
        if domid == 0:
            raise XsError("EINVAL")
        if domid not in self.domains:
            raise XsError("ENOENT")
        nodes = dict(self.nodes)
        changes: list[Change] = []
        pending = ["/"]
        while pending:  # top-down: a removed node takes its whole subtree with it
            path = pending.pop()
            node = nodes.get(path)
            if node is None:
                continue
            if path != "/" and node.owner == domid:
                updates: dict[str, Node | None] = {}
                changes.extend(self._remove(nodes, path, updates))
                for changed, new in updates.items():
                    if new is None:
                        nodes.pop(changed, None)
                    else:
                        nodes[changed] = new
                continue
            pending.extend(child_path(path, name) for name in reversed(node.children))
        for path, node in nodes.items():
            if any(p.domid == domid and not p.ignored for p in node.perms[1:]):
                nodes[path] = replace(node, perms=self._inert(node.perms, domid))
        self.nodes = nodes
        self.version += 1
        for name, perms in self.special_perms.items():
            self.special_perms[name] = (perms[0], *(p for p in perms[1:] if p.domid != domid))
        self.domains.discard(domid)
        self.targets = {d: t for d, t in self.targets.items() if domid not in (d, t)}
        return [*changes, Change(RELEASE_DOMAIN, True, ())]

    @staticmethod
    def _inert(perms: tuple[Perm, ...], domid: int) -> tuple[Perm, ...]:
        rest = tuple(replace(p, ignored=True) if p.domid == domid else p for p in perms[1:])
        return (perms[0], *rest)
