"""The test bench of metadata-server: what stands in for Xen where it cannot run
(a xenstored wire-protocol server and an `xl`, in `xen/`) and the comparison harness
(`compare/`, the `metadata-server compare` command). Never imported by the product and
not in its wheel; installed from ./testbed with the `[test]` setup (scripts/lib.sh)."""
