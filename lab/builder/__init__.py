"""Builds the lab's images from Debian packages and the working tree, cached by a key of
their inputs. Two layers: the base (Xen, the dom0 kernel and root image, the master
guest's root tree: minutes, rebuilt when a package version or the builder changes) and
the project (this project installed into dom0 and into the master: seconds, rebuilt on
every change of the tree)."""
