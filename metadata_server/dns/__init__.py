"""The DNS responder for the guests' domain: A, PTR, SOA and NS from the registry.

Pure core: settings.py (the `[dns]` settings), zone.py (the registry as names),
answer.py (one query → a decision), relay.py (checks on upstream answers).
Adapters: upstream.py (forwarding), server.py (UDP/TCP endpoints), service.py
(`DnsService`, what the app starts and stops). This file imports only the pure
settings, so importing a core module does not pull in asyncio or sockets.
"""

from metadata_server.dns.settings import DnsSettings, parse_endpoint

__all__ = ["DnsSettings", "parse_endpoint"]
