"""Server-wide facts the cloud views need that are not part of a guest record."""

from __future__ import annotations

from dataclasses import dataclass

# What `ami-id` says while the registry does not know a guest's master image: one id for
# every guest, all zeros, so it reads as "no image known" and never changes.
UNKNOWN_IMAGE_ID = "ami-00000000000000000"


@dataclass(frozen=True)
class CloudOptions:
    instance_type: str = "xen.guest"
    availability_zone: str = "local-1a"
    image_id: str = UNKNOWN_IMAGE_ID
    # The guest's disk as its kernel names it: Xen attaches a guest's (qcow2) disk as xvda.
    root_device: str = "/dev/xvda"
    security_group: str = "default"

    @property
    def region(self) -> str:
        """EC2's rule: the zone without its final letter (`local-1a` → `local-1`)."""
        zone = self.availability_zone
        return zone[:-1] if len(zone) > 1 and zone[-1].isalpha() else zone
