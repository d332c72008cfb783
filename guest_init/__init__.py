"""The guest boot script, its DHCP hook, systemd unit and installer, shipped as package
data so an installed wheel carries the same files as a checkout (the comparison harness
installs them into its simulated guests). Nothing here is Python; nothing runs on import."""
