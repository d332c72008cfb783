"""Standard clients against the server, from guests in network namespaces that reach it
at 169.254.169.254: cloud-init 22.4's EC2, OpenStack and NoCloud readers (the Debian
package, run by the system Python), the IMDSv2 flow with curl exactly as the AWS
documentation shows it, including a guest one routed hop away that must not get a token,
and the IMDS clients people really run, unchanged: botocore's region and credential
fetchers, the `ec2-metadata` library and CLI (PyPI), Debian's `ec2-metadata`
(amazon-ec2-utils) and the AWS SDK for JavaScript v3, with the odd paths they send
(`//latest/...`, `/latest//meta-data/...`, `placement/availability-zone/`,
`/latest/user-data/`), and curl `--path-as-is` for every slash form.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metadata_server.app import MetadataService
from tests.support.netns import BridgeNetwork, Guest, Netns, bridge_network, in_netns, run, unique
from tests.support.records import SAMPLE_KEY, guest_body
from tests.support.requirements import in_ci, need_root, need_tools, root_fixture
from tests.support.service import make_settings, start_in_netns

MAC = "02:00:c6:12:00:0b"
USER_DATA = "#!/bin/sh\necho from-user-data\n"
SYSTEM_PYTHON = "/usr/bin/python3"
ROOT = Path(__file__).resolve().parent.parent
JS_CLIENTS = ROOT / "tests" / "imds_clients"


@dataclass
class World:
    net: BridgeNetwork
    service: MetadataService
    guest: Guest
    instance_id: str


@pytest.fixture
@root_fixture
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


# --- the paths real clients send --------------------------------------------------------

# (id, path sent as is, status, what the body must be: a canonical path's body, or None)
CURL_FORMS = [
    ("ec2-leading", "//latest/meta-data/instance-id", 200, "/latest/meta-data/instance-id"),
    ("ec2-middle", "/latest//meta-data/instance-id", 200, "/latest/meta-data/instance-id"),
    ("root-triple", "///", 200, "/"),
    ("az-trailing", "/latest/meta-data/placement/availability-zone/", 200, "/latest/meta-data/placement/availability-zone"),
    ("user-data-trailing", "/latest/user-data/", 200, "/latest/user-data"),
    ("openstack", "//openstack//latest/meta_data.json/", 200, "/openstack/latest/meta_data.json"),
    ("nocloud", "/nocloud//meta-data/", 200, "/nocloud/meta-data"),
    ("v1", "//v1//config.txt/", 200, "/v1/config.txt"),
    ("dotdot", "/latest/meta-data/../user-data", 404, None),
    ("dotdot-doubled", "//latest//meta-data//..//user-data", 404, None),
    ("encoded-dotdot", "/latest/meta-data/%2e%2e/user-data", 404, None),
    ("encoded-slash", "/latest/meta-data%2Finstance-id", 404, None),
]  # fmt: skip


def curl_as_is(ns: Netns, path: str) -> tuple[int, str]:
    out = ns.run(
        "curl", "-s", "--path-as-is", "--max-time", "5", "-w", "\n%{http_code}",
        f"http://169.254.169.254{path}",
    )  # fmt: skip
    body, _, status = out.rpartition("\n")
    return int(status), body


async def test_curl_path_as_is_slash_forms(world: World) -> None:
    """Every form, sent by curl exactly as written: the slash forms answer what the
    canonical path answers; the traversal forms stay 404."""

    def all_forms() -> dict[str, tuple[int, str | None]]:
        results: dict[str, tuple[int, str | None]] = {}
        for name, path, _, canonical in CURL_FORMS:
            status, body = curl_as_is(world.guest.ns, path)
            same = canonical is not None and body == curl_as_is(world.guest.ns, canonical)[1]
            results[name] = (status, "same" if same else None)
        return results

    got = await asyncio.to_thread(all_forms)
    expected = {
        name: (status, None if canonical is None else "same")
        for name, _, status, canonical in CURL_FORMS
    }
    assert got == expected


async def in_guest(world: World, *argv: str) -> str:
    return await asyncio.to_thread(world.guest.ns.run, *argv, timeout=60)


BOTOCORE_FETCHERS = """
import json
from botocore.utils import InstanceMetadataFetcher, InstanceMetadataRegionFetcher
region = InstanceMetadataRegionFetcher(timeout=3, num_attempts=1).retrieve_region()
credentials = InstanceMetadataFetcher(timeout=3, num_attempts=1).retrieve_iam_role_credentials()
print(json.dumps({"region": region, "credentials": credentials}))
"""


async def test_botocore_imds_fetchers(world: World) -> None:
    """botocore asks `placement/availability-zone/` (a file with a trailing slash) for the
    region; with no instance profile its credential fetcher finds none, without error."""
    out = await in_guest(world, sys.executable, "-c", BOTOCORE_FETCHERS)
    assert json.loads(out) == {"region": "local-1", "credentials": {}}


EC2_METADATA_LIBRARY = """
import json
from ec2_metadata import ec2_metadata as m
print(json.dumps({
    "instance_id": m.instance_id, "ami_id": m.ami_id, "ami_launch_index": m.ami_launch_index,
    "reservation_id": m.reservation_id, "security_groups": m.security_groups,
    "availability_zone": m.availability_zone, "region": m.region, "mac": m.mac,
    "private_ipv4": m.private_ipv4, "instance_type": m.instance_type,
    "user_data": m.user_data.decode() if m.user_data is not None else None,
}))
"""


async def test_ec2_metadata_library_and_cli_from_pypi(world: World) -> None:
    """The PyPI `ec2-metadata` package (IMDSv2 always) asks `/latest/user-data/`."""
    out = await in_guest(world, sys.executable, "-c", EC2_METADATA_LIBRARY)
    got = json.loads(out)
    assert re.fullmatch(r"r-[0-9a-f]{17}", got.pop("reservation_id"))
    assert got == {
        "instance_id": world.instance_id,
        "ami_id": "ami-00000000000000000",
        "ami_launch_index": 0,
        "security_groups": ["default"],
        "availability_zone": "local-1a",
        "region": "local-1",
        "mac": MAC,
        "private_ipv4": "198.18.0.11",
        "instance_type": "xen.guest",
        "user_data": USER_DATA,
    }
    imds = str(Path(sys.executable).with_name("imds"))
    # The CLI prints the user-data as Python shows bytes: b'...'.
    assert await in_guest(world, imds, "get", "user-data", "-n") == repr(USER_DATA.encode())
    assert await in_guest(world, imds, "get", "ami-id", "-n") == "ami-00000000000000000"


async def test_debian_ec2_metadata_script(world: World) -> None:
    """amazon-ec2-utils' `ec2-metadata` asks `/latest//meta-data/reservation-id` and walks
    `block-device-mapping/`; every key it shows is there ("not available" is a miss)."""
    need_tools("ec2-metadata")
    out = await in_guest(world, "ec2-metadata", "-a", "-l", "-e", "-s", "-b", "-i", "-z", "-d")
    assert "not available" not in out, out
    lines = [line.strip() for line in out.splitlines()]
    assert "ami-id: ami-00000000000000000" in lines and "ami-launch-index: 0" in lines
    assert any(re.fullmatch(r"reservation-id: r-[0-9a-f]{17}", line) for line in lines)
    assert "security-groups: default" in lines and f"instance-id: {world.instance_id}" in lines
    assert "ami: /dev/xvda" in lines and "root: /dev/xvda" in lines
    assert "placement: local-1a" in lines and "echo from-user-data" in lines


async def test_aws_sdk_for_javascript_v3(world: World) -> None:
    """@aws-sdk/ec2-metadata-service sends `//latest/...`; @smithy/credential-provider-imds
    finds no instance profile and passes on to the next provider."""
    need_tools("node")
    if not (JS_CLIENTS / "node_modules" / "@aws-sdk" / "ec2-metadata-service").is_dir():
        reason = f"the JS clients are not installed (npm ci --prefix {JS_CLIENTS})"
        if in_ci():
            pytest.fail(f"CI must run this test, but {reason}", pytrace=False)
        pytest.skip(reason)
    out = await in_guest(world, "node", str(JS_CLIENTS / "aws_sdk_v3.js"))
    got = json.loads(out.strip().splitlines()[-1])
    assert re.fullmatch(r"r-[0-9a-f]{17}", got.pop("reservation-id"))
    assert got == {
        "token": True,
        "instance-id": world.instance_id,
        "ami-id": "ami-00000000000000000",
        "security-groups": "default",
        "placement/availability-zone": "local-1a",
        "block-device-mapping/root": "/dev/xvda",
        "user-data": USER_DATA,
        "credentials": {"statusCode": 404, "tryNextLink": True},
    }
