"""In-zone DNS queries per second against the responder, next to bare dnslib.

Starts a DnsService on 127.0.0.1 (port 0) over a fresh SQLite registry of --guests
guests, then runs a load generator in a child process that keeps --inflight UDP
queries outstanding (A for guest names, every fourth one a PTR for a guest address)
for --seconds, twice:

  repeated  the names cycle through the zone, as guests' resolvers ask them; the
            responder answers repeats from its per-zone memo (AnswerCache)
  distinct  every name has a random letter case, so no two queries are alike and each
            one is parsed, answered and packed by dnslib (the worst case)

In the same run it times a bare dnslib loop in this process (parse the query, build
an A answer, pack it; one core, no sockets) and prints the ratios.

    .venv/bin/python benchmarks/dns_qps.py [--guests 1000] [--seconds 5] [--inflight 16]
    .venv/bin/python benchmarks/dns_qps.py --server 198.18.0.1:53 --zone guests.internal

With --server it measures a responder that is already running; the names asked are
guest0..guestN-1 in --zone (the report counts replies without an answer). It sends
only to the responder it starts (127.0.0.1) or the one named by --server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_QPS = 3000
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def guest_address(n: int) -> str:
    return f"198.18.{n // 250}.{n % 250 + 2}"


def build_queries(zone: str, guests: int) -> list[bytes]:
    from dnslib import DNSRecord

    packets = []
    for n in range(guests):
        if n % 4 == 3:
            reverse = ".".join(reversed(guest_address(n).split("."))) + ".in-addr.arpa"
            packets.append(bytes(DNSRecord.question(reverse, "PTR").pack()))
        else:
            packets.append(bytes(DNSRecord.question(f"guest{n}.{zone}", "A").pack()))
    return packets


def random_case(packets: list[bytes], count: int, seed: int = 1) -> list[bytes]:
    """`count` queries whose names differ only in letter case: in-zone all the same, but
    (practically) no two alike, so none is answered from the responder's memo."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        packet = bytearray(packets[i % len(packets)])
        letters = [at for at in range(12, len(packet) - 4) if 97 <= packet[at] <= 122]
        bits = rng.getrandbits(len(letters))
        for k, at in enumerate(letters):
            if bits >> k & 1:
                packet[at] -= 32
        out.append(bytes(packet))
    return out


# --- the load generator (child process) -------------------------------------------------


def load(
    server: tuple[str, int], queries: list[bytes], seconds: float, inflight: int
) -> dict[str, Any]:
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.connect(server)
    sock.settimeout(0.25)
    outstanding: dict[int, float] = {}
    latencies: list[float] = []
    counter = 0
    answered = errors = lost = 0

    def send_next() -> None:
        nonlocal counter
        qid = counter & 0xFFFF
        packet = queries[counter % len(queries)]
        counter += 1
        outstanding[qid] = time.perf_counter()
        sock.send(struct.pack("!H", qid) + packet[2:])

    warmup_end = time.perf_counter() + 0.5
    for _ in range(inflight):
        send_next()
    measuring = False
    started = end = 0.0
    while True:
        now = time.perf_counter()
        if not measuring and now >= warmup_end:
            measuring, started, end = True, now, now + seconds
            answered = errors = lost = 0
            latencies.clear()
        if measuring and now >= end:
            break
        try:
            data = sock.recv(4096)
        except TimeoutError:
            lost += len(outstanding)
            outstanding.clear()
            for _ in range(inflight):
                send_next()
            continue
        qid, flags, _qd, ancount = struct.unpack_from("!4H", data)
        sent_at = outstanding.pop(qid, None)
        if sent_at is None:
            continue
        answered += 1
        latencies.append(time.perf_counter() - sent_at)
        if flags & 0x000F or not ancount:
            errors += 1
        send_next()
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[int(p * (len(latencies) - 1))] * 1000 if latencies else 0.0

    return {
        "qps": answered / elapsed,
        "answered": answered,
        "errors": errors,
        "lost": lost,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "sent": counter,
    }


def child_main(args: argparse.Namespace) -> None:
    host, _, port = args.load.rpartition(":")
    queries = build_queries(args.zone, args.guests)
    if args.distinct:
        queries = random_case(queries, int(min(200_000, 20_000 * (args.seconds + 1))))
    result = load((host.strip("[]"), int(port)), queries, args.seconds, args.inflight)
    if args.distinct and result["sent"] > len(queries):
        result["note"] = "queries repeated: raise the pool size"
    print(json.dumps(result))


# --- bare dnslib (this process) ---------------------------------------------------------


def bare_dnslib(zone: str, guests: int, seconds: float) -> float:
    from dnslib import QTYPE, RR, A, DNSRecord

    queries = build_queries(zone, guests)[:200]
    done = 0
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end:
        for packet in queries:
            record = DNSRecord.parse(packet)
            reply = record.reply()
            reply.add_answer(RR(record.q.qname, QTYPE.A, ttl=60, rdata=A("198.18.0.2")))
            reply.pack()
        done += len(queries)
    return done / (time.perf_counter() - started)


# --- the responder (this process) -------------------------------------------------------


async def start_responder(zone: str, guests: int, directory: Path) -> Any:
    from metadata_server.dns.service import DnsService
    from metadata_server.dns.settings import DnsSettings
    from metadata_server.model import VM, State, parse_vm
    from metadata_server.store import open_store

    store = open_store(str(directory / "registry.db"))
    await store.open()
    vms = []
    for n in range(guests):
        body = {
            "mac": f"02:00:c6:12:{n // 256:02x}:{n % 256:02x}",
            "hostname": f"guest{n}",
            "ipv4": {"address": guest_address(n), "prefix": 16},
        }
        vms.append(VM(parse_vm(body).spec, f"bench-{n}", State.REGISTERED, {}, None, 0.0, 0.0))
    await store.import_all(vms)
    dns = DnsService(DnsSettings(listen=(("127.0.0.1", 0),), zone=zone), store, zone)
    await dns.start()
    return store, dns


async def run_child(server: tuple[str, int], args: argparse.Namespace, distinct: bool) -> Any:
    argv = [
        sys.executable,
        __file__,
        "--load",
        f"{server[0]}:{server[1]}",
        "--zone",
        args.zone,
        "--guests",
        str(args.guests),
        "--seconds",
        str(args.seconds),
        "--inflight",
        str(args.inflight),
    ]
    if distinct:
        argv.append("--distinct")
    child = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"the load generator failed ({child.returncode})")
    return json.loads(out)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.server:
        host, _, port = args.server.rpartition(":")
        server = (host.strip("[]"), int(port))
        return {mode: await run_child(server, args, mode == "distinct") for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="dns-bench-") as tmp:
        store, dns = await start_responder(args.zone, args.guests, Path(tmp))
        try:
            return {
                mode: await run_child(dns.addresses[0], args, mode == "distinct") for mode in MODES
            }
        finally:
            await dns.stop()
            await store.close()


MODES = ("repeated", "distinct")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--zone", default="guests.internal")
    parser.add_argument("--server", help="HOST:PORT of a running responder")
    parser.add_argument("--load", help=argparse.SUPPRESS)  # the child's role
    parser.add_argument("--distinct", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        child_main(args)
        return

    bare = bare_dnslib(args.zone, args.guests, min(args.seconds, 3.0))
    results = asyncio.run(measure(args))
    where = args.server or "127.0.0.1, started here"
    print(f"zone {args.zone}: {args.guests} guests; responder on {where}")
    print(f"load: UDP, {args.inflight} in flight, {args.seconds:g} s each after 0.5 s warm-up")
    for mode in MODES:
        r = results[mode]
        print(
            f"responder, {mode:<8} names: {r['qps']:8,.0f} queries/s  ratio to bare "
            f"{r['qps'] / bare:4.2f}  (p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"{r['answered']:,} answered, {r['errors']} without an answer, {r['lost']} lost)"
            + (f"  [{r['note']}]" if "note" in r else "")
        )
    print(f"bare dnslib parse+answer+pack:  {bare:8,.0f} per s (one core, no sockets)")
    worst = min(results[mode]["qps"] for mode in MODES)
    print(f"goal {GOAL_QPS:,} queries/s (worst case): {'met' if worst >= GOAL_QPS else 'NOT met'}")


if __name__ == "__main__":
    main()
