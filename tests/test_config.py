"""Settings: file, then environment, then flags; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from metadata_server.config import DEMO_DB, SYSTEM_DB, build_settings
from metadata_server.errors import ConfigError


def settings(
    tmp_path: Path, toml: str | None = None, env: dict[str, str] | None = None, **flags: object
):  # type: ignore[no-untyped-def]
    path = None
    if toml is not None:
        path = tmp_path / "config.toml"
        path.write_text(toml)
    return build_settings(config_file=path, env=env or {}, flags=flags)


def test_defaults() -> None:
    s = build_settings(config_file=None, env={}, flags={})
    assert s.db == SYSTEM_DB
    assert [str(a) for a in s.guest.listen] == ["169.254.169.254:80"]
    assert str(s.admin.listen) == "127.0.0.1:8775"
    assert s.guest.verify_neighbour == "auto" and s.guest.serve_secrets_once is True
    demo = build_settings(config_file=None, env={}, flags={}, demo=True)
    assert demo.db == DEMO_DB and [str(a) for a in demo.guest.listen] == ["127.0.0.1:8080"]
    # Loopback guests only for trying the server on one machine: the demo's guest is one.
    assert s.guest.allow_loopback is False and demo.guest.allow_loopback is True
    env = {"METADATA_SERVER_GUEST_ALLOW_LOOPBACK": "true"}
    assert build_settings(config_file=None, env=env, flags={}).guest.allow_loopback is True


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    toml = 'db = "/file.db"\ndomain = "file.example"\n[guest]\nlisten = ["127.0.0.1:1"]\n'
    s = settings(tmp_path, toml)
    assert (s.db, s.domain, str(s.guest.listen[0])) == ("/file.db", "file.example", "127.0.0.1:1")
    env = {
        "METADATA_SERVER_DB": "/env.db",
        "METADATA_SERVER_GUEST_LISTEN": "127.0.0.1:2,127.0.0.1:3",
    }
    s = settings(tmp_path, toml, env)
    assert s.db == "/env.db" and [str(a) for a in s.guest.listen] == ["127.0.0.1:2", "127.0.0.1:3"]
    assert s.domain == "file.example"
    s = settings(tmp_path, toml, env, db="/flag.db")
    assert s.db == "/flag.db"


def test_admin_listen_on_unix_socket(tmp_path: Path) -> None:
    s = settings(tmp_path, '[admin]\nlisten = "unix:/run/ms/admin.sock"\n')
    assert s.admin.listen.unix_path == "/run/ms/admin.sock"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("colour = 1\n", {}, "unknown setting 'colour'"),
        ("[guest]\nlistn = []\n", {}, "unknown setting 'guest.listn'"),
        ("db = 5\n", {}, "db (" ),
        ("[guest]\nlisten = [\"nowhere\"]\n", {}, "expected HOST:PORT"),
        ("[guest]\nlisten = [\"unix:/x\"]\n", {}, "guest.listen takes HOST:PORT only"),
        ("[guest]\ntrust_proxy = [\"10.0.0.0/33\"]\n", {}, "is not a CIDR"),
        ("[guest]\nverify_neighbour = \"sometimes\"\n", {}, "must be one of auto, always, never"),
        ("[admin]\nlisten = \"unix:relative\"\n", {}, "must be absolute"),
        ("domain = \"bad_domain\"\n", {}, "domain:"),
        ("public_url = \"ftp://x\"\n", {}, "public_url must start with"),
        ("this is not toml", {}, "is not valid TOML"),
        ("", {"METADATA_SERVER_NOPE": "1"}, "METADATA_SERVER_NOPE"),
        ("", {"METADATA_SERVER_PASSWORD_ROUNDS": "ten"}, "must be an integer"),
        ("", {"METADATA_SERVER_GUEST_SERVE_SECRETS_ONCE": "maybe"}, "true or false"),
    ],
    ids=[
        "unknown-key", "unknown-nested", "wrong-type", "bad-listen", "unix-guest", "bad-cidr",
        "bad-choice", "relative-unix", "bad-domain", "bad-url", "not-toml", "unknown-env",
        "env-int", "env-bool",
    ],
)  # fmt: skip
def test_bad_settings_are_clear_errors(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        settings(tmp_path, toml, env)
    assert message in error.value.detail


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        build_settings(config_file=tmp_path / "absent.toml", env={}, flags={})


def test_dhcp_subnets_from_toml_and_environment(tmp_path: Path) -> None:
    toml = (
        'domain = "guests.internal"\n[dhcp]\ndaemon = "dnsmasq"\nmanage = true\n'
        '[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.18.0.1"\nbridge = "xenbr0"\n'
        'dns = ["198.18.0.1"]\nlease_time = 600\n'
    )
    s = settings(tmp_path, toml)
    (subnet,) = s.dhcp.subnets
    assert (str(subnet.cidr), str(subnet.gateway), subnet.bridge, subnet.dns) == (
        "198.18.0.0/24", "198.18.0.1", "xenbr0", ("198.18.0.1",)
    )  # fmt: skip
    assert subnet.domain == "guests.internal" and subnet.lease_time == 600
    env = {
        "METADATA_SERVER_DHCP_SUBNETS": '[{"cidr": "198.19.0.0/24", "gateway": "198.19.0.1", "bridge": "br1"}]'
    }
    s = settings(tmp_path, toml, env)
    assert [str(x.cidr) for x in s.dhcp.subnets] == ["198.19.0.0/24"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[dhcp]\ndaemon = "kea"\n', "give at least one [[dhcp.subnets]]"),
        ('[dhcp]\ndaemon = "kea"\nmanage = true\n[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.18.0.1"\n', "dhcp.manage runs dnsmasq only"),
        ('[dhcp]\ndaemon = "dnsmasq"\nmanage = true\n[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.18.0.1"\n', "needs the bridge of every subnet"),
        ('[[dhcp.subnets]]\ncidr = "198.18.0.1/24"\ngateway = "198.18.0.1"\n', "dhcp.subnets[0].cidr"),
        ('[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.19.0.1"\n', "is not a host address of"),
        ('[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.18.0.255"\n', "is not a host address of"),
        ('[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.18.0.1"\ncolour = 1\n', "unknown key 'colour'"),
        ('[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.18.0.1"\nlease_time = 5\n', "lease_time"),
        ('[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.18.0.1"\n[[dhcp.subnets]]\ncidr = "198.18.0.0/25"\ngateway = "198.18.0.2"\n', "overlaps"),
        ('[dhcp]\nsubnets = "198.18.0.0/24"\n', "must be a list of tables"),
        ('[dhcp]\ndaemon = "isc"\n', "must be one of none, dnsmasq, kea, dhcpd"),
    ],
    ids=["no-subnets", "manage-kea", "manage-no-bridge", "host-bits", "gateway-outside", "gateway-broadcast",
         "unknown-key", "short-lease", "overlap", "not-tables", "bad-daemon"],
)  # fmt: skip
def test_bad_dhcp_settings(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings(tmp_path, toml)
    assert message in error.value.detail


BRIDGE = '[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.18.0.1"\nbridge = '


@pytest.mark.parametrize(
    "name",
    ["br0\ndhcp-script=/tmp/x", "br 0", "a/b", "a:b", "br\u2028x", "br\u00e9", "x" * 16, "", ".."],
    ids=["newline-directive", "space", "slash", "colon", "line-separator", "non-ascii",
         "too-long", "empty", "dot-dot"],
)  # fmt: skip
def test_a_subnet_bridge_must_be_an_interface_name(tmp_path: Path, name: str) -> None:
    """The name is written into the DHCP daemons' files (a dnsmasq.conf comment line)."""
    with pytest.raises(ConfigError, match=r"dhcp\.subnets\[0\]\.bridge"):
        settings(tmp_path, BRIDGE + f"{name!r}\n".replace("'", '"'))


@pytest.mark.parametrize(
    "url",
    ['http://x/"\ndhcp-script=/tmp/x', "http://x/a b", "http://x/\u2028", 'http://x/"', "http://x/\\"],
    ids=["quote-newline", "space", "line-separator", "quote", "backslash"],
)  # fmt: skip
def test_public_url_is_one_unquoted_word(url: str) -> None:
    """It is written into config.txt lines and quoted in dnsmasq's and dhcpd's files."""
    with pytest.raises(ConfigError, match="public_url must be a URL without"):
        build_settings(config_file=None, env={}, flags={"public_url": url})


def test_dns_settings(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        'domain = "guests.internal"\n[dns]\nlisten = ["198.18.0.1", "127.0.0.1:5353"]\nupstreams = ["192.0.2.53:53"]\n',
    )
    assert s.dns is not None
    assert s.dns.listen == (("198.18.0.1", 53), ("127.0.0.1", 5353))
    assert s.dns.zone == "guests.internal" and s.dns.upstreams == (("192.0.2.53", 53),)
    assert settings(tmp_path, "").dns is None


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[dns]\nlisten = ["198.18.0.1"]\n', "give dns.zone (or domain)"),
        ('domain = "g.internal"\n[dns]\nlisten = ["resolver.example"]\n', "is not an IP address"),
        ('domain = "g.internal"\n[dns]\nlisten = ["198.18.0.1:99999"]\n', "port 99999"),
        (
            'domain = "g.internal"\n[dns]\nlisten = ["198.18.0.1"]\nupstreams = ["198.18.0.1"]\n',
            "is this responder itself",
        ),
        ('[dns]\nlisten = ["198.18.0.1"]\nzone = "bad_zone"\n', "dns.zone"),
    ],
    ids=["no-zone", "name-not-address", "bad-port", "loop", "bad-zone"],
)
def test_bad_dns_settings(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings(tmp_path, toml)
    assert message in error.value.detail


def test_the_example_configuration_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "dom0.toml"
    s = build_settings(config_file=example, env={}, flags={})
    assert s.dhcp.daemon == "dnsmasq" and s.dhcp.manage and s.dns is not None and s.iso.auto
