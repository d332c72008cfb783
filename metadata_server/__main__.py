"""Allows `python -m metadata_server`."""

from metadata_server.cli.main import main

raise SystemExit(main())
