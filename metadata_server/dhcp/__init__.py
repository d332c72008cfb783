"""DHCP for guests: render the daemon's files from the registry (render.py, pure),
validate them with the daemon's own checker, replace them atomically and reload
(daemons.py), keep them in step with registry changes (sync.py)."""
