"""Schemathesis against the admin API's own OpenAPI document, on a real server: requests
drawn from the document (valid by it, boundaries included) are never refused (no 400 or
413: `positive_data_acceptance`), never a 5xx, and every answer is documented and
matches its schema.

Bounded: EXAMPLES examples per operation, deterministic, so the run takes well under a
minute. Left out: the ISO fallback's routes (they drive xl and xenstore, tested on their
own), the event stream (it never ends) and NDJSON imports (a string to JSON Schema; the
admin API tests cover them). What JSON Schema cannot state and the
document says in words instead (the gateway inside the guest's network; neither its
network nor its broadcast address; user-data's size in bytes and a #cloud-config being a
YAML mapping) must then get a 400; a drawn gateway is moved into the guest's network
first (else hardly any would be), and long-polls are kept short.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from schemathesis.core import NOT_SET

from metadata_server.http.openapi import openapi_document
from metadata_server.http.openapi_schemas import HOST_IPV4_PATTERN
from metadata_server.model import MAX_USER_DATA_BYTES
from tests.support.server_process import server_process
from tests.support.service import ADMIN_TOKEN

EXAMPLES = 30  # per operation

schema = schemathesis.openapi.from_dict(openapi_document()).exclude(
    path_regex=r"/iso(-provision)?$|/events$|/launch$|/launched/"
)
schema.config.generation.update(modes=["positive"], max_examples=EXAMPLES, deterministic=True)


def _address_rules_hold(ipv4: Any) -> bool:
    if not isinstance(ipv4, dict) or "address" not in ipv4 or "prefix" not in ipv4:
        return True
    address = ipaddress.IPv4Address(ipv4["address"])
    network = ipaddress.IPv4Network(f"{address}/{int(ipv4['prefix'])}", strict=False)
    ends = (network.network_address, network.broadcast_address) if network.prefixlen <= 30 else ()
    if address in ends:
        return False
    gateway = ipv4.get("gateway")
    if gateway is None:
        return True
    gateway = ipaddress.IPv4Address(gateway)
    return gateway != address and gateway in network and gateway not in ends


def _fit_gateway(ipv4: Any) -> None:
    """A random gateway is hardly ever inside a random network: put one there (the
    address's neighbour, valid by the schema too), or none when none fits (a /32)."""
    if not isinstance(ipv4, dict) or ipv4.get("gateway") is None or "prefix" not in ipv4:
        return
    address = ipaddress.IPv4Address(ipv4["address"])
    network = ipaddress.IPv4Network(f"{address}/{int(ipv4['prefix'])}", strict=False)
    ends = (network.network_address, network.broadcast_address) if network.prefixlen <= 30 else ()
    ipv4["gateway"] = None
    for step in (1, -1):
        if not 0 <= int(address) + step < 2**32:
            continue
        gateway = address + step
        if (
            gateway in network
            and gateway not in ends
            and re.fullmatch(HOST_IPV4_PATTERN, str(gateway))
        ):
            ipv4["gateway"] = str(gateway)
            return


def _user_data_rules_hold(text: Any) -> bool:
    if not isinstance(text, str):
        return True
    if len(text.encode("utf-8", "surrogatepass")) > MAX_USER_DATA_BYTES:
        return False
    if text.startswith("#cloud-config"):
        try:
            return isinstance(yaml.safe_load(text), dict | None)
        except yaml.YAMLError:
            return False
    return True


def _guest_rules_hold(guest: Any) -> bool:
    return not isinstance(guest, dict) or (
        _address_rules_hold(guest.get("ipv4")) and _user_data_rules_hold(guest.get("user_data"))
    )


# Where a merge patch can break a rule the document states in words: whether it does
# depends on the stored guest it is merged into.
WORDED_RULES = frozenset({"ipv4.address", "ipv4.gateway", "user_data"})


def documented_rules_hold(body: Any) -> bool:
    """The rules the document states in words (see the module docstring)."""
    rows = body if isinstance(body, list) else [body]
    return all(_guest_rules_hold(row) for row in rows)


CALLS: Counter[str] = Counter()  # requests sent, by answer and operation


@pytest.fixture(scope="module")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    args = ["--db", str(tmp / "registry.db"), "--guest-listen", "127.0.0.1:0"]
    args += ["--admin-listen", "127.0.0.1:0"]
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN, "METADATA_SERVER_PASSWORD_ROUNDS": "1000"}
    with server_process(args, Path(tmp) / "server.log", env=env) as server:
        yield server.admin_url
    operations = {key.split(" ", 1)[1] for key in CALLS}
    print(f"\nschemathesis sent {sum(CALLS.values())} requests to {len(operations)} operations:")
    for key, count in sorted(CALLS.items(), key=lambda item: item[0].split(" ", 1)[::-1]):
        print(f"  {count:4d} answered {key}")


@schema.parametrize()
def test_the_document_and_the_server_agree(case: Any, admin_url: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if isinstance(case.query, dict) and float(case.query.get("wait") or 0) > 0.2:
        case.query["wait"] = 0.2  # a long-poll, kept short
    if case.media_type == "application/x-ndjson":
        return  # one object per line: no JSON Schema says that (test_admin_api covers it)
    if case.method in ("PUT", "POST") and case.body is not NOT_SET:
        for row in case.body if isinstance(case.body, list) else [case.body]:
            if isinstance(row, dict):
                _fit_gateway(row.get("ipv4"))
    response = case.call(base_url=admin_url, headers=headers, timeout=10)
    CALLS[f"{response.status_code} {case.method} {case.path}"] += 1
    if case.method == "PATCH":
        if response.status_code == 400 and response.json()["field"] in WORDED_RULES:
            return
    elif case.body is not NOT_SET and not documented_rules_hold(case.body):
        # Valid by the schema, not by a rule it states in words: a clear 400.
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid"
        return
    case.validate_response(response)
