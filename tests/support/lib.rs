//! Shared pieces for courier's integration tests: test services that report
//! what happened to their handlers, servers in-process or as child
//! processes, and small helpers.
//!
//! # Layout
//! - `services`: the test services (calculator, probe, interop, whoami).
//! - `servers`: in-process servers, providers, a partitioning proxy, a bystander.
//! - `processes`: the test server and etcd as child processes.
//! - `redis`: a real Redis server as a child process.
//! - `zookeeper`: a real ZooKeeper server, and a 3-node ensemble, as child
//!   processes.
//! - `load`: a consumer under load, and the smallest view it had.
//! - `netns`: test hosts in network namespaces on a bridge; link faults.
//! - `python`, `go`: peers written in Python (grpcio) and Go (grpc-go).
//! - `contract`: the registry contract every backend must pass.
//! - `registry_flood`: a client that floods a registry with watches.
//! - `wait`: waiting for conditions, free ports, memory readings.
//! - `raw`: JSON-RPC and HTTP/1.1 clients driven by hand.

pub mod contract;
pub mod go;
pub mod load;
pub mod netns;
pub mod processes;
pub mod python;
pub mod raw;
pub mod redis;
pub mod registry_flood;
pub mod servers;
pub mod services;
pub mod wait;
pub mod zookeeper;

pub use self::redis::RedisServer;
pub use contract::*;
pub use load::{Load, routed, watch_smallest_view};
pub use netns::{Host, Impairment, Lab};
pub use processes::*;
pub use raw::*;
pub use servers::*;
pub use services::*;
pub use wait::*;
pub use zookeeper::{ZooKeeper, ZooKeeperEnsemble};
