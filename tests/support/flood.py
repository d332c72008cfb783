"""A hostile guest's ways to hurt the others, run inside that guest's namespace:

    python -m tests.support.flood idle|slowloris|bigheads|manyheaders COUNT [URL_HOST]

- idle: COUNT connections opened and held, sending nothing;
- slowloris: COUNT connections each sending a request head one byte a second;
- bigheads: COUNT requests (on up to 64 connections at once) each with 100 headers of
  8 KB (800 KB of headers);
- manyheaders: COUNT requests with 200 tiny headers each.

Holds its connections for `--hold` seconds (idle, slowloris), then prints one JSON line:
how the server answered (status codes seen in the first bytes, resets, timeouts).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import resource

PORT = 80


async def _status(reader: asyncio.StreamReader, timeout: float) -> str:
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        return "no answer"
    except (ConnectionError, OSError):
        return "reset"
    if not line:
        return "closed"
    parts = line.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 else "garbage"


async def _open(host: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, PORT), 5)
    except (OSError, TimeoutError):
        return None


async def hold(host: str, count: int, seconds: float, slow: bool) -> collections.Counter[str]:
    """Open `count` connections; keep them (sending a byte a second when `slow`)."""
    outcomes: collections.Counter[str] = collections.Counter()
    opened = await asyncio.gather(*(_open(host) for _ in range(count)))
    streams = [pair for pair in opened if pair is not None]
    outcomes["refused at connect"] = count - len(streams)
    head = b"GET /v1/config.txt HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000

    async def trickle(writer: asyncio.StreamWriter) -> None:
        for index in range(int(seconds)):
            if writer.is_closing():
                return
            with contextlib.suppress(OSError):
                writer.write(head[index : index + 1])
            await asyncio.sleep(1)

    trickles = [asyncio.create_task(trickle(w)) for _, w in streams] if slow else []
    results = await asyncio.gather(*(_status(r, seconds) for r, _ in streams))
    outcomes.update(results)
    for task in trickles:
        task.cancel()
    for _, writer in streams:
        writer.close()
    return outcomes


async def heavy(host: str, count: int, headers: list[bytes]) -> collections.Counter[str]:
    """`count` requests carrying `headers`, at most 64 connections at a time."""
    outcomes: collections.Counter[str] = collections.Counter()
    request = b"GET /v1/config.txt HTTP/1.1\r\nHost: x\r\n" + b"".join(headers) + b"\r\n"
    gate = asyncio.Semaphore(64)

    async def one() -> None:
        async with gate:
            pair = await _open(host)
            if pair is None:
                outcomes["refused at connect"] += 1
                return
            reader, writer = pair
            try:
                writer.write(request)
                await writer.drain()
            except OSError:
                pass
            outcomes[await _status(reader, 10)] += 1
            writer.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["idle", "slowloris", "bigheads", "manyheaders"])
    parser.add_argument("count", type=int)
    parser.add_argument("host", nargs="?", default="169.254.169.254")
    parser.add_argument("--hold", type=float, default=5.0)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the flooder needs many
    if args.mode in ("idle", "slowloris"):
        outcomes = asyncio.run(hold(args.host, args.count, args.hold, args.mode == "slowloris"))
    elif args.mode == "bigheads":
        big = [f"X-Big-{i}: ".encode() + b"b" * 8000 + b"\r\n" for i in range(100)]
        outcomes = asyncio.run(heavy(args.host, args.count, big))
    else:
        many = [f"X-{i}: 1\r\n".encode() for i in range(200)]
        outcomes = asyncio.run(heavy(args.host, args.count, many))
    print(json.dumps(dict(outcomes), sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
