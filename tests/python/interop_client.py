"""Calls a courier server's interop.Interop service with Python's grpcio and
prints what happened as JSON, for tests/polyglot.rs to check.

usage: interop_client.py HOST:PORT STUBS_DIR
"""
import json
import sys
import time

addr, stubs = sys.argv[1], sys.argv[2]
sys.path.insert(0, stubs)

import grpc  # noqa: E402
import interop_pb2  # noqa: E402
import interop_pb2_grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)

LIMIT = 16 * 1024 * 1024
channel = grpc.insecure_channel(
    addr,
    options=[("grpc.max_receive_message_length", LIMIT), ("grpc.max_send_message_length", LIMIT)],
)
stub = interop_pb2_grpc.InteropStub(channel)
out = {}


def failure(call):
    try:
        call()
        return None
    except grpc.RpcError as err:
        return {"code": err.code().name, "details": err.details()}


reply, call = stub.Echo.with_call(
    interop_pb2.EchoRequest(message="hello", payload=b"\x00\x01\xff", echo_metadata=["x-token", "x-trace-bin"]),
    metadata=[("x-token", "abc"), ("x-trace-bin", b"\x01\x02\x03")],
)
out["echo"] = {
    "message": reply.message,
    "payload": list(reply.payload),
    "metadata": dict(reply.metadata),
    "initial_metadata": {k: (v if isinstance(v, str) else list(v)) for k, v in call.initial_metadata()},
}

out["fail"] = failure(lambda: stub.Fail(interop_pb2.FailRequest(code=5, message="no such thing: «x»")))

start = time.monotonic()
deadline = failure(lambda: stub.Sleep(interop_pb2.SleepRequest(millis=3000), timeout=0.2))
out["deadline"] = {"failure": deadline, "elapsed_ms": int((time.monotonic() - start) * 1000)}

payload = bytes(range(256)) * (4 * 1024 * 1024 // 256)
big = stub.Echo(interop_pb2.EchoRequest(message="big", payload=payload))
out["big"] = {"sent": len(payload), "received": len(big.payload), "same": big.payload == payload}

squeezed, call = stub.Echo.with_call(
    interop_pb2.EchoRequest(message="squeezed", payload=b"a" * 100000), compression=grpc.Compression.Gzip
)
out["gzip"] = {"message": squeezed.message, "received": len(squeezed.payload)}

health = health_pb2_grpc.HealthStub(channel)
status_name = health_pb2.HealthCheckResponse.ServingStatus.Name
out["health"] = {
    "server": status_name(health.Check(health_pb2.HealthCheckRequest(service="")).status),
    "interop": status_name(health.Check(health_pb2.HealthCheckRequest(service="interop.Interop")).status),
    "unknown": failure(lambda: health.Check(health_pb2.HealthCheckRequest(service="nope.Nope"))),
}

database = ProtoReflectionDescriptorDatabase(channel)
interop_file = database.FindFileContainingSymbol("interop.Interop")
out["reflection"] = {
    "services": sorted(database.get_services()),
    "file": interop_file.name,
    "methods": [m.name for m in interop_file.service[0].method],
    "message_file": database.FindFileContainingSymbol("interop.EchoReply").name,
}

print(json.dumps(out))
