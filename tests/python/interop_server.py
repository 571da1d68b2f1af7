"""A Python grpcio server of interop.Interop, for courier's gRPC client to
call. Prints its port, then serves until its standard input closes. Given
a NAME, Echo answers with the response header `x-served-by: NAME`, so a
client balancing over several of these can tell who answered.

usage: interop_server.py STUBS_DIR [NAME]
"""
import sys
import time
from concurrent import futures

sys.path.insert(0, sys.argv[1])
NAME = sys.argv[2] if len(sys.argv) > 2 else None

import grpc  # noqa: E402
import interop_pb2  # noqa: E402
import interop_pb2_grpc  # noqa: E402

CODES = {code.value[0]: code for code in grpc.StatusCode}


class Interop(interop_pb2_grpc.InteropServicer):
    def Echo(self, request, context):
        if NAME is not None:
            context.send_initial_metadata((("x-served-by", NAME),))
        sent = dict(context.invocation_metadata())
        echoed = {key: sent[key] for key in request.echo_metadata if key in sent}
        return interop_pb2.EchoReply(message=request.message, payload=request.payload, metadata=echoed)

    def Fail(self, request, context):
        context.abort(CODES.get(request.code, grpc.StatusCode.UNKNOWN), request.message)

    def Sleep(self, request, context):
        time.sleep(request.millis / 1000)
        return interop_pb2.Empty()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
interop_pb2_grpc.add_InteropServicer_to_server(Interop(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()
server.stop(0)
