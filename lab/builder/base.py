"""The base layer: what changes only with Debian's package versions or with this recipe.

- `xen`: the Xen 4.17 hypervisor as an ELF (gunzipped: QEMU's multiboot loader cannot
  read the .gz). Taken from the dom0 tree's own xen-hypervisor package, so that the
  hypervisor and dom0's xl/libxc are always the same Xen build.
- `vmlinuz`, `initrd-dom0.img`: Debian's kernel and a small initramfs (virtio disk, ext4).
- `dom0.img`: dom0's root filesystem (ext4, label lab-dom0): the Xen toolstack, qemu for
  the qdisk backend, dnsmasq, nftables, Python; the kernel again (for the domUs) with a
  domU initramfs (blkfront, ext4); the scenario unit. The project itself is not in it:
  it comes on its own disk (the project layer), mounted at /opt/metadata-server.
- `dom0-root/`, `guest-root/`: the trees, kept for the project layer (which adds the
  project on an overlay, never changing them). The guest tree is a minimal bookworm with
  systemd, DHCP by systemd-networkd, curl, xenstore-utils and the kernel modules a PV
  guest needs (blkfront, netfront, iso9660).
"""

from __future__ import annotations

import gzip
import json
import lzma
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.builder.apt import Mirrors
from lab.builder.chroot import Chroot, debootstrap
from lab.builder.commands import BuildError, Runner
from lab.builder.images import ext4_image

HERE = Path(__file__).resolve().parent
VM_FILES = HERE.parent / "vm"

# Packages, as Debian names them. debootstrap's --include takes what systemd needs to
# boot at all; the rest comes through apt (with bookworm-updates and security).
BOOTSTRAP = ["systemd-sysv", "udev", "kmod"]
DOM0_PACKAGES = [
    "linux-image-amd64",
    "initramfs-tools",
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "xenstore-utils",
    "qemu-system-xen",  # the qdisk backend: qcow2 deltas
    "qemu-utils",  # qemu-img for the deltas, qemu-nbd to look into a guest's disk
    "dnsmasq-base",  # the binary only: the metadata server runs it on xenbr0
    "nftables",
    "iproute2",
    "python3",
    "python3-venv",
    "procps",
    "curl",
]
# busybox-static: the hostile co-tenant's tools (httpd, udhcpd, arping)
GUEST_PACKAGES = ["iproute2", "curl", "xenstore-utils", "busybox-static"]
# Modules a PV guest loads after the initramfs (their dependencies come along).
GUEST_MODULES = ["xen-blkfront", "xen-netfront", "isofs", "ext4", "cdrom"]
DOM0_INITRD_MODULES = ["virtio_pci", "virtio_blk", "ext4"]
DOMU_INITRD_MODULES = ["xen-blkfront", "ext4"]

DOM0_IMAGE_SIZE = "4G"
DOM0_TIMERS = [
    f"{name}.timer"
    for name in (
        "apt-daily",
        "apt-daily-upgrade",
        "dpkg-db-backup",
        "e2scrub_all",
        "fstrim",
        "systemd-tmpfiles-clean",
    )
]
PROJECT_MOUNT = "/opt/metadata-server"


def all_packages() -> list[str]:
    """Everything the base layer asks apt for (its versions are the layer's key)."""
    return sorted(set(BOOTSTRAP + DOM0_PACKAGES + GUEST_PACKAGES))


def recipe_files() -> list[Path]:
    """The files whose content decides the base layer (besides package versions)."""
    return (
        [HERE / name for name in ("base.py", "apt.py", "chroot.py", "images.py", "commands.py")]
        + sorted(p for p in (VM_FILES / "dom0").rglob("*") if p.is_file())
        + sorted(p for p in (VM_FILES / "guest").rglob("*") if p.is_file())
    )


def kernel_version(root: Path) -> str:
    versions = sorted(p.name for p in (root / "lib/modules").iterdir())
    if len(versions) != 1:
        raise BuildError(f"expected one kernel in {root}/lib/modules, found {versions}")
    return versions[0]


def _initramfs(chroot: Chroot, name: str, modules: list[str], kver: str) -> None:
    """A small initramfs from its own initramfs-tools directory: MODULES=list, so it holds
    only `modules` (a 256 MB PV guest cannot unpack Debian's full one)."""
    conf = chroot.root / f"etc/initramfs-tools-{name}"
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree(chroot.root / "etc/initramfs-tools", conf, symlinks=True)
    text = (conf / "initramfs.conf").read_text()
    lines = ["MODULES=list" if line.startswith("MODULES=") else line for line in text.splitlines()]
    (conf / "initramfs.conf").write_text("\n".join(lines) + "\n")
    with (conf / "modules").open("a") as listed:
        listed.write("\n".join(modules) + "\n")
    chroot.run(
        f"mkinitramfs {name}",
        "mkinitramfs",
        "-d",
        f"/etc/initramfs-tools-{name}",
        "-o",
        f"/boot/initrd-{name}.img",
        kver,
        heavy=True,
    )


XZ_MAGIC = b"\xfd7zXZ\x00"


def unpack_kernel(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage whose payload is xz (Debian's): the first xz
    stream that unpacks to an ELF."""
    start = bzimage.find(XZ_MAGIC)
    while start != -1:
        unpacker = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            elf = unpacker.decompress(bzimage[start:])
        except lzma.LZMAError:
            elf = b""
        if elf.startswith(b"\x7fELF"):
            return elf
        start = bzimage.find(XZ_MAGIC, start + 1)
    raise BuildError("no xz-packed ELF kernel inside the bzImage")


def _install_vm_files(source: Path, root: Path) -> None:
    """Copy lab/vm/<side>/ into the tree: paths as in the tree, mode kept."""
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = root / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _mask(root: Path, *units: str) -> None:
    for unit in units:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def _enable(root: Path, target: str, unit: str, source: str | None = None) -> None:
    wants = root / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    link.unlink(missing_ok=True)
    link.symlink_to(source or f"/etc/systemd/system/{unit}")


def _bootstrap(runner: Runner, mirrors: Mirrors, layer: Path, debs: Path) -> None:
    """One debootstrap, copied: dom0 and the guest start from the same minbase tree."""
    root = layer / "dom0-root"
    debootstrap(runner, root, mirrors, BOOTSTRAP, debs)
    runner.run(
        "copy the minbase tree for the guest", ["cp", "-a", str(root), str(layer / "guest-root")]
    )


def dom0_packages(runner: Runner, mirrors: Mirrors, layer: Path) -> str:
    """dom0's packages and initramfs images; returns the kernel version."""
    chroot = Chroot(layer / "dom0-root", runner, mirrors)
    with chroot.apt_session():
        # INITRD=No: the kernel's hook would build Debian's full initramfs; ours follow
        chroot.install(DOM0_PACKAGES, env={"INITRD": "No"})
        kver = kernel_version(chroot.root)
        _initramfs(chroot, "dom0", DOM0_INITRD_MODULES, kver)
        _initramfs(chroot, "domu", DOMU_INITRD_MODULES, kver)
    return kver


def guest_packages(runner: Runner, mirrors: Mirrors, layer: Path) -> None:
    chroot = Chroot(layer / "guest-root", runner, mirrors)
    with chroot.apt_session():
        chroot.install(GUEST_PACKAGES)


def configure_dom0(runner: Runner, layer: Path, kver: str) -> None:
    """dom0's boot files for QEMU, its configuration, its root image."""
    root = layer / "dom0-root"
    with gzip.open(root / "boot/xen-4.17-amd64.gz") as packed, (layer / "xen").open("wb") as elf:
        shutil.copyfileobj(packed, elf)
    shutil.copy2(root / f"boot/vmlinuz-{kver}", layer / "vmlinuz")
    shutil.copy2(root / "boot/initrd-dom0.img", layer / "initrd-dom0.img")

    _install_vm_files(VM_FILES / "dom0", root)
    (root / "etc/hostname").write_text("dom0\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 dom0\n")
    # no fsck (pass 0): both disks are fresh images at every boot, and checking them
    # under TCG takes most of a minute
    (root / "etc/fstab").write_text(
        "LABEL=lab-dom0 / ext4 defaults,noatime 0 0\n"
        f"LABEL=lab-project {PROJECT_MOUNT} ext4 defaults,noatime 0 0\n"
    )
    (root / PROJECT_MOUNT.lstrip("/")).mkdir(parents=True, exist_ok=True)
    # no login prompts on the consoles: the serial log stays readable
    _mask(root, "serial-getty@hvc0.service", "getty@tty1.service", "getty-static.service")
    # nothing that a one-shot lab boot does not need, each costs seconds under TCG
    _mask(
        root,
        "xendomains.service",
        "e2scrub_reap.service",
        "systemd-fsck-root.service",
        *DOM0_TIMERS,
    )
    _enable(root, "multi-user.target", "lab-scenario.service")
    xl_conf = root / "etc/xen/xl.conf"
    lines = xl_conf.read_text().splitlines() if xl_conf.exists() else []
    # dom0's memory is fixed on Xen's command line: xl must not balloon it down
    xl_conf.write_text("\n".join([*lines, 'autoballoon="off"']) + "\n")
    default = root / "etc/default/xen"
    # the guests' consoles logged to /var/log/xen/console/guest-NAME.log, read by the
    # checks (xenconsoled does not make the directory)
    (root / "var/log/xen/console").mkdir(parents=True, exist_ok=True)
    default.write_text(
        default.read_text()
        + 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console --timestamp=guest"\n'
    )
    # the domUs boot an uncompressed kernel: libxc unpacking the xz one in dom0 costs
    # seconds of TCG per `xl create`
    kernel = unpack_kernel((root / f"boot/vmlinuz-{kver}").read_bytes())
    (root / "boot/vmlinux-domu").write_bytes(kernel)
    ext4_image(runner, root, layer / "dom0.img", "lab-dom0", DOM0_IMAGE_SIZE)


def configure_guest(runner: Runner, layer: Path, kver: str) -> None:
    """The master guest's tree (the project's boot script is added by the project layer):
    the kernel modules it loads (it boots dom0's kernel, kernel= in its xl config), DHCP,
    and nothing that must differ per clone."""
    root = layer / "guest-root"
    dom0 = layer / "dom0-root"
    # dom0's own modprobe (the host may have no kmod) resolves the dependencies
    shown = runner.run(
        "modprobe --show-depends",
        ["chroot", str(dom0), "modprobe", "-S", kver, "--show-depends", "-a", *GUEST_MODULES],
        capture=True,
    )
    modules = root / "lib/modules" / kver
    shutil.rmtree(modules, ignore_errors=True)
    for line in shown.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "insmod":
            relative = Path(words[1]).relative_to("/")
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dom0 / relative, root / relative)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        shutil.copy2(dom0 / "lib/modules" / kver / name, modules / name)
    runner.run("depmod (guest)", ["chroot", str(root), "depmod", kver])

    _install_vm_files(VM_FILES / "guest", root)
    (root / "etc/hostname").write_text("master\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc/fstab").write_text("/dev/xvda / ext4 defaults,noatime 0 1\n")
    # a guest has no timers to run in a lab boot of a minute, and no use for text
    # consoles (a PV guest has hvc0) or a reaper of e2scrub snapshots: each unit costs
    # seconds under TCG, when four guests share dom0's two emulated CPUs
    _mask(root, *DOM0_TIMERS, "getty-static.service", "getty@tty1.service", "e2scrub_reap.service")
    # every clone makes its own machine id at first boot
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for target, unit in (
        ("multi-user.target", "systemd-networkd.service"),
        ("sockets.target", "systemd-networkd.socket"),
        ("network-online.target", "systemd-networkd-wait-online.service"),
    ):
        _enable(root, target, unit, f"/lib/systemd/system/{unit}")


def build_base(
    runner: Runner, mirrors: Mirrors, layer: Path, debs: Path, versions: dict[str, str]
) -> None:
    _bootstrap(runner, mirrors, layer, debs)
    # the two trees' apt runs overlap: most of the time goes to downloads and dpkg
    with ThreadPoolExecutor(max_workers=1) as pool:
        guest = pool.submit(guest_packages, runner.child("guest"), mirrors, layer)
        kver = dom0_packages(runner, mirrors, layer)
        guest.result()
    configure_guest(runner, layer, kver)
    configure_dom0(runner, layer, kver)
    (layer / "info.json").write_text(
        json.dumps({"kernel": kver, "packages": versions}, indent=1, sort_keys=True)
    )
