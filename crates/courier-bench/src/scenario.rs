//! The workloads: how many connections, how many calls in flight on each,
//! and how large the echoed payload is.

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ScenarioName {
    /// One call in flight, 64 B: pure round-trip latency.
    PingPong,
    /// 64 calls in flight on one connection, 64 B: multiplexing and batching.
    Pipelined,
    /// 64 calls in flight on one connection, 4 KiB payloads.
    Pipelined4k,
    /// 1,000 connections with one call in flight each, 64 B.
    Conns1000,
}

#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub(crate) connections: usize,
    pub(crate) in_flight: usize,
    pub(crate) payload: usize,
}

impl ScenarioName {
    pub(crate) const ALL: [ScenarioName; 4] =
        [ScenarioName::PingPong, ScenarioName::Pipelined, ScenarioName::Pipelined4k, ScenarioName::Conns1000];

    pub(crate) fn scenario(self) -> Scenario {
        let (connections, in_flight, payload) = match self {
            ScenarioName::PingPong => (1, 1, 64),
            ScenarioName::Pipelined => (1, 64, 64),
            ScenarioName::Pipelined4k => (1, 64, 4096),
            ScenarioName::Conns1000 => (1000, 1, 64),
        };
        Scenario { connections, in_flight, payload }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            ScenarioName::PingPong => "1 in flight, 64 B",
            ScenarioName::Pipelined => "64 in flight on one connection, 64 B",
            ScenarioName::Pipelined4k => "64 in flight on one connection, 4 KiB",
            ScenarioName::Conns1000 => "1,000 connections, 1 in flight each, 64 B",
        }
    }

    pub(crate) fn arg(self) -> &'static str {
        match self {
            ScenarioName::PingPong => "ping-pong",
            ScenarioName::Pipelined => "pipelined",
            ScenarioName::Pipelined4k => "pipelined4k",
            ScenarioName::Conns1000 => "conns1000",
        }
    }
}
