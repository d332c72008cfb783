"""The comparison harness: the network pull against the ISO method, measured side by side.

`metadata-server compare` boots simulated guests (busybox roots in their own network,
mount, UTS and PID namespaces, all on one Dom0 bridge) against a real server process,
measures both methods and writes a report with charts and the raw data.

The namespace and root filesystem helpers (`netns`, `rootfs`) are shared with the test
suite. Importing this package imports nothing else; each module is loaded on its own.
Nothing here runs at import time, and nothing here may send traffic anywhere but
loopback and the namespaces it creates (198.18.0.0/15 and 169.254.169.254 inside them).
"""
