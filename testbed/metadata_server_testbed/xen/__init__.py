"""Stand-ins for Xen on hosts without it: `xenstored` (the wire protocol over a unix
socket, with per-domain permissions and watches, `xs_tree`/`xs_wire`/`xs_client`) and
`xl_standin` (block-attach and -detach of an ISO onto a loop device). Importing this
package imports nothing else: each module is loaded on its own."""
