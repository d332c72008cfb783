"""The `metadata-server` command: `serve` runs the service, the other commands talk to it."""
