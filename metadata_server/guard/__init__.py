"""The bridge guard: nftables rules by which each guest port carries only its own MAC
and addresses."""
