"""Which versions of the lab's Debian packages the mirror offers today, asked of a private
apt (its own sources, lists and an empty dpkg status, under the cache directory) so that
the host's own apt state is neither used nor touched.

The answer is part of the lab's cache key: a security update of any package the lab
installs rebuilds the base layer, and an unchanged mirror reuses it. A package the
mirror does not have, or a mirror that cannot be reached, is a `BuildError` naming it,
before anything is built.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.builder.commands import BuildError, Runner

SUITE = "bookworm"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

_INST_RE = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) ")
_MISSING_RE = re.compile(
    r"^E: (?:Unable to locate package (\S+)|Package '?(\S+?)'? has no installation candidate)"
)
_FETCH_RE = re.compile(
    r"^(?:E|W): .*(?:Failed to fetch|Could not|Unable to connect|failed to download).*$"
)


@dataclass(frozen=True)
class Mirrors:
    """Where Debian comes from: the main archive (bookworm, bookworm-updates) and the
    security archive."""

    debian: str = "http://deb.debian.org/debian"
    security: str = "http://deb.debian.org/debian-security"

    def sources_list(self) -> str:
        signed = f"[signed-by={KEYRING}]"
        return (
            f"deb {signed} {self.debian} {SUITE} main\n"
            f"deb {signed} {self.debian} {SUITE}-updates main\n"
            f"deb {signed} {self.security} {SUITE}-security main\n"
        )


class PrivateApt:
    """apt-get with every directory of its own below `root`."""

    def __init__(self, root: Path, mirrors: Mirrors, runner: Runner) -> None:
        self.root = root
        self.mirrors = mirrors
        self.runner = runner

    def _options(self) -> list[str]:
        r = self.root
        return [
            f"-oDir::State={r}/state",
            f"-oDir::State::status={r}/status",
            f"-oDir::Cache={r}/cache",
            # kept between runs (the host may turn these caches off, as Docker images do)
            "-oDir::Cache::pkgcache=pkgcache.bin",
            "-oDir::Cache::srcpkgcache=srcpkgcache.bin",
            f"-oDir::Etc::SourceList={r}/sources.list",
            f"-oDir::Etc::SourceParts={r}/sources.list.d",
            f"-oDir::Etc::Preferences={r}/preferences",
            f"-oDir::Etc::PreferencesParts={r}/preferences.d",
            "-oAPT::Architecture=amd64",
            "-oAPT::Architectures=amd64",
            "-oAcquire::Languages=none",
            "-oDebug::NoLocking=1",
        ]

    def _prepare(self) -> None:
        for sub in (
            "state/lists/partial",
            "cache/archives/partial",
            "sources.list.d",
            "preferences.d",
        ):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        (self.root / "sources.list").write_text(self.mirrors.sources_list())

    def update(self) -> None:
        """Fetch the package lists; an unreachable mirror is a BuildError naming it."""
        self._prepare()
        argv = ["apt-get", *self._options(), "-q", "update"]
        try:
            output = self.runner.run("apt-get update (lab package lists)", argv, capture=True)
        except BuildError as error:
            raise BuildError(self._unreachable(str(error))) from None
        problems = [line for line in output.splitlines() if _FETCH_RE.match(line)]
        if problems:
            raise BuildError(self._unreachable("\n".join(problems)))

    def _unreachable(self, detail: str) -> str:
        return (
            f"the Debian mirror cannot be reached ({self.mirrors.debian}, "
            f"{self.mirrors.security}): {detail}"
        )

    def releases_digest(self) -> str:
        """A digest of the mirror's release files as last fetched: the same digest means
        the same package versions."""
        digest = hashlib.sha256()
        for release in sorted((self.root / "state/lists").glob("*Release")):
            digest.update(release.name.encode() + b"\0" + release.read_bytes())
        return digest.hexdigest()

    def resolve(self, packages: Iterable[str]) -> dict[str, str]:
        """Every package that installing `packages` (no recommends) would bring in,
        with its version. A package the mirror lacks is a BuildError naming it.
        Remembered per release files and package list: asking apt takes seconds."""
        wanted = sorted(set(packages))
        memo_key = hashlib.sha256(
            (self.releases_digest() + "\0" + " ".join(wanted)).encode()
        ).hexdigest()
        memo = self.root / "resolved" / f"{memo_key}.json"
        if memo.exists():
            known: dict[str, str] = json.loads(memo.read_text())
            return known
        versions = self._resolve(wanted)
        memo.parent.mkdir(exist_ok=True)
        memo.with_suffix(".tmp").write_text(json.dumps(versions, sort_keys=True))
        memo.with_suffix(".tmp").rename(memo)
        return versions

    def _resolve(self, wanted: list[str]) -> dict[str, str]:
        argv = ["apt-get", *self._options(), "-s", "-q", "install", "--no-install-recommends"]
        try:
            output = self.runner.run("apt-get -s install (resolve)", [*argv, *wanted], capture=True)
        except BuildError as error:
            missing = [
                m.group(1) or m.group(2)
                for m in map(_MISSING_RE.match, str(error).splitlines())
                if m
            ]
            if missing:
                raise BuildError(
                    f"Debian package {', '.join(missing)} is not on the mirror "
                    f"{self.mirrors.debian} ({SUITE})"
                ) from None
            raise
        versions = {m.group(1): m.group(2) for m in map(_INST_RE.match, output.splitlines()) if m}
        if not versions:
            raise BuildError(f"apt resolved nothing for {wanted}: {output[-500:]}")
        return versions

    def required(self) -> list[str]:
        """The packages of priority `required` (what debootstrap's minbase installs)."""
        names: set[str] = set()
        for lists in (self.root / "state/lists").glob(
            f"*_dists_{SUITE}_main_binary-amd64_Packages*"
        ):
            # apt may keep the lists compressed (lz4, gz...): apt-helper reads them all
            text = self.runner.run(
                "read the package list",
                ["/usr/lib/apt/apt-helper", "cat-file", str(lists)],
                capture=True,
                log_output=False,
            )
            name = ""
            for line in text.splitlines():
                if line.startswith("Package: "):
                    name = line[9:].strip()
                elif line.startswith("Priority: required") and name:
                    names.add(name)
        if not names:
            raise BuildError("the mirror's package lists name no required package")
        return sorted(names)
