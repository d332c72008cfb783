"""Master images and their delta disks: `image prepare` turns a raw or qcow2 disk with a
Linux root into a read-only qcow2 master with the guest boot script installed and the
per-clone state cleared, its image id recorded next to it; `image clone` makes a guest's
delta disk backed by such a master. Loop devices, mounts and qemu-img are the means
(disk.py); nothing is left mounted, attached or half-written on any path, interruptions
included (interrupts.py)."""
