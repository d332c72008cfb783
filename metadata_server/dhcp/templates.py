"""Where the DHCP templates come from: the packaged `dhcp_templates`, or a directory the
admin names (`dhcp.templates`). StrictUndefined: a template that names a variable the
renderer does not give fails loudly instead of writing a blank."""

from __future__ import annotations

from pathlib import Path

import jinja2


def template_environment(directory: Path | None = None) -> jinja2.Environment:
    loader: jinja2.BaseLoader
    if directory is None:
        loader = jinja2.PackageLoader("metadata_server.dhcp_templates", ".")
    else:
        loader = jinja2.FileSystemLoader(str(directory))
    return jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # config files, not HTML; every value was validated as it came in  # noqa: S701 (config files, not HTML)
        keep_trailing_newline=True,
    )
