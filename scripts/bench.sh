#!/usr/bin/env bash
# The side-by-side benchmark: courier (binary and JSON codecs), tonic, tarpc
# and raw TCP, each server and client in its own process with two worker
# threads, interleaved (A B C A B C ...), three repeats of every scenario.
# Prints a Markdown table of medians with ratios to courier native, and
# saves it to target/bench/latest.md. About 7 minutes on 2 cores, plus the
# release build the first time.
#
# Pass-through options, e.g.: ./scripts/bench.sh --scenarios pipelined --repeats 5
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p courier-bench
mkdir -p target/bench
./target/release/courier-bench run --duration 4 --warmup 1 --repeats 3 "$@" | tee target/bench/latest.md
