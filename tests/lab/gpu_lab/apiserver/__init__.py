"""A Kubernetes-compatible HTTPS API server that the official clients use unchanged."""
