//! [`Instance`]: one running copy of a service, as registries know it.
//!
//! Registries refuse an instance over [`MAX_INSTANCE_BYTES`] (its JSON
//! form, metadata included): every consumer of a service receives every
//! instance of it, so one provider's oversized metadata would otherwise
//! make the service's answers too large to deliver.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether an instance takes new calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Taking calls.
    #[default]
    Serving,
    /// Finishing what it has; consumers should send nothing new.
    Draining,
}

/// One running copy of a service.
///
/// courier servers register theirs (`ServerBuilder::register_with`);
/// anything else that serves can be registered by hand, and consumers call
/// each instance in a protocol it offers:
///
/// ```
/// use std::time::Duration;
///
/// use courier::registry::Instance;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut instance = Instance::new("interop.Interop", "10.0.0.7:50051")
///     .with_version("1.2.0")
///     .with_zone("eu-west-1a")
///     .with_weight(2);
/// // A grpcio server: consumers call it over gRPC.
/// instance.protocols = vec!["grpc".to_owned()];
/// instance.validate()?;
///
/// let registry = courier::registry::connect("mem://").await?;
/// let lease = registry.register(instance.clone(), Duration::from_secs(10)).await?;
/// assert_eq!(registry.list("interop.Interop").await?.instances, vec![instance]);
/// registry.deregister(&lease).await?;
/// assert!(registry.list("interop.Interop").await?.instances.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The service name (`Calculator`).
    pub service: String,
    /// The service version (semver, `1.2.0`).
    pub version: String,
    /// Unique among the service's instances; defaults to the address.
    pub id: String,
    /// Where to call it, `host:port`.
    pub addr: String,
    /// Protocols offered on that address: `courier` (native), `grpc`,
    /// `jsonrpc`, `http`. An empty list (entries written by other tools)
    /// is taken to mean `courier`, unless the consumer prefers gRPC for
    /// those (`DiscoverBuilder::prefer_grpc_for_unlabelled`).
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Relative share of calls for weighted balancing (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Placement zone, for zone-preferring consumers.
    #[serde(default)]
    pub zone: Option<String>,
    /// Free-form key/value pairs.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Serving or draining.
    #[serde(default)]
    pub state: InstanceState,
}

fn default_weight() -> u32 {
    1
}

/// The largest instance a registry accepts, measured as its JSON encoding
/// (the largest of the forms it travels and is stored in), metadata
/// included. A registry answer then holds at least dozens of instances
/// within a frame, and a page of them stays small.
pub const MAX_INSTANCE_BYTES: usize = 64 * 1024;

/// Counts the bytes written to it; measures an encoding without keeping it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of `value`'s JSON encoding, without building it.
pub(crate) fn json_len(value: &impl Serialize) -> usize {
    let mut counter = Counter(0);
    // Serializing these types cannot fail (string keys only); a failure
    // would only mean a short count, which the callers' limits tolerate.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

impl Instance {
    /// An instance of `service` at `addr`, version `0.0.0`, serving, weight 1.
    pub fn new(service: impl Into<String>, addr: impl Into<String>) -> Instance {
        let addr = addr.into();
        Instance {
            service: service.into(),
            version: "0.0.0".to_owned(),
            id: addr.clone(),
            addr,
            protocols: vec!["courier".to_owned()],
            weight: 1,
            zone: None,
            metadata: BTreeMap::new(),
            state: InstanceState::Serving,
        }
    }

    /// Set the version.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Instance {
        self.version = version.into();
        self
    }

    /// Set the id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Instance {
        self.id = id.into();
        self
    }

    /// Set the weight.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Instance {
        self.weight = weight;
        self
    }

    /// Set the zone.
    #[must_use]
    pub fn with_zone(mut self, zone: impl Into<String>) -> Instance {
        self.zone = Some(zone.into());
        self
    }

    /// Add a metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Instance {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Check what a registry must not accept.
    pub fn validate(&self) -> Result<(), String> {
        if self.service.is_empty() || self.service.contains('/') {
            return Err(format!("invalid service name `{}`", self.service));
        }
        if self.id.is_empty() {
            return Err("an instance needs an id".to_owned());
        }
        if self
            .addr
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!("invalid address `{}`: expected host:port", self.addr));
        }
        if semver::Version::parse(&self.version).is_err() {
            return Err(format!("invalid version `{}`: expected semver such as 1.2.0", self.version));
        }
        let size = self.encoded_len();
        if size > MAX_INSTANCE_BYTES {
            let metadata = json_len(&self.metadata);
            return Err(format!(
                "instance `{}` of `{}` is {size} bytes (as JSON, {metadata} of them metadata), over the \
                 limit of {MAX_INSTANCE_BYTES}: keep large data out of the registry",
                self.id, self.service
            ));
        }
        Ok(())
    }

    /// The length of this instance's JSON encoding, what
    /// [`MAX_INSTANCE_BYTES`] limits.
    pub fn encoded_len(&self) -> usize {
        json_len(self)
    }

    /// Whether this instance's version satisfies `requirement` (`^1.2`).
    pub fn matches(&self, requirement: &semver::VersionReq) -> bool {
        semver::Version::parse(&self.version).is_ok_and(|version| requirement.matches(&version))
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{} at {} (id {})", self.service, self.version, self.addr, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_what_cannot_be_routed() {
        assert!(Instance::new("Calculator", "127.0.0.1:9000").with_version("1.2.3").validate().is_ok());
        assert!(Instance::new("Calculator", "nowhere").validate().is_err());
        assert!(Instance::new("Calculator", "host:99999").validate().is_err());
        assert!(Instance::new("", "h:1").validate().is_err());
        assert!(Instance::new("a/b", "h:1").validate().is_err());
        assert!(Instance::new("Calculator", "h:1").with_version("one").validate().is_err());
    }

    #[test]
    fn oversized_instances_are_refused_with_their_size() {
        let at_limit = |extra: usize| {
            let base = Instance::new("Calculator", "127.0.0.1:9000").with_metadata("blob", "");
            let room = MAX_INSTANCE_BYTES - base.encoded_len();
            base.with_metadata("blob", "x".repeat(room + extra))
        };
        assert_eq!(at_limit(0).encoded_len(), MAX_INSTANCE_BYTES);
        assert!(at_limit(0).validate().is_ok(), "exactly at the limit is fine");
        let err = at_limit(1).validate().expect_err("one byte over");
        assert!(err.contains(&format!("{} bytes", MAX_INSTANCE_BYTES + 1)), "{err}");
        assert!(err.contains("metadata") && err.contains("limit of 65536"), "{err}");
        // Escaping counts: control characters take six bytes each in JSON.
        let escaped = Instance::new("Calculator", "127.0.0.1:9000")
            .with_metadata("blob", "\u{1}".repeat(MAX_INSTANCE_BYTES / 6 + 1));
        assert!(escaped.validate().is_err());
    }

    #[test]
    fn version_requirements_match_semver() {
        let instance = Instance::new("Calculator", "h:1").with_version("1.4.0");
        assert!(instance.matches(&semver::VersionReq::parse("^1.2").expect("req")));
        assert!(!instance.matches(&semver::VersionReq::parse("^2").expect("req")));
    }

    #[test]
    fn json_defaults_fill_missing_fields() {
        let instance: Instance =
            serde_json::from_str(r#"{"service":"S","version":"1.0.0","id":"a","addr":"h:1"}"#)
                .expect("parse");
        assert_eq!((instance.weight, instance.state), (1, InstanceState::Serving));
    }
}
