"""The server's state directory (the database, admin token, DHCP files, ISOs): made 0711
when the server makes it, whatever the umask (077 for every command), so that the
dnsmasq it runs, which re-reads its hosts file as its own user, can pass through to the
DHCP directory below, and nobody else can list or read what is there. A directory that
is already there keeps its mode (the example unit's `StateDirectoryMode=0711`)."""

from __future__ import annotations

from pathlib import Path

from metadata_server.errors import ConfigError

MODE = 0o711


def make_state_directory(directory: Path) -> None:
    """Create `directory` and any missing parents, each MODE (mkdir's own mode would be
    cut by the umask)."""
    missing = [path for path in (directory, *directory.parents) if not path.exists()]
    try:
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            path.chmod(MODE)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the state directory {directory}: {exc.strerror}"
        ) from None
