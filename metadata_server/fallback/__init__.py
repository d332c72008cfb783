"""The ISO fallback: configuration on a read-only ISO that Dom0 hot-attaches to a guest.

Also home of the stand-ins for hosts without Xen: a xenstored wire-protocol server
(`xenstored`) and a stand-in for `xl` (`xl_standin`). Importing this package imports
nothing else: each module is loaded on its own.
"""
