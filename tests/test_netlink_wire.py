"""The watches' own reading of rtnetlink events (netlink/wire.py) against pyroute2's full
decode of the same datagrams, sent by the real kernel in a namespace made here; and what
a datagram that does not frame gets."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
)

from metadata_server.netlink import wire
from tests.support.netns import Netns, in_netns, run, unique
from tests.support.requirements import need_root, need_tools, root_fixture

GROUPS = (
    RTMGRP_LINK
    | RTMGRP_NEIGH
    | RTMGRP_IPV4_IFADDR
    | RTMGRP_IPV4_ROUTE
    | RTMGRP_IPV6_IFADDR
    | RTMGRP_IPV6_ROUTE
)
STEPS = [
    "link add br0 type bridge",
    "link set br0 up",
    "addr add 198.18.40.1/24 dev br0",
    "link add vw0 type veth peer name vw0p",
    "link set vw0 master br0",
    "link set vw0 up",
    "link set vw0p up",
    "neigh add 198.18.40.7 lladdr 02:00:c6:12:28:07 dev br0",
    "neigh add 2001:db8::7 lladdr 02:00:c6:12:28:07 dev br0",
    "route add 198.18.41.0/24 via 198.18.40.7",
    "neigh del 198.18.40.7 dev br0",
    "link set vw0 nomaster",
    "link del vw0",
]


@pytest.fixture(scope="module")
@root_fixture
def datagrams() -> Iterator[list[bytes]]:
    """Every datagram the kernel multicast while STEPS ran in a fresh namespace."""
    need_root()
    need_tools("ip")
    ns = Netns(unique("wire"))
    run(["ip", "netns", "add", ns.name])
    try:
        with in_netns(ns.name):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((0, GROUPS))
            for step in STEPS:
                ns.run("ip", *step.split())
            sock.settimeout(0.5)
            received = []
            try:
                while True:
                    received.append(sock.recv(1 << 16))
            except TimeoutError:
                pass
        yield received
    finally:
        run(["ip", "netns", "del", ns.name], check=False)


def _pyroute2(datagram: bytes) -> list[object]:
    with IPRoute() as ipr:
        return list(ipr.marshal.parse(datagram))


def test_every_event_reads_as_pyroute2_reads_it(datagrams: list[bytes]) -> None:
    kinds: set[int] = set()
    for datagram in datagrams:
        ours = list(wire.parse(datagram))
        theirs: list[object] = _pyroute2(datagram)
        assert len(ours) == len(theirs)
        for event, message in zip(ours, theirs, strict=True):
            m: object = message
            assert event.kind == m["header"]["type"]  # type: ignore[index]
            assert event.family == m["family"]  # type: ignore[index]
            kinds.add(event.kind)
            if event.kind in (wire.RTM_NEWLINK, wire.RTM_DELLINK):
                assert event.index == m["index"]  # type: ignore[index]
                assert event.text(wire.IFLA_IFNAME) == m.get("ifname")  # type: ignore[attr-defined]
                assert event.u32(wire.IFLA_MASTER) == m.get("master")  # type: ignore[attr-defined]
            if event.kind in (wire.RTM_NEWNEIGH, wire.RTM_DELNEIGH):
                assert event.index == m["ifindex"]  # type: ignore[index]
                assert event.address(wire.NDA_DST) == m.get("dst")  # type: ignore[attr-defined]
            if event.kind in (wire.RTM_NEWADDR, wire.RTM_DELADDR):
                assert event.index == m["index"]  # type: ignore[index]
    # the steps made every kind the watches read
    assert {
        wire.RTM_NEWLINK,
        wire.RTM_DELLINK,
        wire.RTM_NEWADDR,
        wire.RTM_NEWROUTE,
        wire.RTM_NEWNEIGH,
        wire.RTM_DELNEIGH,
    } <= kinds


def test_members_and_neighbours_are_seen(datagrams: list[bytes]) -> None:
    events = [event for datagram in datagrams for event in wire.parse(datagram)]
    links = {
        e.text(wire.IFLA_IFNAME): e
        for e in events
        if e.kind == wire.RTM_NEWLINK and e.text(wire.IFLA_IFNAME) == "br0"
    }
    bridge_index = links["br0"].index
    enslaved = [
        e
        for e in events
        if e.kind == wire.RTM_NEWLINK
        and e.text(wire.IFLA_IFNAME) == "vw0"
        and e.u32(wire.IFLA_MASTER) == bridge_index
    ]
    assert enslaved
    neighbours = {e.address(wire.NDA_DST) for e in events if e.kind == wire.RTM_NEWNEIGH}
    assert {"198.18.40.7", "2001:db8::7"} <= neighbours
    assert "198.18.40.7" in {e.address(wire.NDA_DST) for e in events if e.kind == wire.RTM_DELNEIGH}


def test_a_datagram_cut_short_does_not_frame(datagrams: list[bytes]) -> None:
    datagram = max(datagrams, key=len)
    with pytest.raises(wire.WireError, match="bytes at 0 of"):
        list(wire.parse(datagram[: len(datagram) - 8]))


def _message(kind: int, body: bytes) -> bytes:
    return wire.NLMSG_HEADER.pack(wire.NLMSG_HEADER.size + len(body), kind, 0, 0, 0) + body


def test_odd_messages_are_passed_over_or_cut_at_the_bad_attribute() -> None:
    ndmsg = struct.pack("=BxxxiHBB", socket.AF_INET, 3, 2, 0, 0)
    good_dst = struct.pack("=HH", 8, wire.NDA_DST) + bytes([198, 18, 40, 9])
    overlong = struct.pack("=HH", 64, wire.NDA_DST) + bytes(4)  # says 64, has 8
    datagram = (
        _message(1, b"")  # NLMSG_NOOP: not an event
        + _message(wire.RTM_NEWNEIGH, ndmsg[:6] + b"\0\0")  # shorter than its header
        + _message(wire.RTM_NEWNEIGH, ndmsg + good_dst)
        + _message(wire.RTM_NEWNEIGH, ndmsg + overlong)
    )
    events = list(wire.parse(datagram))
    assert [(e.kind, e.index, e.address(wire.NDA_DST)) for e in events] == [
        (wire.RTM_NEWNEIGH, 3, "198.18.40.9"),
        (wire.RTM_NEWNEIGH, 3, None),
    ]


@pytest.mark.root
def test_one_neighbour_entry_asked_of_the_kernel() -> None:
    """RTM_GETNEIGH for one address, built and read here, answered by the real kernel
    as pyroute2 reads the same entry; an address without an entry is ENOENT."""
    need_root()
    need_tools("ip")
    ns = Netns(unique("wireq"))
    run(["ip", "netns", "add", ns.name])
    try:
        for step in (
            "link add dq0 type veth peer name dq1",
            "link set dq0 up",
            "neigh add 198.18.40.8 lladdr 02:00:C6:12:28:08 dev dq0",
            "neigh add 2001:db8::8 lladdr 02:00:c6:12:28:09 dev dq0",
        ):
            ns.run("ip", *step.split())
        with in_netns(ns.name):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname="dq0")[0]
                theirs = ipr.neigh("get", dst="198.18.40.8", ifindex=index)[0]
        with sock:
            sock.settimeout(2)
            answers = {}
            for number, address in enumerate(("198.18.40.8", "2001:db8::8", "198.18.40.99"), 1):
                sock.send(wire.neighbour_request(number, address, index))
                (reply,) = wire.neighbour_replies(sock.recv(1 << 16))
                assert reply.sequence == number
                answers[address] = reply
    finally:
        run(["ip", "netns", "del", ns.name], check=False)
    assert answers["198.18.40.8"].lladdr == theirs.get("lladdr") == "02:00:c6:12:28:08"
    assert answers["198.18.40.8"].state == theirs["state"]
    assert answers["198.18.40.8"].error == 0
    assert answers["2001:db8::8"].lladdr == "02:00:c6:12:28:09"
    assert answers["198.18.40.99"].error == errno.ENOENT
    assert answers["198.18.40.99"].lladdr is None
