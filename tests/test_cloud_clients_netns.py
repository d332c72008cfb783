"""Standard clients against the server, from guests in network namespaces that reach it
at 169.254.169.254: cloud-init 22.4's EC2, OpenStack and NoCloud readers (the Debian
package, run by the system Python), and the IMDSv2 flow with curl exactly as the AWS
documentation shows it, including a guest one routed hop away that must not get a token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metadata_server.app import MetadataService
from tests.conftest import SAMPLE_KEY, guest_body, make_settings, start_in_netns
from tests.support.netns import BridgeNetwork, Guest, Netns, bridge_network, in_netns, run, unique
from tests.support.requirements import need_root, need_tools

MAC = "02:00:c6:12:00:0b"
USER_DATA = "#!/bin/sh\necho from-user-data\n"
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class World:
    net: BridgeNetwork
    service: MetadataService
    guest: Guest
    instance_id: str


@pytest.fixture
def net() -> Iterator[BridgeNetwork]:
    need_root()
    need_tools("ip", "curl", SYSTEM_PYTHON)
    probe = run(
        [SYSTEM_PYTHON, "-c", "import cloudinit.version as v; print(v.version_string())"],
        check=False,
    )
    if not probe.startswith("22."):
        need_tools("cloud-init (Debian package, 22.x)")
    with bridge_network() as network:
        network.add_metadata_address()
        yield network


@pytest.fixture
async def world(net: BridgeNetwork, tmp_path: Path) -> AsyncIterator[World]:
    settings = make_settings(
        tmp_path, **{"guest.listen": ["169.254.169.254:80"], "domain": "guests.internal"}
    )
    service = await start_in_netns(settings, net.dom0.name)
    try:
        assert service.registry is not None
        result = await service.registry.put(
            MAC,
            guest_body(
                1,
                ipv4={"address": "198.18.0.11", "prefix": 24, "gateway": "198.18.0.1"},
                user_data=USER_DATA,
            ),
        )
        guest = net.add_guest(MAC, "198.18.0.11")
        yield World(net, service, guest, result.vm.instance_id)
    finally:
        await service.stop()


async def python_in(ns: Netns, code: str) -> object:
    out = await asyncio.to_thread(ns.run, SYSTEM_PYTHON, "-c", code, timeout=60)
    return json.loads(out.strip().splitlines()[-1])


EC2_READER = """
import json
from cloudinit.sources.helpers import ec2
md = ec2.get_instance_metadata(api_version="2021-03-23", timeout=5, retries=0)
ud = ec2.get_instance_userdata(api_version="2021-03-23", timeout=5, retries=0)
print(json.dumps({"md": md, "ud": ud.decode()}, default=str))
"""

OPENSTACK_READER = """
import json
from cloudinit.sources.helpers import openstack
result = openstack.MetadataReader("http://169.254.169.254", timeout=5, retries=0).read_v2()
result["userdata"] = result["userdata"].decode()
print(json.dumps(result, default=str))
"""

NOCLOUD_READER = """
import json, tempfile
from cloudinit import helpers, user_data, util
md, ud, vd = util.read_seeded("http://169.254.169.254/nocloud/", timeout=5, retries=0)
paths = helpers.Paths({"cloud_dir": tempfile.mkdtemp()})
message = user_data.UserDataProcessor(paths).process(ud)
parts = [[p.get_content_type(), p.get_payload(decode=True).decode()]
         for p in message.walk() if not p.is_multipart()]
print(json.dumps({"md": md, "ud": ud.decode(), "vd": vd.decode(), "parts": parts}))
"""


async def test_cloud_init_ec2_crawler(world: World) -> None:
    result = await python_in(world.guest.ns, EC2_READER)
    assert isinstance(result, dict)
    md = result["md"]
    assert md["instance-id"] == world.instance_id
    assert md["local-hostname"] == "guest1.guests.internal"
    assert md["local-ipv4"] == "198.18.0.11"
    assert (
        md["public-keys"] == {"admin@example": [SAMPLE_KEY]}
        or md["public-keys"]["admin@example"] == SAMPLE_KEY
    )
    assert md["network"]["interfaces"]["macs"][MAC]["subnet-ipv4-cidr-block"] == "198.18.0.0/24"
    assert md["placement"]["availability-zone"] == "local-1a"
    assert result["ud"] == USER_DATA


async def test_cloud_init_openstack_reader(world: World) -> None:
    result = await python_in(world.guest.ns, OPENSTACK_READER)
    assert isinstance(result, dict)
    metadata = result["metadata"]
    assert metadata["uuid"] == world.instance_id and metadata["instance-id"] == world.instance_id
    assert (
        metadata["hostname"] == "guest1.guests.internal"
        and metadata["local-hostname"] == "guest1.guests.internal"
    )
    assert list(metadata["public_keys"].values()) == [SAMPLE_KEY]
    assert result["networkdata"]["links"][0]["ethernet_mac_address"] == MAC
    assert "from-user-data" in result["userdata"] and "root" in result["userdata"]
    assert result["ec2-metadata"]["instance-id"] == world.instance_id


async def test_cloud_init_nocloud_seed_reader(world: World) -> None:
    result = await python_in(world.guest.ns, NOCLOUD_READER)
    assert isinstance(result, dict)
    assert result["md"]["instance-id"] == world.instance_id
    assert result["md"]["local-hostname"] == "guest1.guests.internal"
    assert "from-user-data" in result["ud"]
    types = [content_type for content_type, _ in result["parts"]]
    assert types == ["text/cloud-config", "text/x-shellscript"], "cloud-init sees both parts"
    assert "type: hash" in result["parts"][0][1] and result["parts"][1][1] == USER_DATA


AWS_DOC_FLOW = (
    'TOKEN=`curl -s -X PUT "http://169.254.169.254/latest/api/token" '
    '-H "X-aws-ec2-metadata-token-ttl-seconds: 21600"` '
    '&& curl -s -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/'
)


async def test_imdsv2_with_curl_as_the_aws_documentation_shows(world: World) -> None:
    out = await asyncio.to_thread(world.guest.ns.run, "sh", "-c", AWS_DOC_FLOW)
    assert "instance-id" in out.split("\n") and "local-ipv4" in out.split("\n")


def routed_guest(net: BridgeNetwork) -> Netns:
    """A guest one router hop away from the bridge (a container or NAT in between):
    198.19.0.2 behind a router at 198.18.0.2 / 198.19.0.1."""
    router, behind = Netns(unique("rt")), Netns(unique("ct"))
    for ns in (router, behind):
        run(["ip", "netns", "add", ns.name])
        net._cleanup.append(["ip", "netns", "delete", ns.name])
    uplink, inner = unique("ru"), unique("ri")
    run(["ip", "link", "add", uplink, "type", "veth", "peer", "name", "up0", "netns", router.name])
    run(["ip", "link", "set", uplink, "netns", net.dom0.name])
    net.dom0.run("ip", "link", "set", uplink, "master", net.bridge, "up")
    run(["ip", "link", "add", inner, "type", "veth", "peer", "name", "eth0", "netns", behind.name])
    run(["ip", "link", "set", inner, "netns", router.name])
    router.run("ip", "addr", "add", "198.18.0.2/24", "dev", "up0")
    router.run("ip", "link", "set", "up0", "up")
    router.run("ip", "addr", "add", "198.19.0.1/24", "dev", inner)
    router.run("ip", "link", "set", inner, "up")
    router.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    router.run("ip", "route", "add", "169.254.169.254/32", "via", net.gateway)
    behind.run("ip", "addr", "add", "198.19.0.2/24", "dev", "eth0")
    behind.run("ip", "link", "set", "eth0", "up")
    behind.run("ip", "route", "add", "default", "via", "198.19.0.1")
    net.dom0.run("ip", "route", "add", "198.19.0.0/24", "via", "198.18.0.2")
    return behind


def curl_status(ns: Netns, *args: str) -> str:
    return ns.run(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", *args, check=False
    )


async def test_token_reply_does_not_cross_a_router(net: BridgeNetwork, tmp_path: Path) -> None:
    """A guest behind a NAT or container hop gets metadata, but never a token: the token
    reply leaves with IP TTL 1 and dies at the hop. (The neighbour check cannot vouch
    for a routed guest, so this server runs without it, to test the hop limit alone.)"""
    settings = make_settings(
        tmp_path, **{"guest.listen": ["169.254.169.254:80"], "guest.verify_neighbour": "never"}
    )
    service = MetadataService(settings)
    with in_netns(net.dom0.name):
        await service.start()
    try:
        assert service.registry is not None
        await service.registry.put(
            MAC,
            guest_body(2, ipv4={"address": "198.19.0.2", "prefix": 24, "gateway": "198.19.0.1"}),
        )
        behind = routed_guest(net)
        url = "http://169.254.169.254/latest"
        get = await asyncio.to_thread(curl_status, behind, f"{url}/meta-data/instance-id")
        put = await asyncio.to_thread(
            curl_status, behind, "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60",
            f"{url}/api/token",
        )  # fmt: skip
        assert get == "200", "ordinary replies cross the hop"
        assert put == "000", "the token reply must die at the hop"
        near = net.add_guest("02:00:c6:12:00:0d", "198.18.0.13")
        await service.registry.put(
            "02:00:c6:12:00:0d", guest_body(3, ipv4={"address": "198.18.0.13", "prefix": 24})
        )
        put = await asyncio.to_thread(
            curl_status, near.ns, "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60",
            f"{url}/api/token",
        )  # fmt: skip
        assert put == "200", "a guest on the bridge itself gets its token"
    finally:
        await service.stop()
