"""Jinja2 templates for the DHCP daemons (dnsmasq, Kea, ISC dhcpd), shipped as package
data so an installed wheel renders the same files as a checkout. Users can point
`dhcp.templates` at a directory of their own with the same file names."""
