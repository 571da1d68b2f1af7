//! [`Stub`]: the one runtime core every generated client is a thin shell
//! over, whichever generator made it (`#[courier::service]` or
//! courier-build from a `.proto` file).
//!
//! A generated client is a struct holding a `Stub`, its shared surface
//! (`connect`, `new`, `discover`, `with_timeout`, `with_metadata`,
//! `with_codec`, `with_hash_key`, ...) written once here by
//! [`__client_surface!`](crate::__client_surface), and one short method per
//! RPC that calls [`Stub::unary`], [`Stub::unary_proto`] or
//! [`Stub::one_way`]. So an option added here exists for every generated
//! client at once, and the two generators cannot drift apart.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CallOptions, Channel};
use crate::codec::Codec;
use crate::status::Status;

/// A channel and the options every call through it carries: what a
/// generated client holds.
#[derive(Clone, Debug)]
pub struct Stub {
    channel: Channel,
    options: CallOptions,
}

impl Stub {
    /// Calls through `channel` with `options`.
    pub fn new(channel: Channel, options: CallOptions) -> Stub {
        Stub { channel, options }
    }

    /// The channel calls go through.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The options applied to every call.
    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// A copy with `options` instead.
    #[must_use]
    pub fn with_options(&self, options: CallOptions) -> Stub {
        Stub { channel: self.channel.clone(), options }
    }

    /// A copy with its options changed by `change`.
    #[must_use]
    pub fn map_options(&self, change: impl FnOnce(CallOptions) -> CallOptions) -> Stub {
        self.with_options(change(self.options.clone()))
    }

    /// The codec calls travel in (see [`Channel::codec_for`]).
    pub fn codec(&self) -> Codec {
        self.channel.codec_for(&self.options)
    }

    /// Call `method` with serde arguments, decoding the result. An
    /// `idempotent` method may be retried on another instance when its
    /// connection is lost mid-call.
    pub async fn unary<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        idempotent: bool,
    ) -> Result<Resp, Status>
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned,
    {
        if idempotent {
            self.channel.unary_idempotent(method, request, &self.options).await
        } else {
            self.channel.unary(method, request, &self.options).await
        }
    }

    /// [`Stub::unary`] for a method with an error type of its own: a
    /// service's error that comes back is decoded as `E` into the status
    /// (see [`Status::app_error`]).
    pub async fn unary_with_app_error<Req, Resp, E>(
        &self,
        method: &str,
        request: &Req,
        idempotent: bool,
    ) -> Result<Resp, Status>
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned,
        E: DeserializeOwned + Send + Sync + 'static,
    {
        self.unary(method, request, idempotent)
            .await
            .map_err(|status| crate::__private::decode_app_error::<E>(self.codec(), status))
    }

    /// Send a one-way call (no reply, not even an error).
    pub async fn one_way<Req>(&self, method: &str, request: &Req) -> Result<(), Status>
    where
        Req: Serialize + Sync + ?Sized,
    {
        self.channel.one_way(method, request, &self.options).await
    }

    /// Call a `.proto` method: protobuf messages in and out (or their JSON
    /// form, with the JSON codec).
    #[cfg(feature = "protobuf")]
    pub async fn unary_proto<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        idempotent: bool,
    ) -> Result<Resp, Status>
    where
        Req: crate::codec::protobuf::Message,
        Resp: crate::codec::protobuf::Message,
    {
        let codec = self.codec();
        let body = self
            .channel
            .unary_encoded(method, &self.options, idempotent, &|buf| {
                crate::__private::proto::encode_request(codec, request, buf, method)
            })
            .await?;
        crate::__private::proto::decode_reply(codec, &body, method)
    }
}

/// The surface every generated client shares, written once: the struct
/// over a [`Stub`], `connect`, `new`, `discover`, the options and every
/// `with_*`. Used by generated code; not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __client_surface {
    ($(#[$attr:meta])* $vis:vis struct $client:ident; options = $options:expr;) => {
        $(#[$attr])*
        #[derive(Clone, Debug)]
        $vis struct $client {
            stub: $crate::client::Stub,
        }

        impl $crate::client::FromChannel for $client {
            fn from_channel(channel: $crate::Channel) -> Self {
                Self::new(channel)
            }
        }

        impl $client {
            /// Connect to a server at `addr` (`host:port`).
            pub async fn connect(
                addr: impl ::core::convert::Into<::std::string::String>,
            ) -> ::core::result::Result<Self, $crate::ConnectError> {
                ::core::result::Result::Ok(Self::new($crate::Channel::connect(addr).await?))
            }

            /// A client over an existing channel (native, gRPC or discovered).
            pub fn new(channel: $crate::Channel) -> Self {
                Self { stub: $crate::client::Stub::new(channel, $options) }
            }

            /// A client that finds the instances of `service` in `registry`
            /// and balances calls over them; configure, then `.build().await`.
            pub fn discover(
                registry: &$crate::registry::Registry,
                service: impl ::core::convert::Into<::std::string::String>,
            ) -> $crate::client::DiscoverBuilder<Self> {
                $crate::client::DiscoverBuilder::new(::core::clone::Clone::clone(registry), service.into())
            }

            /// The runtime core calls go through.
            pub fn stub(&self) -> &$crate::client::Stub {
                &self.stub
            }

            /// The channel calls go through.
            pub fn channel(&self) -> &$crate::Channel {
                self.stub.channel()
            }

            /// The options applied to every call.
            pub fn options(&self) -> &$crate::CallOptions {
                self.stub.options()
            }

            /// A copy of this client with `options`.
            #[must_use]
            pub fn with_options(&self, options: $crate::CallOptions) -> Self {
                Self { stub: self.stub.with_options(options) }
            }

            /// A copy of this client whose calls time out after `timeout`
            /// (the server is told and stops work at the deadline).
            #[must_use]
            pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                Self { stub: self.stub.map_options(|options| options.with_timeout(timeout)) }
            }

            /// A copy of this client that sends a header with every call.
            #[must_use]
            pub fn with_metadata(
                &self,
                key: impl ::core::convert::AsRef<str>,
                value: impl ::core::convert::Into<::std::string::String>,
            ) -> Self {
                Self { stub: self.stub.map_options(|options| options.with_metadata(key, value)) }
            }

            /// A copy of this client that encodes calls with `codec`.
            #[must_use]
            pub fn with_codec(&self, codec: $crate::Codec) -> Self {
                Self { stub: self.stub.map_options(|options| options.with_codec(codec)) }
            }

            /// A copy of this client whose calls carry routing key `key`: with
            /// `Balance::ConsistentHash`, equal keys go to the same instance.
            #[must_use]
            pub fn with_hash_key(&self, key: impl ::core::convert::AsRef<[u8]>) -> Self {
                Self { stub: self.stub.map_options(|options| options.with_hash_key(key)) }
            }
        }
    };
}

/// The surface every generated blocking client shares, over the async
/// client `$client`. Used by generated code; not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __blocking_client_surface {
    ($(#[$attr:meta])* $vis:vis struct $blocking:ident over $client:ident;) => {
        $(#[$attr])*
        #[derive(Clone, Debug)]
        $vis struct $blocking {
            client: $client,
            channel: $crate::blocking::Channel,
        }

        impl $blocking {
            /// Connect to a server at `addr` (`host:port`), blocking until connected.
            pub fn connect(
                addr: impl ::core::convert::Into<::std::string::String>,
            ) -> ::core::result::Result<Self, $crate::ConnectError> {
                ::core::result::Result::Ok(Self::new($crate::blocking::Channel::connect(addr)?))
            }

            /// A client over an existing blocking channel.
            pub fn new(channel: $crate::blocking::Channel) -> Self {
                Self { client: $client::new(::core::clone::Clone::clone(channel.as_async())), channel }
            }

            /// The async client calls go through.
            pub fn as_async(&self) -> &$client {
                &self.client
            }

            /// A copy of this client with `options`.
            #[must_use]
            pub fn with_options(&self, options: $crate::CallOptions) -> Self {
                self.with_client(self.client.with_options(options))
            }

            /// A copy of this client whose calls time out after `timeout`.
            #[must_use]
            pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                self.with_client(self.client.with_timeout(timeout))
            }

            /// A copy of this client that sends a header with every call.
            #[must_use]
            pub fn with_metadata(
                &self,
                key: impl ::core::convert::AsRef<str>,
                value: impl ::core::convert::Into<::std::string::String>,
            ) -> Self {
                self.with_client(self.client.with_metadata(key, value))
            }

            /// A copy of this client that encodes calls with `codec`.
            #[must_use]
            pub fn with_codec(&self, codec: $crate::Codec) -> Self {
                self.with_client(self.client.with_codec(codec))
            }

            /// A copy of this client whose calls carry routing key `key`.
            #[must_use]
            pub fn with_hash_key(&self, key: impl ::core::convert::AsRef<[u8]>) -> Self {
                self.with_client(self.client.with_hash_key(key))
            }

            fn with_client(&self, client: $client) -> Self {
                Self { client, channel: ::core::clone::Clone::clone(&self.channel) }
            }

            /// Run a call of the async client to its end, blocking.
            #[allow(dead_code)]
            fn block_on<T: ::core::marker::Send + 'static>(
                &self,
                call: impl ::core::future::Future<Output = ::core::result::Result<T, $crate::Status>>
                    + ::core::marker::Send
                    + 'static,
            ) -> ::core::result::Result<T, $crate::Status> {
                self.channel.call(call)
            }
        }
    };
}
