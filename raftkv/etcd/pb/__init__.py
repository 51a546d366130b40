"""Generated protobuf and gRPC modules of the etcd v3 API (etcd 3.5's wire format).

Rule: the ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` modules here are
generated from the ``.proto`` files beside them by ``scripts/gen_etcd_pb.py``
(grpcio-tools, pinned in the ``dev`` extra) and committed. Committing them means
no build step at install: a wheel or ``pip install -e .`` needs only the
``grpcio`` and ``protobuf`` runtime packages, never protoc; running the script
again reproduces them. Never edit them by hand: edit a ``.proto`` and rerun the
script.

The ``.proto`` files are raftkv's own statement of etcd's API: package
(``etcdserverpb``, ``mvccpb``, ``authpb``), service, method and message names,
field numbers and types as etcd 3.5 has them, so every method's path is etcd's
(``/etcdserverpb.KV/Range``) and every message is byte-compatible, without
etcd's gogoproto, HTTP and version annotations.
"""
