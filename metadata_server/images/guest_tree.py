"""What `image prepare` changes inside the guest's mounted root filesystem.

- The guest boot script, its unit, DHCP hook and config file, by the project's own
  installer (`guest_init/install.sh --root`, as an admin would run it), from the files
  the installed package ships.
- `verify_key=` in /etc/metadata-init.conf when asked (the server's signing key).
- What must differ per clone: /etc/machine-id emptied (systemd makes a new one at first
  boot), /var/lib/dbus/machine-id and /var/lib/systemd/random-seed removed, the SSH host
  keys removed, the boot script's state (/var/lib/metadata-init) emptied.
- The SSH host keys made again at first boot: the boot script does not touch them, and
  Debian's ssh.service fails without them, so a small oneshot unit runs `ssh-keygen -A`
  before sshd when no key is there (without systemd, a marked line in /etc/rc.local).

The tree is the guest's, and this runs as root: a link in it is never followed out of
it. A path whose directory resolves outside the mount is refused, and files are removed
or replaced as themselves, never through a link.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import re
import stat
from pathlib import Path

from metadata_server.images.errors import ImageError
from metadata_server.images.tools import Tools, run

GUEST_INIT_FILES = {"install.sh": 0o755, "metadata-init": 0o755, "dhcp-hook": 0o755}
GUEST_INIT_FILES["metadata-init.service"] = 0o644
UNIT = "etc/systemd/system/metadata-init.service"
WANTS = "etc/systemd/system/multi-user.target.wants"
CONF = "etc/metadata-init.conf"
RC_LOCAL = "etc/rc.local"
MARK = "# metadata-init"
# What install.sh writes, or writes through: each must stay inside the image.
INSTALLER_PATHS = (
    "etc",
    "etc/systemd",
    "etc/systemd/system",
    WANTS,
    UNIT,
    CONF,
    RC_LOCAL,
    "usr",
    "usr/sbin",
    "usr/sbin/metadata-init",
    "usr/lib",
    "usr/lib/metadata-init",
    "usr/lib/metadata-init/dhcp-hook",
    "etc/dhcp",
    "etc/dhcp/dhclient.conf",
    "etc/dhcp/dhclient-exit-hooks.d",
    "etc/dhcp/dhclient-exit-hooks.d/metadata-init",
)
STATE = "var/lib/metadata-init"
REMOVED_PER_CLONE = ("var/lib/dbus/machine-id", "var/lib/systemd/random-seed")
CHUNK = 1 << 20
VERIFY_KEY_RE = re.compile(r"[A-Za-z0-9+/]{16,4096}={0,2}")

HOST_KEYS_UNIT_NAME = "metadata-init-ssh-host-keys.service"
HOST_KEYS_UNIT = """\
# Installed by `metadata-server image prepare`: the master's SSH host keys were removed so
# that no two clones share them; this makes the clone's own before sshd starts.
[Unit]
Description=Make this clone's own SSH host keys (removed from its master image)
Before=ssh.service sshd.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
ConditionFileIsExecutable=/usr/bin/ssh-keygen

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""
HOST_KEYS_RC_LINE = (
    "ls /etc/ssh/ssh_host_*_key > /dev/null 2>&1 || { ssh-keygen -A && "
    "{ [ ! -x /etc/init.d/ssh ] || /etc/init.d/ssh restart; }; } > /dev/null 2>&1 || true " + MARK
)


def guest_path(root: Path, relative: str, *, leaf: bool = False) -> Path:
    """`root/relative`, refused when its directory (with `leaf`, the path itself)
    resolves outside `root` through a link."""
    path = root / relative
    resolved = os.path.realpath(path if leaf else path.parent)
    if resolved != str(root) and not resolved.startswith(str(root) + os.sep):
        raise ImageError(
            f"/{relative} in the image goes through a link that leads out of it "
            f"(to {resolved.removeprefix(str(root))!r} on this host): refusing to write there"
        )
    return path


def install_guest_init(tools: Tools, root: Path, scratch: Path) -> str:
    """Run the shipped install.sh into `root`; "systemd" or "rc.local", as it chose.
    `scratch` (an empty directory of ours) gets a copy of the shipped files first."""
    for relative in INSTALLER_PATHS:
        if os.path.lexists(root / relative):
            guest_path(root, relative, leaf=True)
    # The unit's enabling link is made again by the installer; an old one (absolute, so
    # it resolves on this host) is removed first rather than followed.
    old_link = guest_path(root, f"{WANTS}/metadata-init.service")
    if old_link.is_symlink():
        old_link.unlink()
    source = importlib.resources.files("metadata_server.guest_init")
    for name, mode in GUEST_INIT_FILES.items():
        (scratch / name).write_bytes(source.joinpath(name).read_bytes())
        os.chmod(scratch / name, mode)
    # umask 022: the directories it makes in the image are the usual 0755
    run([tools["sh"], str(scratch / "install.sh"), "--root", str(root)], umask=0o022)
    return "systemd" if (root / UNIT).is_file() else "rc.local"


def set_verify_key(root: Path, key: str) -> None:
    """`verify_key=key` in the guest's config file, any earlier one dropped."""
    if not VERIFY_KEY_RE.fullmatch(key):
        raise ImageError("the verify key is not the base64 line of a public key PEM")
    path = guest_path(root, CONF, leaf=True)
    kept = [line for line in _read_lines(path) if not line.startswith("verify_key=")]
    kept += [
        "# the server's document signing key (metadata-server image prepare)",
        f"verify_key={key}",
    ]
    _replace(path, "".join(line + "\n" for line in kept), 0o644)


def clear_clone_state(root: Path) -> list[str]:
    """Remove or empty what every clone must make for itself; what was done, in words.
    Files go through `_scrub` (their bytes zeroed in place first), so the old host
    keys, machine id and state do not stay in the image's free blocks where a trim
    cannot reach (a block smaller than the host's page, or no trim at all)."""
    done = []
    machine_id = guest_path(root, "etc/machine-id")
    if machine_id.is_file() and not machine_id.is_symlink():
        _scrub(machine_id, keep=True)
    else:
        _remove(machine_id)
        _replace(machine_id, "", 0o444)
    done.append("/etc/machine-id emptied")
    for relative in REMOVED_PER_CLONE:
        path = guest_path(root, relative)
        if os.path.lexists(path) and not (path.is_dir() and not path.is_symlink()):
            _remove(path)
            done.append(f"/{relative} removed")
    ssh = guest_path(root, "etc/ssh", leaf=True)
    if ssh.is_dir():
        keys = sorted(p for p in ssh.iterdir() if p.name.startswith("ssh_host_"))
        for key in keys:
            _remove(key)
        done.append(f"the SSH host keys removed ({len(keys)} files)")
    state = guest_path(root, STATE)
    if state.is_dir() and not state.is_symlink():
        for entry in state.iterdir():
            _remove(entry)
        done.append(f"/{STATE} emptied")
    return done


def _remove(path: Path) -> None:
    """`path` removed as itself: a link unlinked, a file scrubbed and unlinked, a
    directory emptied the same way (never following a link) and removed."""
    if path.is_dir() and not path.is_symlink():
        for entry in path.iterdir():
            _remove(entry)
        path.rmdir()
    elif path.is_file() and not path.is_symlink():
        _scrub(path, keep=False)
    elif os.path.lexists(path):
        path.unlink()


def _scrub(path: Path, *, keep: bool) -> None:
    """Overwrite the regular file `path` with zeros (on disk: fsync) and then truncate
    it (`keep`) or unlink it."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        while size > 0:
            size -= os.write(fd, bytes(min(size, CHUNK)))
        os.fsync(fd)
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    if not keep:
        path.unlink()


def regenerate_host_keys_at_first_boot(root: Path, init: str) -> str:
    """Put in what makes SSH host keys at the clone's first boot; what it was, in words
    (nothing where the image has no /etc/ssh: no sshd to need them)."""
    if not guest_path(root, "etc/ssh", leaf=True).is_dir():
        return "no /etc/ssh in the image: no host keys to make"
    if init == "systemd":
        unit = guest_path(root, f"etc/systemd/system/{HOST_KEYS_UNIT_NAME}", leaf=True)
        _replace(unit, HOST_KEYS_UNIT, 0o644)
        link = guest_path(root, f"{WANTS}/{HOST_KEYS_UNIT_NAME}")
        if os.path.lexists(link):
            link.unlink()
        link.symlink_to(f"/etc/systemd/system/{HOST_KEYS_UNIT_NAME}")
        return f"SSH host keys made at first boot by {HOST_KEYS_UNIT_NAME}"
    rc_local = guest_path(root, RC_LOCAL, leaf=True)
    lines = [line for line in _read_lines(rc_local) if line != HOST_KEYS_RC_LINE]
    exits = [i for i, line in enumerate(lines) if line.lstrip().startswith("exit 0")]
    lines.insert(exits[-1] if exits else len(lines), HOST_KEYS_RC_LINE)
    _replace(rc_local, "".join(line + "\n" for line in lines), 0o755)
    return "SSH host keys made at first boot by a line in /etc/rc.local"


def _read_lines(path: Path) -> list[str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ImageError(f"cannot read {path.name} in the image: {exc.strerror}") from None
    with os.fdopen(fd) as handle:
        return handle.read().splitlines()


def _replace(path: Path, text: str, mode: int) -> None:
    """`path` replaced by a new file holding `text` (a link there is replaced, not
    followed); the old file's mode is kept when there was one."""
    with contextlib.suppress(FileNotFoundError):
        old = os.lstat(path)
        if stat.S_ISREG(old.st_mode):
            mode = stat.S_IMODE(old.st_mode)
    _make_directories(path.parent)
    partial = path.with_name(f".{path.name}.prepare")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(partial, mode)
    os.replace(partial, path)


def _make_directories(path: Path) -> None:
    """`path` and its missing parents, 0755 as in any image, whatever our umask."""
    if path.is_dir():
        return
    _make_directories(path.parent)
    path.mkdir()
    os.chmod(path, 0o755)  # noqa: S103 (a directory of the guest's tree)
