"""The guard tests boot real guest scripts: the guest rootfs fixture of tests/guest_init."""

from tests.guest_init.conftest import make_guest  # noqa: F401 (a fixture, shared)
