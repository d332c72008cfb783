"""`metadata-server vm ...`: manage guests through the admin API.

Tables for people, `--json` for scripts. Passwords are read from stdin
(`--password-stdin`), never from the command line, where `ps` and shell history see them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metadata_server.admin_token import load_client_token
from metadata_server.cli.client import AdminClient, CommandError, Reply
from metadata_server.cli.tables import table
from metadata_server.config import Settings
from metadata_server.digits import ascii_int, number
from metadata_server.timeline import steps, stuck_for


def add_parsers(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    def new(name: str, help_text: str, handler: Callable[..., Any]) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        add_common(p)
        p.add_argument("--url", help="admin API URL (default: from admin.listen)")
        p.add_argument("--json", action="store_true", help="print JSON for scripts")
        p.set_defaults(
            handler=lambda args, settings_from: run_admin_command(args, settings_from, handler)
        )
        return p

    p = new("add", "register or replace a guest", _add)
    p.add_argument("mac")
    p.add_argument("--hostname", required=True)
    p.add_argument("--ip", required=True, metavar="ADDRESS/PREFIX")
    p.add_argument("--gateway")
    p.add_argument("--domain")
    p.add_argument("--dns", action="append", default=[])
    p.add_argument("--ssh-key", action="append", default=[], help="a public key (repeatable)")
    p.add_argument("--ssh-key-file", action="append", default=[], type=Path)
    p.add_argument("--password-hash", help="a crypt string")
    p.add_argument("--password-stdin", action="store_true", help="read a plain password from stdin")
    p.add_argument("--user-data-file", type=Path)
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--host", help="the Dom0 that runs the guest")

    p = new("list", "list guests", _list)
    p.add_argument("--state")
    p.add_argument("--host")
    p.add_argument(
        "--slow",
        type=number,
        metavar="SECONDS",
        help="only guests leased or fetched for longer than this, not configured",
    )

    p = new("timeline", "a guest's states with their times and the durations between", _timeline)
    p.add_argument("mac")

    p = new("show", "show one guest", _show)
    p.add_argument("mac")

    p = new("rm", "remove a guest", _rm)
    p.add_argument("mac")

    p = new("import", "create or replace many guests (JSON array or NDJSON): all or none", _import)
    p.add_argument("file", help="a file, or - for stdin")

    p = new("rearm", "new instance id; the guest configures itself again", _rearm)
    p.add_argument("mac")

    p = new("status", "a guest's state; --wait long-polls for a change", _status)
    p.add_argument("mac")
    p.add_argument("--wait", type=number, default=0.0, metavar="SECONDS")

    p = new("launch", "launch a guest from a master: register, clone, xl create, wait", _launch)
    p.add_argument("name", help="the guest's host name and xl domain name")
    p.add_argument("--image", required=True, metavar="MASTER", help="a prepared master")
    p.add_argument("--ip", metavar="ADDRESS/PREFIX", help="default: the next free address")
    p.add_argument("--memory", type=int, default=512, metavar="MiB")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--ssh-key", action="append", default=[], help="a public key (repeatable)")
    p.add_argument("--ssh-key-file", action="append", default=[], type=Path)
    p.add_argument("--password-stdin", action="store_true", help="read a plain password from stdin")
    p.add_argument("--wait", type=number, default=300.0, metavar="SECONDS")
    p.add_argument("--keep", action="store_true", help="on failure, keep what was made")
    p.add_argument("--kernel", help="a kernel on Dom0 to boot directly (default: pvgrub2)")
    p.add_argument("--ramdisk", help="its initramfs")

    p = new("destroy", "destroy a launched guest: domain, delta, config, registration", _destroy)
    p.add_argument("name")
    p.add_argument("--keep-record", action="store_true", help="keep the registration, marked")
    p.add_argument("--force", action="store_true", help="also a guest not launched here")


def run_admin_command(
    args: argparse.Namespace,
    settings_from: Callable[..., Settings],
    handler: Callable[[AdminClient, argparse.Namespace], Any],
) -> int:
    """Run an admin command: the client from the settings, its result printed."""
    settings = settings_from(args, {})
    url = args.url or url_of(settings)
    client = AdminClient(url, load_client_token(settings))
    result = asyncio.run(handler(client, args))
    if result is not None:
        print(result)
    return 0


def url_of(settings: Settings) -> str:
    listen = settings.admin.listen
    if listen.unix_path is not None:
        return f"unix:{listen.unix_path}"
    host = "127.0.0.1" if listen.host in ("0.0.0.0", None) else listen.host  # noqa: S104 (a comparison, not a bind)
    host = f"[{host}]" if host and ":" in host else host
    return f"http://{host}:{listen.port}"


def _vm_rows(vms: list[dict[str, Any]]) -> str:
    rows = [
        [
            vm["mac"],
            vm["hostname"],
            f"{vm['ipv4']['address']}/{vm['ipv4']['prefix']}",
            vm["state"],
            vm.get("host") or "-",
            vm["updated_at"],
        ]
        for vm in vms
    ]
    return table(["MAC", "HOSTNAME", "IPV4", "STATE", "HOST", "UPDATED"], rows)


def _vm_detail(vm: dict[str, Any]) -> str:
    lines = [
        f"mac:          {vm['mac']}",
        f"hostname:     {vm['hostname']}",
        f"domain:       {vm.get('domain') or '-'}",
        f"ipv4:         {vm['ipv4']['address']}/{vm['ipv4']['prefix']}"
        f" via {vm['ipv4'].get('gateway') or '-'}",
        f"dns:          {', '.join(vm['dns']) or '-'}",
        f"host:         {vm.get('host') or '-'}",
        f"instance_id:  {vm['instance_id']}",
        f"state:        {vm['state']}" + (f" ({vm['message']})" if vm.get("message") else ""),
        f"password:     {'set' if vm['password_set'] else 'none'}",
        f"ssh keys:     {len(vm['ssh_keys'])}",
        f"user-data:    {vm['user_data_bytes']} bytes",
    ]
    lines += [f"meta {key}: {value}" for key, value in vm["metadata"].items()]
    launch = vm.get("launch")
    if launch:
        lines += [
            f"image:        {launch['image']} ({launch['image_id']})",
            f"delta:        {launch['delta']}",
            f"xl config:    {launch['xl_config']}",
        ]
        if launch.get("destroyed_at"):
            lines.append(f"destroyed:    {launch['destroyed_at']} (record kept)")
    return "\n".join(lines)


def _print(args: argparse.Namespace, reply: Reply, human: Callable[[Any], str]) -> str:
    return json.dumps(reply.body, indent=2) if args.json else human(reply.body)


def _read_file(path: Path, what: str) -> str:
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {what} {path}: {exc}") from None


async def _add(client: AdminClient, args: argparse.Namespace) -> str:
    address, _, prefix_text = args.ip.partition("/")
    prefix = ascii_int(prefix_text, max_digits=2)
    if prefix is None:
        raise CommandError(f"--ip must be ADDRESS/PREFIX, like 198.18.0.10/24, not {args.ip!r}")
    body: dict[str, Any] = {
        "hostname": args.hostname,
        "ipv4": {"address": address, "prefix": prefix, "gateway": args.gateway},
        "dns": args.dns,
        "ssh_keys": list(args.ssh_key),
    }
    for path in args.ssh_key_file:
        body["ssh_keys"] += [
            line for line in _read_file(path, "the key file").splitlines() if line.strip()
        ]
    for name in ("domain", "host"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    if args.password_hash:
        body["password_hash"] = args.password_hash
    if args.password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\n")
    if args.user_data_file:
        body["user_data"] = _read_file(args.user_data_file, "the user-data file")
    if args.meta:
        body["metadata"] = {}
        for item in args.meta:
            key, sep, value = item.partition("=")
            if not sep:
                raise CommandError(f"--meta takes KEY=VALUE, not {item!r}")
            body["metadata"][key] = value
    reply = await client.request("PUT", f"/api/v1/vms/{args.mac}", json_body=body)

    def human(vm: dict[str, Any]) -> str:
        verb = "registered" if reply.status == 201 else "replaced"
        text = f"{verb} {vm['mac']} ({vm['hostname']}, {vm['ipv4']['address']})"
        if "generated_password" in vm:
            text += f"\ngenerated root password (shown once): {vm['generated_password']}"
        return text

    return _print(args, reply, human)


async def _list(client: AdminClient, args: argparse.Namespace) -> str:
    params = {k: v for k, v in (("state", args.state), ("host", args.host)) if v}
    reply = await client.request("GET", "/api/v1/vms", params=params)
    if args.slow is not None:
        now = time.time()
        slow = [vm for vm in reply.body["vms"] if (stuck_for(vm, now) or -1.0) > args.slow]
        reply = Reply(reply.status, {"vms": slow})
    return _print(args, reply, lambda body: _vm_rows(body["vms"]))


async def _timeline(client: AdminClient, args: argparse.Namespace) -> str:
    vm = (await client.request("GET", f"/api/v1/vms/{args.mac}")).body
    boot = steps(vm["state_times"])
    body = {"mac": vm["mac"], "state": vm["state"], "steps": [s.to_json() for s in boot]}
    reply = Reply(200, body)

    def human(body: dict[str, Any]) -> str:
        rows = [
            [
                step["state"],
                step["at"],
                _seconds(step["after_previous_s"]),
                _seconds(step["after_registered_s"]),
            ]
            for step in body["steps"]
        ]
        return table(["STATE", "AT", "AFTER PREVIOUS", "AFTER REGISTERED"], rows)

    return _print(args, reply, human)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


async def _show(client: AdminClient, args: argparse.Namespace) -> str:
    reply = await client.request("GET", f"/api/v1/vms/{args.mac}")
    return _print(args, reply, _vm_detail)


async def _rm(client: AdminClient, args: argparse.Namespace) -> str:
    await client.request("DELETE", f"/api/v1/vms/{args.mac}")
    return json.dumps({"deleted": args.mac}) if args.json else f"removed {args.mac}"


async def _import(client: AdminClient, args: argparse.Namespace) -> str:
    data = _read_file(Path(args.file), "the import file").encode()
    reply = await client.request(
        "POST", "/api/v1/vms/import", data=data, content_type="application/json", timeout=600
    )

    def human(body: dict[str, Any]) -> str:
        text = f"imported {body['created'] + body['updated']} guests ({body['created']} new)"
        for mac, password in body["generated_passwords"].items():
            text += f"\n{mac} generated root password (shown once): {password}"
        return text

    return _print(args, reply, human)


async def _rearm(client: AdminClient, args: argparse.Namespace) -> str:
    reply = await client.request("POST", f"/api/v1/vms/{args.mac}/rearm")
    return _print(args, reply, lambda vm: f"re-armed {vm['mac']}: instance {vm['instance_id']}")


async def _status(client: AdminClient, args: argparse.Namespace) -> str:
    params = {"wait": f"{args.wait:g}"} if args.wait else None
    reply = await client.request(
        "GET", f"/api/v1/vms/{args.mac}/status", params=params, timeout=args.wait + 30
    )

    def human(body: dict[str, Any]) -> str:
        text = f"{body['mac']}: {body['state']}"
        return text + (f" ({body['message']})" if body.get("message") else "")

    return _print(args, reply, human)


def _absolute(path: str) -> str:
    """A path as the server must get it: the server's working directory is not ours."""
    return os.path.abspath(path)


async def _launch(client: AdminClient, args: argparse.Namespace) -> str:
    body: dict[str, Any] = {
        "name": args.name,
        "image": _absolute(args.image),
        "memory": args.memory,
        "vcpus": args.vcpus,
        "wait": args.wait,
        "keep": args.keep,
        "ssh_keys": list(args.ssh_key),
    }
    for path in args.ssh_key_file:
        body["ssh_keys"] += [
            line for line in _read_file(path, "the key file").splitlines() if line.strip()
        ]
    for name in ("ip", "kernel", "ramdisk"):
        if getattr(args, name):
            value = getattr(args, name)
            body[name] = value if name == "ip" else _absolute(value)
    if args.password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\n")
    result: dict[str, Any] | None = None
    async for line in client.stream_lines(
        "POST", "/api/v1/launch", json_body=body, timeout=args.wait + 300
    ):
        if "error" in line:
            error = line["error"]
            where = f" ({error['field']})" if error.get("field") else ""
            raise CommandError(f"{error['detail']}{where}", error.get("problems", []))
        if "result" in line:
            result = line["result"]
        elif line.get("step") == "state":
            if line.get("changed"):
                print(f"... {args.name}: {line['state']}", file=sys.stderr, flush=True)
        elif not args.json:
            print(f"... {line['step']}: {line['detail']}", file=sys.stderr, flush=True)
    if result is None:
        raise CommandError("the admin API ended the launch without a result")
    if args.json:
        return json.dumps(result, indent=2)
    return _launch_summary(result)


def _launch_summary(result: dict[str, Any]) -> str:
    rows = [
        [
            step["state"],
            step["at"],
            _seconds(step["after_previous_s"]),
            _seconds(step["after_registered_s"]),
        ]
        for step in result["timeline"]
    ]
    verdict = (
        "configured"
        if result["configured"]
        else f"{result['state']} (not configured yet: `metadata-server vm status "
        f"{result['mac']} --wait 300`)"
    )
    lines = [
        f"launched {result['name']} ({result['mac']}): {verdict}",
        table(["STATE", "AT", "AFTER PREVIOUS", "AFTER REGISTERED"], rows),
        f"reach it: ssh root@{result['address']}  (host name {result['fqdn']}; "
        f"console: xl console {result['name']})",
        f"delta {result['delta']}, xl config {result['xl_config']}, "
        f"image {result['image_id']}, kernel {result['kernel']}",
    ]
    if "generated_password" in result:
        lines.append(f"generated root password (shown once): {result['generated_password']}")
    return "\n".join(lines)


async def _destroy(client: AdminClient, args: argparse.Namespace) -> str:
    body = {"keep_record": args.keep_record, "force": args.force}
    reply = await client.request(
        "POST", f"/api/v1/launched/{args.name}/destroy", json_body=body, timeout=120
    )

    def human(result: dict[str, Any]) -> str:
        domain = "domain destroyed" if result["domain_destroyed"] else "no domain running"
        return (
            f"destroyed {result['name']}: {domain}, {len(result['removed'])} files removed, "
            f"registration {result['record']}"
        )

    return _print(args, reply, human)
