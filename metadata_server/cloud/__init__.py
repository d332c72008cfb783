"""Cloud-compatible views of a guest (EC2, OpenStack, NoCloud), so images that carry
cloud-init or an AWS-style IMDS client work unchanged. Pure: every function takes a
`GuestView` and options and returns bytes; the HTTP layer and the ISO builder serve the
same bytes."""
