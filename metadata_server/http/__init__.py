"""The HTTP faces of the service: the guest API and the admin API, on separate listeners."""
