"""Where the admin bearer token comes from, and making one on first start.

Order: the `admin.token` setting (METADATA_SERVER_ADMIN_TOKEN), then `admin.token_file`,
then `admin-token` next to the database, created 0600 on first start. The path may be
logged; the token never is.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from metadata_server.config import DEMO_DB, Settings
from metadata_server.errors import ConfigError

log = logging.getLogger(__name__)
DEFAULT_NAME = "admin-token"
MIN_LENGTH = 16


def default_token_path(settings: Settings) -> Path:
    return settings.db_dir / DEFAULT_NAME


def read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"the admin token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the admin token file {path}: {exc}") from None
    if len(token) < MIN_LENGTH or any(ch.isspace() for ch in token):
        raise ConfigError(
            f"the admin token in {path} must be at least {MIN_LENGTH} characters without spaces"
        )
    return token


def load_client_token(settings: Settings) -> str:
    """The token an admin client sends: the same sources the server reads, no creation.

    Without a configured token or file, the file next to the configured database is
    used, then the demo's (./var/admin-token), so `vm list` works beside `serve --demo`.
    """
    if settings.admin.token:
        return settings.admin.token
    if settings.admin.token_file is not None:
        return read_token_file(settings.admin.token_file)
    candidates = [default_token_path(settings), Path(DEMO_DB).parent / DEFAULT_NAME]
    for path in candidates:
        if path.exists():
            return read_token_file(path)
    raise ConfigError(
        "no admin token: set METADATA_SERVER_ADMIN_TOKEN or --admin-token-file "
        f"(looked for {' and '.join(str(p) for p in candidates)})"
    )


def ensure_server_token(settings: Settings) -> tuple[str, Path | None]:
    """The token the server checks, and the file it is in (None when it came from the
    setting or environment); creates the default token file when there is none."""
    if settings.admin.token:
        if len(settings.admin.token) < MIN_LENGTH:
            raise ConfigError(f"the admin token must be at least {MIN_LENGTH} characters")
        return settings.admin.token, None
    if settings.admin.token_file is not None:
        return read_token_file(settings.admin.token_file), settings.admin.token_file
    path = default_token_path(settings)
    if path.exists():
        return read_token_file(path), path
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
    except FileExistsError:
        return read_token_file(path), path
    except OSError as exc:
        raise ConfigError(f"cannot create the admin token file {path}: {exc.strerror}") from None
    log.warning("generated an admin token into %s (mode 0600)", path)
    return token, path
