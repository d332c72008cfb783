"""The Xen lab: a real Xen 4.17 host (hypervisor, PV dom0, PV domUs) booted inside QEMU,
so that what the project does with xl, xenstore, blkback and vifs is checked against
Xen itself and not only against the stand-ins in testbed/ (metadata_server_testbed.xen).

`lab.builder` makes the images on the host from Debian packages (cached by a key of its
inputs), `lab.qemu` boots them, `lab.scenarios` runs inside dom0 and reports through
markers on the serial console (`lab.markers`). Never imported by the product.
"""
