"""The ISO fallback as one part of the server: the Xen adapter, the ISO directory, the
Provisioner and, when configured, the automatic fallback, started and stopped together.

`start()` first removes what a crashed run left (ISOs, attachments, signal keys), then
starts the automatic fallback; `stop()` stops it and cuts every running flow short,
each cleaning up after itself. Wiring only: the work is done in provision.py and auto.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from metadata_server.cloud.options import CloudOptions
from metadata_server.documents import DocumentOptions
from metadata_server.iso.auto import AutoFallback
from metadata_server.iso.directory import IsoDirectory
from metadata_server.iso.provision import Provisioner
from metadata_server.iso.settings import IsoSettings
from metadata_server.registry import Registry
from metadata_server.xen.host import XenHost

log = logging.getLogger(__name__)


class IsoFallback:
    def __init__(
        self,
        settings: IsoSettings,
        registry: Registry,
        documents: DocumentOptions,
        cloud: CloudOptions,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.xen = XenHost(settings.xen)
        self.provisioner = Provisioner(
            registry,
            self.xen,
            IsoDirectory(settings.directory),
            documents,
            cloud,
            settings.provision,
        )
        self.auto = (
            AutoFallback(self.provisioner, settings.auto, clock=clock)
            if settings.auto is not None
            else None
        )

    async def start(self) -> None:
        await self.provisioner.cleanup_leftovers()
        if self.auto is not None:
            await self.auto.start()

    async def stop(self) -> None:
        if self.auto is not None:
            await self.auto.stop()
        await self.provisioner.close()
