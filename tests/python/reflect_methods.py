"""Ask a server's gRPC reflection for a service, and print whether each of
its methods streams, as grpcio's reflection client reads it.

usage: reflect_methods.py HOST:PORT SERVICE
"""
import json
import sys

import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

addr, service = sys.argv[1], sys.argv[2]
database = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(addr))
file = database.FindFileContainingSymbol(service)
(found,) = [s for s in file.service if "%s.%s" % (file.package, s.name) == service]
print(
    json.dumps(
        {m.name: {"client_streaming": m.client_streaming, "server_streaming": m.server_streaming} for m in found.method}
    )
)
