"""The committed etcd API modules: etcd's names and paths, and in step with the .proto files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from raftkv.etcd.pb import kv_pb2, rpc_pb2, rpc_pb2_grpc

PB = Path(__file__).resolve().parents[2] / "raftkv" / "etcd" / "pb"


def test_method_paths_are_etcds() -> None:
    service = rpc_pb2.DESCRIPTOR.services_by_name["KV"]
    assert service.full_name == "etcdserverpb.KV"
    assert [m.name for m in service.methods] == ["Range", "Put", "DeleteRange", "Txn", "Compact"]
    assert kv_pb2.KeyValue.DESCRIPTOR.full_name == "mvccpb.KeyValue"
    assert hasattr(rpc_pb2_grpc, "MaintenanceStub")


def test_wire_format_of_a_put_matches_etcds_field_numbers() -> None:
    # etcd's PutRequest{key: "a", value: "b", prev_kv: true}: fields 1, 2, 4.
    assert rpc_pb2.PutRequest(key=b"a", value=b"b", prev_kv=True).SerializeToString() == (
        b"\x0a\x01a\x12\x01b\x20\x01"
    )


def test_generated_modules_match_the_proto_files(tmp_path: Path) -> None:
    """scripts/gen_etcd_pb.py was rerun after the last .proto edit."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    root = tmp_path / "root"
    (root / "raftkv" / "etcd").mkdir(parents=True)
    shutil.copytree(PB, root / "raftkv" / "etcd" / "pb", ignore=shutil.ignore_patterns("*.py*"))
    out = tmp_path / "set.pb"
    names = [f"raftkv/etcd/pb/{n}.proto" for n in ("kv", "auth", "rpc")]
    assert protoc.main(["protoc", f"-I{root}", f"--descriptor_set_out={out}", *names]) == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    committed = {}
    for module in (kv_pb2, rpc_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        committed[proto.name] = proto
    for proto in fresh.file:
        for message in proto.message_type:
            _drop_json_names(message)  # the generated modules do not keep them
        if proto.name in committed:
            assert proto == committed[proto.name], f"{proto.name}: rerun scripts/gen_etcd_pb.py"


def _drop_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _drop_json_names(nested)
