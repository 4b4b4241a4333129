"""Security: broker credentials and ACLs, TLS settings, secret handling, structured logs."""
