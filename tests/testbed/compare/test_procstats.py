"""Reading Dom0's costs from /proc."""

from __future__ import annotations

import os

import pytest
from metadata_server_testbed.compare import procstats
from metadata_server_testbed.compare.procstats import Usage, parse_snmp

from tests.support.requirements import need_root, need_tools

SNMP = """Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 1234
Tcp: RtoAlgorithm ActiveOpens PassiveOpens
Tcp: 1 5 42
Udp: InDatagrams NoPorts
Udp: 17 -3
"""


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Tcp.PassiveOpens", 42),
        ("Udp.InDatagrams", 17),
        ("Udp.NoPorts", -3),
        ("Ip.InReceives", 1234),
    ],
    ids=["tcp", "udp", "negative", "ip"],
)
def test_parse_snmp(key: str, value: int) -> None:
    assert parse_snmp(SNMP)[key] == value


def test_parse_snmp_skips_mismatched_lines() -> None:
    assert parse_snmp("Tcp: A B\nUdp: 1 2\n") == {}


def test_usage_arithmetic() -> None:
    a, b = Usage(2.0, 10, 1, 100), Usage(0.5, 4, 0, 40)
    assert a - b == Usage(1.5, 6, 1, 60) and b + (a - b) == a


def test_usage_of_this_process_and_of_none() -> None:
    sum(i * i for i in range(200000))  # some CPU
    own = procstats.usage_of(os.getpid())
    assert own.cpu_seconds > 0 and own.wchar >= 0
    assert procstats.usage_of(2**22 + 12345) == Usage()  # above pid_max: never a process
    assert procstats.command(os.getpid()) != "" and procstats.command(2**22 + 12345) == ""


@pytest.mark.root
def test_tasks_created_in_a_pid_namespace() -> None:
    need_root()
    need_tools("nsenter")
    first = procstats.last_pid(os.getpid())
    os.spawnv(os.P_WAIT, "/bin/true", ["true"])
    os.spawnv(os.P_WAIT, "/bin/true", ["true"])
    assert procstats.last_pid(os.getpid()) - first >= 3  # two children and one reader
