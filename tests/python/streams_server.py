"""A Python grpcio server of streams.Streams, for courier's gRPC client to
call. Prints its port, then serves until its standard input closes.

usage: streams_server.py STUBS_DIR
"""
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
import streams_pb2 as pb  # noqa: E402
import streams_pb2_grpc  # noqa: E402

CODES = {code.value[0]: code for code in grpc.StatusCode}
last_cancel = {"micros": 0}
lock = threading.Lock()


def watch_cancel(context):
    def on_done():
        with lock:
            last_cancel["micros"] = int(time.time() * 1_000_000)

    # Called when the RPC terminates however it does; the tests only read it
    # after a cancelled stream.
    context.add_callback(on_done)


class Streams(streams_pb2_grpc.StreamsServicer):
    def Produce(self, request, context):
        watch_cancel(context)
        for seq in range(request.count):
            if request.fail_code and seq == request.fail_after:
                context.abort(CODES.get(request.fail_code, grpc.StatusCode.UNKNOWN), "failed after %d" % seq)
            if request.delay_ms:
                time.sleep(request.delay_ms / 1000)
            yield pb.Chunk(seq=seq, payload=b"p" * request.size)

    def Consume(self, request_iterator, context):
        count = size = last = 0
        for chunk in request_iterator:
            if chunk.fail_code:
                context.abort(CODES.get(chunk.fail_code, grpc.StatusCode.UNKNOWN), "failed at %d" % chunk.seq)
            count += 1
            size += len(chunk.payload)
            last = chunk.seq
        return pb.Summary(count=count, bytes=size, last_seq=last)

    def Echo(self, request_iterator, context):
        watch_cancel(context)
        for chunk in request_iterator:
            if chunk.fail_code:
                context.abort(CODES.get(chunk.fail_code, grpc.StatusCode.UNKNOWN), "failed at %d" % chunk.seq)
            yield chunk

    def LastCancel(self, request, context):
        with lock:
            return pb.CancelReport(unix_micros=last_cancel["micros"])


server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
streams_pb2_grpc.add_StreamsServicer_to_server(Streams(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()
server.stop(0)
