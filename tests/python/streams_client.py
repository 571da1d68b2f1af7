"""A Python grpcio client of streams.Streams, against a courier server:
every kind of streaming call, then failures. Prints one JSON object.

usage: streams_client.py HOST:PORT STUBS_DIR
"""
import json
import queue
import sys
import time

sys.path.insert(0, sys.argv[2])

import grpc  # noqa: E402
import streams_pb2 as pb  # noqa: E402
import streams_pb2_grpc  # noqa: E402

N = 10_000
channel = grpc.insecure_channel(sys.argv[1])
stub = streams_pb2_grpc.StreamsStub(channel)
out = {}


def failure(err):
    return {"code": err.code().name, "details": err.details()}


# Server-streaming: 10,000 replies, in order.
seqs = [chunk.seq for chunk in stub.Produce(pb.ProduceRequest(count=N, size=100), timeout=60)]
out["produce"] = {"received": len(seqs), "ordered": seqs == list(range(N))}

# Client-streaming: 10,000 requests.
summary = stub.Consume((pb.Chunk(seq=i, payload=b"x" * 100) for i in range(N)), timeout=60)
out["consume"] = {"count": summary.count, "bytes": summary.bytes, "last_seq": summary.last_seq}

# Bidirectional: 10,000 each way, sent as fast as flow control allows.
seqs = [chunk.seq for chunk in stub.Echo((pb.Chunk(seq=i, payload=b"y" * 100) for i in range(N)), timeout=60)]
out["echo"] = {"received": len(seqs), "ordered": seqs == list(range(N))}

# Bidirectional in lockstep: the next request only after each reply (a
# server that batched its replies would deadlock this).
requests = queue.Queue()


def lockstep():
    while True:
        item = requests.get()
        if item is None:
            return
        yield item


requests.put(pb.Chunk(seq=0))
got = []
for reply in stub.Echo(lockstep(), timeout=30):
    got.append(reply.seq)
    if len(got) == 100:
        requests.put(None)
    else:
        requests.put(pb.Chunk(seq=len(got)))
out["lockstep"] = {"received": len(got), "ordered": got == list(range(100))}

# Compressed per message, both ways.
payload = b"squeeze me " * 1000
echoed = list(
    stub.Echo((pb.Chunk(seq=i, payload=payload) for i in range(50)), timeout=30, compression=grpc.Compression.Gzip)
)
out["gzip"] = {"received": len(echoed), "same": all(chunk.payload == payload for chunk in echoed)}

# An error status mid-stream: the messages before it, then the error.
received = 0
try:
    for _ in stub.Produce(pb.ProduceRequest(count=100, fail_after=10, fail_code=9), timeout=30):
        received += 1
    out["error"] = {"received": received, "failure": None}
except grpc.RpcError as err:
    out["error"] = {"received": received, "failure": failure(err)}

# A client-streaming call failing mid-stream.
try:
    stub.Consume((pb.Chunk(seq=i, fail_code=5 if i == 500 else 0) for i in range(N)), timeout=30)
    out["consume_error"] = None
except grpc.RpcError as err:
    out["consume_error"] = failure(err)

# The client's deadline expiring mid-stream.
received = 0
started = time.monotonic()
try:
    for _ in stub.Produce(pb.ProduceRequest(count=1000, delay_ms=20), timeout=0.3):
        received += 1
    out["deadline"] = {"received": received, "failure": None}
except grpc.RpcError as err:
    out["deadline"] = {
        "received": received,
        "failure": failure(err),
        "elapsed_ms": int((time.monotonic() - started) * 1000),
    }

# The client cancelling mid-stream: when it did, for the server's report.
call = stub.Produce(pb.ProduceRequest(count=1_000_000, delay_ms=2), timeout=30)
for _, _chunk in zip(range(5), call):
    pass
cancelled_at = int(time.time() * 1_000_000)
call.cancel()
out["cancel"] = {"cancelled_at": cancelled_at}

print(json.dumps(out))
