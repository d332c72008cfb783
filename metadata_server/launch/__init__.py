"""On-request launch: `vm launch` takes a guest from "I want a VM" to a running domain
that configures itself, and `vm destroy` takes it away again.

request.py parses the admin's launch request; allocate.py picks the guest's MAC and
address; boot.py decides which kernel the guest boots; xl_config.py renders its xl
domain config; xl.py runs `xl create`, `xl destroy` and `xl domid`; record.py keeps the
launch record next to the config (what this Dom0 made, for `vm destroy`); launcher.py
runs the steps and undoes them on any failure or cancellation; destroy.py undoes a
launch on request. errors.py holds their errors.
"""
