"""Stands in for xl's domain commands on hosts without Xen: `create CONFIG`, `destroy
NAME` and `domid NAME`, the three a launch and a destroy run.

    python tests/support/xl_domains.py STATE_DIR <xl args>

Every call appends its xl argv as a JSON array to STATE_DIR/calls.log. `create` reads
`name = "..."` from the config and makes STATE_DIR/domains/NAME (its domid inside);
`destroy` removes it; `domid` prints it, or xl's "does not exist" words with exit 1.
On demand, for a test: a file STATE_DIR/fail-COMMAND makes that command fail (exit 1,
the file's text on stderr), STATE_DIR/sleep-COMMAND makes it sleep that many seconds
first. It never touches a real Xen."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

NAME_RE = re.compile(r'^name = "([^"]+)"$', re.MULTILINE)


def main(argv: list[str]) -> int:
    state, command, args = Path(argv[0]), argv[1], argv[2:]
    with open(state / "calls.log", "a") as log:
        log.write(json.dumps([command, *args]) + "\n")
    sleep = state / f"sleep-{command}"
    if sleep.exists():
        time.sleep(float(sleep.read_text()))
    fail = state / f"fail-{command}"
    if fail.exists():
        print(fail.read_text() or f"xl {command} failed", file=sys.stderr)
        return 1
    domains = state / "domains"
    domains.mkdir(exist_ok=True)
    if command == "create":
        match = NAME_RE.search(Path(args[0]).read_text())
        if match is None:
            print("Failed to parse config: no name", file=sys.stderr)
            return 1
        domid = len(list(domains.iterdir())) + 1
        (domains / match.group(1)).write_text(str(domid))
        return 0
    domain = domains / args[0]
    if not domain.exists():
        print(
            f"Can't get domid of domain name '{args[0]}', maybe this domain does not exist.",
            file=sys.stderr,
        )
        return 1
    if command == "domid":
        print(domain.read_text())
    elif command == "destroy":
        domain.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
