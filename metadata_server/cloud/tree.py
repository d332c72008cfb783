"""A read-only tree of files served under a URL prefix, with EC2-style directory listings.

Listings hold one entry per line; directories end in `/`. A tree can carry an explicit
listing for a directory where a format wants something else (EC2's `public-keys/` lists
`0=name`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping


class FileTree:
    def __init__(self, files: Mapping[str, bytes], listings: Mapping[str, bytes] | None = None):
        self._files = dict(files)
        children: dict[str, list[str]] = {}
        for path in self._files:
            parts = path.split("/")
            for depth in range(len(parts)):
                directory = "/".join(parts[:depth])
                entry = parts[depth] + ("/" if depth < len(parts) - 1 else "")
                entries = children.setdefault(directory, [])
                if entry not in entries:
                    entries.append(entry)
        self._listings = {
            directory: "\n".join(entries).encode() for directory, entries in children.items()
        }
        self._listings.update({key.strip("/"): value for key, value in (listings or {}).items()})

    def lookup(self, path: str) -> bytes | None:
        """A file's bytes, a directory's listing, or None, by the path's canonical name
        (`meta-data/placement`: no empty segment, no trailing `/`; the HTTP layer makes
        every path so, as IMDS reads it). Matched exactly: `..` or `.` match nothing."""
        found = self._files.get(path)
        return found if found is not None else self._listings.get(path)

    def files(self) -> Mapping[str, bytes]:
        return self._files
