"""The etcd v3 API on a raftkv node: gRPC services and their JSON gateway."""
