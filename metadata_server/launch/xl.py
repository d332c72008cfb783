"""The xl commands a launch and a destroy run: `xl create CONFIG`, `xl destroy NAME`
and `xl domid NAME` (does the domain exist?). argv lists with a timeout each, through
the same runner as the ISO fallback's (`xen.commands`): a command whose caller is
cancelled is killed and reaped, and a failure is `XenCommandFailed` with xl's stderr."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from metadata_server.launch.errors import ToolMissing
from metadata_server.xen.commands import run_command

# xl's words for a name no domain has (libxl_name_to_domid failing in `xl domid`).
NO_SUCH_DOMAIN = "does not exist"
CREATE_TIMEOUT = 120.0  # seconds: xl create builds the domain and starts its qdisk backend


@dataclass(frozen=True)
class Xl:
    command: tuple[str, ...] = ("xl",)
    env: Mapping[str, str] | None = None
    timeout: float = 30.0

    def check_installed(self) -> None:
        """ToolMissing when xl cannot be found: before anything is made."""
        program = self.command[0]
        path = program if os.sep in program else shutil.which(program)
        if path is None or not os.access(path, os.X_OK):
            raise ToolMissing(
                f"xl is not installed: {program} is not on PATH (Debian package xen-utils "
                "on a Xen Dom0); set iso.xl_command if it lives elsewhere"
            )

    async def exists(self, name: str) -> bool:
        """Whether a domain `name` exists; XenCommandFailed when xl cannot tell."""
        result = await run_command(
            [*self.command, "domid", name], timeout=self.timeout, env=self.env, check=False
        )
        if result.returncode == 0:
            return True
        if NO_SUCH_DOMAIN in result.stderr:
            return False
        await run_command([*self.command, "domid", name], timeout=self.timeout, env=self.env)
        return False  # not reached: the command above raised

    async def create(self, config: str) -> None:
        await run_command(
            [*self.command, "create", config],
            timeout=max(self.timeout, CREATE_TIMEOUT),
            env=self.env,
        )

    async def destroy(self, name: str) -> None:
        await run_command([*self.command, "destroy", name], timeout=self.timeout, env=self.env)

    async def destroy_if_running(self, name: str) -> bool:
        """`xl destroy NAME` when the domain exists; whether it did."""
        if not await self.exists(name):
            return False
        await self.destroy(name)
        return True
