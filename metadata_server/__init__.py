"""Per-guest first-boot configuration for Xen hosts.

The package is split into a pure core (model, errors, passwords, documents) and the
adapters around it (store, netlink, http, cli). See README.md for the whole picture.
"""

__version__ = "0.1.0"
