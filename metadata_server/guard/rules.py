"""The bridge guard's nftables rules, from what the registry and the bridge say (pure).

One table in the `bridge` family holds one chain on the prerouting hook, which sends every
frame that enters the Dom0 bridge from a guest port to the checks below; Dom0's own
frames (the output hook) and the uplinks' are not touched. The checks are the same for
every guest; who may send what lives in sets, so a change of the registry or the ports
replaces set elements (`elements_commands`), one transaction, and the rules stay:

- a frame from a MAC no guest has registered is dropped, but for a DHCP request (from
  0.0.0.0), which the DHCP server then refuses cleanly (it has no reservation for it);
- where a port's MAC is known (Xen's vif backends, `guard.ports`), a frame on that port
  must carry it, and a bound MAC on any other port is dropped; on Xen a guest port whose
  MAC is not known yet drops everything until it is;
- IPv4 must come from the sender MAC's reserved address (or 0.0.0.0 for DHCP requests);
  ARP must carry the sender's own MAC and reserved address (or 0.0.0.0, a probe, which
  teaches nobody anything);
- DHCP and DNS answers (UDP/TCP source port 67, 53, 547), router advertisements, and
  frames that are none of IPv4, ARP and IPv6 (VLAN tags included) are dropped.

Drops are counted per kind in sets keyed by the sender's MAC, or its port for frames on the
wrong port (nftables keeps a counter per element), so an admin sees who tried what;
unregistered senders share one counter.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FAMILY = "bridge"
TABLE_PREFIX = "metadata_guard_"
PRIORITY = -200
DROP_KINDS = ("address", "arp", "port", "server", "other")
DROP_SET_SIZE = 65536
Json = dict[str, Any]


def table_name(bridge: str) -> str:
    return TABLE_PREFIX + bridge.replace("-", "_").replace(".", "_")


@dataclass(frozen=True)
class GuardPlan:
    """Who may send what on one bridge.

    `guests`: (MAC, reserved IPv4) of every registered guest; `bindings`: bridge port →
    the MAC it carries; `guest_ports`: the bridge's ports that face guests; `strict_ports`:
    guest ports that must be bound before they may send (Xen vifs).
    """

    bridge: str
    guests: tuple[tuple[str, str], ...] = ()
    bindings: Mapping[str, str] = field(default_factory=dict)
    guest_ports: frozenset[str] = frozenset()
    strict_ports: frozenset[str] = frozenset()
    left_out: tuple[str, ...] = ()  # why some guests have no place in the sets


def plan(
    bridge: str,
    guests: Iterable[tuple[str, str]],
    *,
    ports: Iterable[str],
    patterns: Iterable[str],
    bindings: Mapping[str, str],
    strict_patterns: Iterable[str] = (),
    dom0_addresses: Iterable[str] = (),
) -> GuardPlan:
    """The plan for `bridge`, whose ports are `ports`. A guest reserving one of Dom0's own
    addresses (a gateway, the metadata or DNS address) gets no place: nobody but Dom0 may
    claim those, and the reason is kept in `left_out`."""
    patterns = tuple(patterns)
    strict = tuple(strict_patterns)
    reserved = frozenset(dom0_addresses)
    kept: list[tuple[str, str]] = []
    left_out: list[str] = []
    for mac, address in sorted(guests):
        if address in reserved:
            left_out.append(f"{mac} reserves {address}, an address of Dom0's")
        else:
            kept.append((mac, address))
    guest_ports = frozenset(
        port for port in ports if any(fnmatch.fnmatchcase(port, p) for p in patterns)
    ) | frozenset(bindings)
    return GuardPlan(
        bridge=bridge,
        guests=tuple(kept),
        bindings=dict(sorted(bindings.items())),
        guest_ports=guest_ports,
        strict_ports=frozenset(
            port for port in guest_ports if any(fnmatch.fnmatchcase(port, p) for p in strict)
        ),
        left_out=tuple(left_out),
    )


# --- JSON expression builders ---------------------------------------------------------


def _payload(protocol: str, name: str) -> Json:
    return {"payload": {"protocol": protocol, "field": name}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _concat(*parts: Json) -> Json:
    return {"concat": list(parts)}


ETHER_SRC = _payload("ether", "saddr")
IIFNAME = _meta("iifname")


class _Table:
    def __init__(self, bridge: str) -> None:
        self.name = table_name(bridge)

    def ref(self, **fields: Any) -> Json:
        return {"family": FAMILY, "table": self.name, **fields}

    def rule(self, chain: str, *expr: Json) -> Json:
        return {"add": {"rule": self.ref(chain=chain, expr=list(expr))}}

    def chain(self, name: str, **hook: Any) -> Json:
        return {"add": {"chain": self.ref(name=name, **hook)}}

    def set(self, name: str, kind: str | list[str], **extra: Any) -> Json:
        return {"add": {"set": self.ref(name=name, type=kind, **extra)}}


# Sets the plan fills: name → nftables type.
ELEMENT_SETS: dict[str, str | list[str]] = {
    "macs": "ether_addr",  # registered guests
    "pairs": ["ether_addr", "ipv4_addr"],  # MAC . its reserved address
    "guest_ports": "ifname",  # the bridge's ports that face guests
    "bound_ports": "ifname",  # guest ports whose MAC is known
    "strict_ports": "ifname",  # guest ports that send nothing until bound
    "port_mac": ["ifname", "ether_addr"],  # port . the MAC it carries
    "bound_macs": "ether_addr",  # MACs whose port is known
}


def _refusal(t: _Table, kind: str) -> list[Json]:
    """A chain that counts the sender under `kind` (by MAC; by port for frames on the
    wrong port, whose MAC is someone else's), then drops. The drop has a rule of its own:
    when the counting set is full its update fails, and the frame must still go."""
    chain = f"refuse_{kind}"
    key = IIFNAME if kind == "port" else ETHER_SRC
    return [
        t.chain(chain),
        t.rule(chain, {"set": {"op": "update", "elem": key, "set": f"@drops_{kind}"}}),
        t.rule(chain, {"drop": None}),
    ]


def _refuse(kind: str) -> Json:
    return {"jump": {"target": f"refuse_{kind}"}}


def table_commands(plan: GuardPlan) -> list[Json]:
    """The whole table, replacing any earlier one (a crashed server's too): one batch."""
    t = _Table(plan.bridge)
    commands: list[Json] = [
        {"add": {"table": {"family": FAMILY, "name": t.name}}},
        {"delete": {"table": {"family": FAMILY, "name": t.name}}},
        {"add": {"table": {"family": FAMILY, "name": t.name}}},
    ]
    commands += [t.set(name, kind) for name, kind in ELEMENT_SETS.items()]
    commands += [
        t.set(
            f"drops_{kind}",
            "ifname" if kind == "port" else "ether_addr",
            size=DROP_SET_SIZE,
            stmt=[{"counter": None}],
        )
        for kind in DROP_KINDS
    ]
    commands.append({"add": {"counter": t.ref(name="unregistered")}})
    for kind in DROP_KINDS:
        commands += _refusal(t, kind)
    commands += [
        t.chain(name) for name in ("guest", "unregistered", "check_arp", "check_ip", "check_ip6")
    ]
    commands += _guest_rules(t)
    commands += [
        t.chain("prerouting", type="filter", hook="prerouting", prio=PRIORITY, policy="accept"),
        t.rule("prerouting", _match(IIFNAME, "@guest_ports"), {"jump": {"target": "guest"}}),
    ]
    commands += elements_commands(plan)
    return commands


def _dhcp_request() -> list[Json]:
    return [
        _match(_payload("ip", "saddr"), "0.0.0.0"),  # noqa: S104 (a DHCP request's source, not a bind)
        _match(_payload("udp", "sport"), 68),
        _match(_payload("udp", "dport"), 67),
    ]


def _arp_ipv4() -> list[Json]:
    """ARP for IPv4 over Ethernet (other forms would put the fields elsewhere)."""
    return [
        _match(_payload("arp", "htype"), 1),
        _match(_payload("arp", "ptype"), "ip"),
        _match(_payload("arp", "hlen"), 6),
        _match(_payload("arp", "plen"), 4),
    ]


def _guest_rules(t: _Table) -> list[Json]:
    ether_type = _payload("ether", "type")
    server_ports = {"set": [53, 67, 547]}
    return [
        # Who is sending: a registered MAC, on its own port.
        t.rule("guest", _match(ETHER_SRC, "@macs", "!="), {"jump": {"target": "unregistered"}}),
        t.rule(
            "guest",
            _match(IIFNAME, "@strict_ports"),
            _match(IIFNAME, "@bound_ports", "!="),
            _refuse("port"),
        ),
        t.rule(
            "guest",
            _match(IIFNAME, "@bound_ports"),
            _match(_concat(IIFNAME, ETHER_SRC), "@port_mac", "!="),
            _refuse("port"),
        ),
        t.rule(
            "guest",
            _match(ETHER_SRC, "@bound_macs"),
            _match(_concat(IIFNAME, ETHER_SRC), "@port_mac", "!="),
            _refuse("port"),
        ),
        # What it sends.
        t.rule("guest", _match(ether_type, "arp"), {"jump": {"target": "check_arp"}}),
        t.rule("guest", _match(ether_type, "ip"), {"jump": {"target": "check_ip"}}),
        t.rule("guest", _match(ether_type, "ip6"), {"jump": {"target": "check_ip6"}}),
        t.rule("guest", _refuse("other")),
        # An unregistered sender may only ask DHCP (and be refused by it).
        t.rule("unregistered", _match(ether_type, "ip"), *_dhcp_request(), {"accept": None}),
        t.rule("unregistered", {"counter": "unregistered"}, {"drop": None}),
        # Both the frame's and the ARP sender's MAC must hold the sender address (an
        # address is reserved for one MAC only, so they are the same guest's); a probe
        # (sender 0.0.0.0) teaches nobody anything and must come from a guest's own MAC.
        t.rule(
            "check_arp",
            *_arp_ipv4(),
            _match(_payload("arp", "saddr ip"), "0.0.0.0"),  # noqa: S104 (an ARP probe's sender, not a bind)
            _match(_payload("arp", "saddr ether"), "@macs"),
            {"accept": None},
        ),
        t.rule(
            "check_arp",
            *_arp_ipv4(),
            _match(_concat(ETHER_SRC, _payload("arp", "saddr ip")), "@pairs"),
            _match(_concat(_payload("arp", "saddr ether"), _payload("arp", "saddr ip")), "@pairs"),
            {"accept": None},
        ),
        t.rule("check_arp", _refuse("arp")),
        t.rule("check_ip", *_dhcp_request(), {"accept": None}),
        t.rule(
            "check_ip",
            _match(_concat(ETHER_SRC, _payload("ip", "saddr")), "@pairs", "!="),
            _refuse("address"),
        ),
        t.rule("check_ip", _match(_payload("udp", "sport"), server_ports), _refuse("server")),
        t.rule("check_ip", _match(_payload("tcp", "sport"), 53), _refuse("server")),
        t.rule("check_ip", {"accept": None}),
        t.rule(
            "check_ip6", _match(_payload("icmpv6", "type"), "nd-router-advert"), _refuse("server")
        ),
        t.rule("check_ip6", _match(_payload("udp", "sport"), server_ports), _refuse("server")),
        t.rule("check_ip6", _match(_payload("tcp", "sport"), 53), _refuse("server")),
        t.rule("check_ip6", {"accept": None}),
    ]


Element = str | tuple[str, ...]  # a concatenation is a tuple


def _elements(plan: GuardPlan) -> dict[str, set[Element]]:
    bound = {port: mac for port, mac in plan.bindings.items() if port in plan.guest_ports}
    return {
        "macs": {mac for mac, _ in plan.guests},
        "pairs": set(plan.guests),
        "guest_ports": set(plan.guest_ports),
        "bound_ports": set(bound),
        "strict_ports": set(plan.strict_ports),
        "port_mac": set(bound.items()),
        "bound_macs": set(bound.values()),
    }


def _json(elements: Iterable[Element]) -> list[Any]:
    return sorted(
        ({"concat": list(e)} if isinstance(e, tuple) else e for e in elements),
        key=lambda e: e if isinstance(e, str) else " ".join(e["concat"]),
    )


def elements_commands(plan: GuardPlan) -> list[Json]:
    """Every set's elements replaced by the plan's: one batch, rules and counters kept."""
    t = _Table(plan.bridge)
    commands: list[Json] = []
    for name, elements in _elements(plan).items():
        commands.append({"flush": {"set": t.ref(name=name)}})
        if elements:
            commands.append({"add": {"element": t.ref(name=name, elem=_json(elements))}})
    return commands


def update_commands(applied: GuardPlan, plan: GuardPlan) -> list[Json]:
    """From the sets of `applied` to those of `plan`: only the elements that differ are
    deleted and added, in one batch (a change costs what it changes, not the registry's
    size). An empty list when nothing differs."""
    t = _Table(plan.bridge)
    before, after = _elements(applied), _elements(plan)
    commands: list[Json] = []
    for name, elements in after.items():
        gone, added = before[name] - elements, elements - before[name]
        if gone:
            commands.append({"delete": {"element": t.ref(name=name, elem=_json(gone))}})
        if added:
            commands.append({"add": {"element": t.ref(name=name, elem=_json(added))}})
    return commands


def delete_commands(bridge: str) -> list[Json]:
    """The table gone (added first, so the batch holds whether or not it was there)."""
    name = table_name(bridge)
    return [
        {"add": {"table": {"family": FAMILY, "name": name}}},
        {"delete": {"table": {"family": FAMILY, "name": name}}},
    ]
