//! Which protocol a client calls an address with, and the endpoint that
//! speaks it ([`Transport`]).
//!
//! A discovered instance names the protocols it offers (`courier`, `grpc`,
//! `jsonrpc`, `http`); entries written by other tools (grpc-go's etcd
//! registrations, `etcdctl put`) name none. [`Preference::choose`] picks
//! one this client speaks, or none.

use super::call::{Call, Outcome};
use super::endpoint::Endpoint;
use super::error::ConnectError;
use super::gorpc::{GoRpcEndpoint, GoWire};
#[cfg(feature = "grpc")]
use super::grpc::GrpcEndpoint;
use super::native::NativeEndpoint;
use super::settings::ChannelConfig;
use crate::codec::Codec;
use crate::resilience::retry::AttemptError;

/// The name registrations give courier's native protocol (see
/// `server::registration`).
const NATIVE_NAME: &str = "courier";
/// The name registrations give gRPC.
#[cfg(feature = "grpc")]
const GRPC_NAME: &str = "grpc";

/// A protocol this client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    /// courier's native protocol.
    Native,
    /// gRPC over HTTP/2.
    #[cfg(feature = "grpc")]
    Grpc,
    /// Go's `net/rpc`, to servers that are not courier (never chosen for
    /// a discovered instance).
    Go(GoWire),
}

/// How a consumer picks the protocol of each instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Preference {
    /// Call instances that offer both protocols over gRPC.
    #[cfg(feature = "grpc")]
    pub(crate) grpc: bool,
    /// Call instances that name no protocol over gRPC.
    #[cfg(feature = "grpc")]
    pub(crate) unlabelled_grpc: bool,
}

impl Preference {
    /// The protocol to call an instance offering `offered` with: the
    /// preferred one if it offers it, else the other one this client
    /// speaks; `None` if it offers neither (JSON-RPC or HTTP only).
    pub(crate) fn choose(&self, offered: &[String]) -> Option<Wire> {
        #[cfg(feature = "grpc")]
        {
            if offered.is_empty() {
                return Some(if self.unlabelled_grpc { Wire::Grpc } else { Wire::Native });
            }
            let native = offered.iter().any(|p| p == NATIVE_NAME);
            let grpc = offered.iter().any(|p| p == GRPC_NAME);
            match (native, grpc) {
                (true, true) if self.grpc => Some(Wire::Grpc),
                (true, _) => Some(Wire::Native),
                (false, true) => Some(Wire::Grpc),
                (false, false) => None,
            }
        }
        #[cfg(not(feature = "grpc"))]
        {
            (offered.is_empty() || offered.iter().any(|p| p == NATIVE_NAME)).then_some(Wire::Native)
        }
    }
}

/// The connection settings per protocol. gRPC's differ by default: its
/// keepalive pings are rarer, as grpc-go servers demand.
#[derive(Clone, Debug, Default)]
pub(crate) struct Settings {
    pub(crate) native: ChannelConfig,
    #[cfg(feature = "grpc")]
    pub(crate) grpc: ChannelConfig,
}

impl Settings {
    /// An endpoint speaking `wire` to `addr`, connecting on its first call.
    pub(crate) fn open(&self, wire: Wire, addr: String) -> Transport {
        match wire {
            Wire::Native => Transport::Native(NativeEndpoint::new(addr, self.native.clone())),
            #[cfg(feature = "grpc")]
            Wire::Grpc => Transport::Grpc(GrpcEndpoint::new(addr, self.grpc.clone())),
            Wire::Go(wire) => Transport::Go(GoRpcEndpoint::new(addr, self.native.clone(), wire)),
        }
    }
}

/// An endpoint of either protocol: an enum rather than a trait object, so
/// a call's future is not boxed.
#[derive(Clone)]
pub(crate) enum Transport {
    Native(NativeEndpoint),
    #[cfg(feature = "grpc")]
    Grpc(GrpcEndpoint),
    Go(GoRpcEndpoint),
}

impl Transport {
    /// The protocol it speaks.
    pub(crate) fn wire(&self) -> Wire {
        match self {
            Transport::Native(_) => Wire::Native,
            #[cfg(feature = "grpc")]
            Transport::Grpc(_) => Wire::Grpc,
            Transport::Go(go) => Wire::Go(go.wire()),
        }
    }
}

impl Endpoint for Transport {
    fn addr(&self) -> &str {
        match self {
            Transport::Native(native) => native.addr(),
            #[cfg(feature = "grpc")]
            Transport::Grpc(grpc) => grpc.addr(),
            Transport::Go(go) => go.addr(),
        }
    }

    fn wire_codec(&self, requested: Codec) -> Codec {
        match self {
            Transport::Native(native) => native.wire_codec(requested),
            #[cfg(feature = "grpc")]
            Transport::Grpc(grpc) => grpc.wire_codec(requested),
            Transport::Go(go) => go.wire_codec(requested),
        }
    }

    async fn call(&self, call: &Call<'_>) -> Result<Outcome, AttemptError> {
        match self {
            Transport::Native(native) => native.call(call).await,
            #[cfg(feature = "grpc")]
            Transport::Grpc(grpc) => grpc.call(call).await,
            Transport::Go(go) => go.call(call).await,
        }
    }

    async fn connect_now(&self) -> Result<(), ConnectError> {
        match self {
            Transport::Native(native) => native.connect_now().await,
            #[cfg(feature = "grpc")]
            Transport::Grpc(grpc) => grpc.connect_now().await,
            Transport::Go(go) => go.connect_now().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(names: &[&str]) -> Vec<String> {
        names.iter().map(|&name| name.to_owned()).collect()
    }

    #[test]
    fn by_default_native_wherever_offered_and_for_unlabelled_entries() {
        let choose = |names: &[&str]| Preference::default().choose(&offered(names));
        assert_eq!(choose(&["courier", "grpc", "jsonrpc", "http"]), Some(Wire::Native));
        assert_eq!(choose(&["courier"]), Some(Wire::Native));
        assert_eq!(choose(&[]), Some(Wire::Native), "what other tools write is taken as courier's");
        assert_eq!(choose(&["jsonrpc", "http"]), None, "nothing this client speaks");
        #[cfg(feature = "grpc")]
        assert_eq!(choose(&["grpc"]), Some(Wire::Grpc), "gRPC when that is all there is");
        #[cfg(not(feature = "grpc"))]
        assert_eq!(choose(&["grpc"]), None, "gRPC is not built");
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn preferences_choose_grpc_where_there_is_a_choice() {
        let grpc = Preference { grpc: true, unlabelled_grpc: true };
        assert_eq!(grpc.choose(&offered(&["courier", "grpc"])), Some(Wire::Grpc));
        assert_eq!(
            grpc.choose(&offered(&["courier"])),
            Some(Wire::Native),
            "native when that is all there is"
        );
        assert_eq!(grpc.choose(&[]), Some(Wire::Grpc));
        let unlabelled = Preference { grpc: false, unlabelled_grpc: true };
        assert_eq!(unlabelled.choose(&[]), Some(Wire::Grpc));
        assert_eq!(unlabelled.choose(&offered(&["courier", "grpc"])), Some(Wire::Native));
    }
}
