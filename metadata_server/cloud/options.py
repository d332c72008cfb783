"""Server-wide facts the cloud views need that are not part of a guest record."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CloudOptions:
    instance_type: str = "xen.guest"
    availability_zone: str = "local-1a"

    @property
    def region(self) -> str:
        """EC2's rule: the zone without its final letter (`local-1a` → `local-1`)."""
        zone = self.availability_zone
        return zone[:-1] if len(zone) > 1 and zone[-1].isalpha() else zone
