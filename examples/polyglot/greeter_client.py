"""Call courier's helloworld example from Python's grpcio, as any gRPC
client would: stubs generated from the same proto/helloworld.proto.

    pip install grpcio grpcio-tools
    python -m grpc_tools.protoc -I examples/proto --python_out=. --grpc_python_out=. helloworld.proto
    cargo run --example helloworld -- serve 127.0.0.1:50051 &
    python examples/polyglot/greeter_client.py 127.0.0.1:50051
"""
import sys

import grpc
import helloworld_pb2
import helloworld_pb2_grpc

with grpc.insecure_channel(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051") as channel:
    greeter = helloworld_pb2_grpc.GreeterStub(channel)
    reply = greeter.SayHello(helloworld_pb2.HelloRequest(name="Python"), timeout=5)
    print("gRPC:", reply.message)
    try:
        greeter.SayHello(helloworld_pb2.HelloRequest(name=""), timeout=5)
    except grpc.RpcError as err:
        print("gRPC error:", err.code().name, err.details())
