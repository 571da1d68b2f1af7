#!/usr/bin/env bash
# Everything CI checks, in the order it fails fastest: formatting, lints,
# every test (unit, integration, fault, compile-error, doc, CLI), every
# example, a smoke run of the benchmark harness, and a build of the fuzz
# target. `.ci/run` runs exactly this.
#
# Tests start their own servers (and their own etcd) on free 127.0.0.1
# ports with temporary directories. The real peers they need are installed
# here when missing, so nothing is ever skipped silently. Every package is
# installed with --no-install-recommends, so each one named here is checked
# by a command or a file it must provide, not only by its main command:
#   - etcd and etcdctl (etcd-server, etcd-client) for the etcd tests;
#   - redis-server (redis-server) for the redis:// registry tests;
#   - ZooKeeper's jars (zookeeper, which brings its libraries, such as
#     libslf4j-java's slf4j-jdk14.jar for its log, and a Java runtime,
#     default-jre-headless), run from the jars by the zookeeper:// tests,
#     never as the system service;
#   - protoc (protobuf-compiler) and the well-known types it imports
#     (libprotobuf-dev: google/protobuf/descriptor.proto), which
#     etcd-client's build script needs;
#   - curl, for the HTTP/JSON tests;
#   - ip and its netns and bridge support (iproute2) and iptables with the
#     NFQUEUE and statistic matches (iptables), for the chaos tests that
#     run providers on test hosts in network namespaces;
#   - Go with grpc-go and etcd's 3.4 client (golang-go,
#     golang-google-grpc-dev, golang-etcd-server-dev), built in GOPATH mode
#     by the tests that run real Go clients;
#   - python3 and python3-venv, and Python's grpcio (and its tools, health and
#     reflection packages) in a virtualenv under target/pyenv, for the gRPC
#     interop tests.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { printf '\n==> %s (%ds)\n' "$*" "$((SECONDS - started))"; }

gocode=/usr/share/gocode/src
need_command() { command -v "$2" >/dev/null || missing+=("$1"); } # package command
need_file() { [ -e "$2" ] || missing+=("$1"); }                   # package file
check_requirements() { # fills $missing with the packages to install
  missing=()
  need_command etcd-server etcd
  need_command etcd-client etcdctl
  need_command redis-server redis-server
  need_file zookeeper /usr/share/java/zookeeper.jar
  need_file libslf4j-java /usr/share/java/slf4j-jdk14.jar
  need_command default-jre-headless java
  need_command protobuf-compiler protoc
  need_file libprotobuf-dev /usr/include/google/protobuf/descriptor.proto
  need_file libprotobuf-dev /usr/include/google/protobuf/struct.proto
  need_command curl curl
  need_command iproute2 ip
  need_command iptables iptables
  need_command golang-go go
  need_file golang-google-grpc-dev "$gocode/google.golang.org/grpc/balancer/roundrobin/roundrobin.go"
  need_file golang-etcd-server-dev "$gocode/go.etcd.io/etcd/clientv3/naming/resolver/resolver.go"
  need_command python3 python3
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u | sed '/^$/d')
}
check_requirements
if [ ${#missing[@]} -gt 0 ]; then
  step "installing the real peers the tests need: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Check again: a package that installed but lacks what we rely on (a
  # renamed file, a split package) fails here, not deep in a build.
  check_requirements
  if [ ${#missing[@]} -gt 0 ]; then
    echo "still missing after installing: ${missing[*]}" >&2
    exit 1
  fi
fi

# Pinned, so every run talks to the same peer.
python_packages=(grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1)
pyenv=target/pyenv
if ! "$pyenv/bin/python" -c 'import grpc, grpc_tools, grpc_health, grpc_reflection' 2>/dev/null \
  || [ "$("$pyenv/bin/python" -c 'import grpc; print(grpc.__version__)')" != "1.85.1" ]; then
  step "installing Python's grpcio into $pyenv"
  python3 -m venv "$pyenv"
  "$pyenv/bin/pip" install --quiet --disable-pip-version-check "${python_packages[@]}"
fi
export COURIER_TEST_PYTHON="$PWD/$pyenv/bin/python"

# Apache Dubbo's Python implementation (a beta) and what it pulls in,
# pinned, in a virtualenv of its own: the zookeeper:// tests run a Dubbo
# consumer against courier's providers.
dubbo_packages=(apache-dubbo==3.0.0b1 kazoo==2.11.0 h2==4.4.1 hpack==4.2.0 hyperframe==6.1.0
  uvloop==0.23.0 psutil==7.2.2)
dubbo_pyenv=target/dubbo-pyenv
if ! "$dubbo_pyenv/bin/python" -c 'import dubbo, kazoo' 2>/dev/null \
  || [ "$("$dubbo_pyenv/bin/pip" show apache-dubbo 2>/dev/null | sed -n 's/^Version: //p')" != "3.0.0b1" ]; then
  step "installing Apache Dubbo's Python implementation into $dubbo_pyenv"
  python3 -m venv "$dubbo_pyenv"
  "$dubbo_pyenv/bin/pip" install --quiet --disable-pip-version-check "${dubbo_packages[@]}"
fi
export COURIER_TEST_DUBBO_PYTHON="$PWD/$dubbo_pyenv/bin/python"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Every feature combination builds, without warnings (cargo-hack, pinned,
# installed under target/ when missing): courier's protocol features in
# every combination with the three registry backends (etcd, redis,
# zookeeper: modules of their own that touch nothing else) off or on
# together, then each feature alone (every backend by itself); each feature
# of the other crates. Libraries and binaries only, so the features
# dev-dependencies turn on (tokio's "full") cannot hide one a library lacks.
hack_version=0.6.46
hack=target/tools/bin/cargo-hack
if ! "$hack" hack --version 2>/dev/null | grep -q "$hack_version"; then
  step "installing cargo-hack $hack_version into target/tools"
  cargo install --quiet --locked --root target/tools cargo-hack --version "$hack_version"
fi
step "every feature combination builds (cargo hack clippy)"
PATH="$PWD/target/tools/bin:$PATH" cargo hack clippy --locked -p courier --feature-powerset \
  --group-features etcd,redis,zookeeper -- -D warnings
PATH="$PWD/target/tools/bin:$PATH" cargo hack clippy --locked -p courier --each-feature -- -D warnings
PATH="$PWD/target/tools/bin:$PATH" cargo hack clippy --locked --workspace --exclude courier --each-feature -- -D warnings

step "cargo test (unit, integration, fault, macro error and doc tests)"
cargo test --workspace --locked

step "courier demo (the main job: registry, providers, a consumer; fails if any call fails)"
cargo run --locked -q -p courier-cli -- demo

step "examples"
cargo run --locked -q -p courier-examples --example calculator
cargo run --locked -q -p courier-examples --example echo
cargo run --locked -q -p courier-examples --example helloworld
# Examples as separate processes: a server, and clients against it. The
# Python ones are the README's polyglot section, run as written there.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
serve_example() { # name port: start the example's server and wait for its port
  cargo run --locked -q -p courier-examples --example "$1" -- serve "127.0.0.1:$2" &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return
    sleep 0.1
  done
}
stop_example() {
  kill -INT "$server"
  wait "$server"
  trap - EXIT
}
port=$(free_port)
serve_example calculator "$port"
cargo run --locked -q -p courier-examples --example calculator -- client "127.0.0.1:$port"
"$pyenv/bin/python" examples/polyglot/jsonrpc_client.py 127.0.0.1 "$port"
stop_example
port=$(free_port)
serve_example helloworld "$port"
stubs=$(mktemp -d)
"$pyenv/bin/python" -m grpc_tools.protoc -I examples/proto --python_out="$stubs" --grpc_python_out="$stubs" helloworld.proto
PYTHONPATH="$stubs" "$pyenv/bin/python" examples/polyglot/greeter_client.py "127.0.0.1:$port"
curl -sS --fail-with-body -d '{"name":"curl"}' "http://127.0.0.1:$port/helloworld.Greeter/SayHello"
echo
rm -rf "$stubs"
stop_example

step "benchmark harness smoke run (tiny durations; the real run is scripts/bench.sh)"
cargo run --locked -q -p courier-bench -- run --duration 0.3 --warmup 0.1 --repeats 1 \
  --scenarios ping-pong,pipelined --idle-connections 20 > target/bench-smoke.md
for system in courier-bin courier-json courier-grpc tonic tarpc raw; do
  grep -q "| $system |" target/bench-smoke.md || { echo "bench smoke run: no row for $system"; exit 1; }
done

step "fuzz targets build"
cargo build --quiet --manifest-path fuzz/Cargo.toml

step "all checks passed"
