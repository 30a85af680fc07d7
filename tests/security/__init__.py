"""Security: least-privilege NATS users, TLS, secrets kept out of everything, loopback metrics."""
