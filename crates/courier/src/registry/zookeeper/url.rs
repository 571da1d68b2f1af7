//! Sans-IO: provider nodes as Apache Dubbo names them (a URL-encoded
//! provider URL), both ways, and the `zookeeper://` registry URL.
//!
//! A node name is `URLEncoder.encode(url, "UTF-8")` of a URL such as
//! `tri://10.0.0.7:50051/Greeter?application=..&interface=Greeter&..`, the
//! way Dubbo's `ZookeeperRegistry.toUrlPath` writes it; reading undoes that
//! (Java's `URLDecoder`, and so also what Dubbo-python's `quote` writes).
//! Inside the URL, parameter values are written raw by Dubbo (Java) and
//! form-encoded by Dubbo-python; courier percent-encodes only the
//! characters that would break the URL's structure (`%&=#?+`, spaces,
//! control and non-ASCII characters), so Dubbo's tools show its values as
//! they are, and decodes `%XX` (leniently) when reading.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::discovery::{Instance, InstanceState};

/// courier's instance id; a node with it was written by courier.
const ID: &str = "courier.id";
/// The protocols an instance offers, comma-separated.
const PROTOCOLS: &str = "courier.protocols";
/// The instance's zone.
const ZONE: &str = "courier.zone";
/// `serving` or `draining`.
const STATE: &str = "courier.state";
/// Prefix of the instance's metadata entries, `courier.meta.<key>=<value>`.
const META: &str = "courier.meta.";

/// Dubbo's default weight is 100, courier's is 1: courier writes its weight
/// times this, so Dubbo consumers balance a mixed set as courier's do.
pub(crate) const DUBBO_WEIGHT_SCALE: u32 = 100;

/// ZooKeeper's default client port, for hosts given without one.
const DEFAULT_PORT: u16 = 2181;

/// The root Dubbo registers under (its registry URL's default `group`).
pub(crate) const DUBBO_ROOT: &str = "/dubbo";

/// Dubbo's category of provider nodes.
pub(crate) const PROVIDERS: &str = "providers";

/// The URL scheme for an instance: `tri` (Dubbo 3's Triple, which is
/// gRPC-compatible) when it speaks gRPC, so Dubbo consumers can call it;
/// `courier` otherwise (a scheme only courier consumers use).
pub(crate) fn scheme_for(instance: &Instance) -> &'static str {
    if instance.protocols.iter().any(|p| p == "grpc") { "tri" } else { "courier" }
}

/// `s` encoded as Java's `URLEncoder.encode(s, "UTF-8")` encodes it:
/// ASCII letters, digits and `.-*_` as they are, a space as `+`, every
/// other byte as `%XX`.
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for byte in s.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            other => {
                let _ = write!(out, "%{other:02X}");
            }
        }
    }
    out
}

/// `s` decoded as Java's `URLDecoder.decode(s, "UTF-8")` decodes it (`+`
/// is a space); `None` for a malformed `%` escape or bytes that are not
/// UTF-8, which Java rejects too.
pub(crate) fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let high = hex(*bytes.get(i + 1)?)?;
                let low = hex(*bytes.get(i + 2)?)?;
                out.push(high << 4 | low);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// A parameter value (or the path) inside the URL: only what would break
/// the URL's structure is escaped (see the module docs).
fn encode_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        let escape =
            matches!(ch, '%' | '&' | '=' | '#' | '?' | '+' | ' ') || ch.is_control() || !ch.is_ascii();
        if escape {
            let mut buf = [0; 4];
            for byte in ch.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{byte:02X}");
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// A parameter value as written: `%XX` decoded where it is well formed
/// (and the result UTF-8), kept as it is otherwise; `+` stays `+`, as
/// Dubbo's Java `URL.valueOf` keeps it.
fn decode_value(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?))
            .flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// A provider URL, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProviderUrl {
    /// `tri`, `dubbo`, `courier`, ...
    pub(crate) scheme: String,
    /// `host:port` (an IPv6 host in brackets).
    pub(crate) addr: String,
    /// The path (Dubbo: the interface), without its leading `/`.
    pub(crate) path: String,
    /// The parameters, decoded; a repeated key keeps its last value, as in
    /// Dubbo's `URL.valueOf`.
    pub(crate) params: BTreeMap<String, String>,
}

impl ProviderUrl {
    /// Parse `scheme://[user[:password]@]host:port[/path][?key=value&...]`.
    pub(crate) fn parse(url: &str) -> Result<ProviderUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or("no `scheme://`")?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(format!("invalid scheme `{scheme}`"));
        }
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, hostport)| hostport);
        let addr = parse_hostport(hostport, None)?;
        let mut params = BTreeMap::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key.is_empty() {
                return Err(format!("a parameter without a name: `{pair}`"));
            }
            params.insert(decode_value(key), decode_value(value));
        }
        Ok(ProviderUrl { scheme: scheme.to_ascii_lowercase(), addr, path: decode_value(path), params })
    }

    /// The URL as a string, parameters sorted (as Dubbo's `toFullString`).
    pub(crate) fn to_url_string(&self) -> String {
        let mut url = format!("{}://{}/{}", self.scheme, self.addr, encode_value(&self.path));
        for (i, (key, value)) in self.params.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&encode_value(key));
            url.push('=');
            url.push_str(&encode_value(value));
        }
        url
    }
}

/// `host:port` checked, an IPv6 host in brackets; `default_port` when the
/// port may be left out.
fn parse_hostport(hostport: &str, default_port: Option<u16>) -> Result<String, String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("unclosed `[` in `{hostport}`"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address `{host}`"));
        }
        (format!("[{host}]"), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (hostport.to_owned(), None),
        }
    };
    let valid_host = !host.is_empty()
        && (host.starts_with('[')
            || host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    if !valid_host {
        return Err(format!("invalid host in `{hostport}`"));
    }
    let port = match (port, default_port) {
        (Some(port), _) => port.parse::<u16>().map_err(|_| format!("invalid port in `{hostport}`"))?,
        (None, Some(default)) => default,
        (None, None) => return Err(format!("no port in `{hostport}`")),
    };
    if port == 0 {
        return Err(format!("port 0 in `{hostport}`"));
    }
    Ok(format!("{host}:{port}"))
}

/// What courier writes for `instance`: the node name (the encoded URL)
/// under `/dubbo/<service>/providers`. `timestamp_ms` is the
/// registration time, `pid` this process (both as Dubbo writes them).
pub(crate) fn node_name(instance: &Instance, timestamp_ms: u64, pid: u32) -> String {
    encode_component(&provider_url(instance, timestamp_ms, pid).to_url_string())
}

/// The provider URL courier writes for `instance` (see [`node_name`]).
pub(crate) fn provider_url(instance: &Instance, timestamp_ms: u64, pid: u32) -> ProviderUrl {
    let mut params = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        params.insert(key.to_owned(), value);
    };
    // What Dubbo 3 writes for a provider, so its consumers and tools
    // (dubbo-admin, `ls` in its QoS console) take courier's for their own.
    put("anyhost", "false".to_owned());
    put("application", instance.metadata.get("application").cloned().unwrap_or_else(|| "courier".to_owned()));
    put("deprecated", "false".to_owned());
    put("dubbo", "2.0.2".to_owned());
    put("dynamic", "true".to_owned());
    put("generic", "false".to_owned());
    put("interface", instance.service.clone());
    if let Some(methods) = instance.metadata.get("methods") {
        put("methods", methods.clone());
    }
    put("pid", pid.to_string());
    put("side", "provider".to_owned());
    put("timestamp", timestamp_ms.to_string());
    put("version", instance.version.clone());
    put("weight", instance.weight.saturating_mul(DUBBO_WEIGHT_SCALE).to_string());
    // courier's own fields, prefixed so they never clash with Dubbo's.
    put(ID, instance.id.clone());
    put(PROTOCOLS, instance.protocols.join(","));
    put(
        STATE,
        match instance.state {
            InstanceState::Serving => "serving",
            InstanceState::Draining => "draining",
        }
        .to_owned(),
    );
    if let Some(zone) = &instance.zone {
        put(ZONE, zone.clone());
    }
    for (key, value) in &instance.metadata {
        put(&format!("{META}{key}"), value.clone());
    }
    ProviderUrl {
        scheme: scheme_for(instance).to_owned(),
        addr: instance.addr.clone(),
        path: instance.service.clone(),
        params,
    }
}

/// A provider read from a node: the instance, and when it registered
/// (the URL's `timestamp`; 0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Provider {
    pub(crate) instance: Instance,
    pub(crate) registered_unix_ms: u64,
}

/// The provider node `node` under `/dubbo/<service>/providers` names.
/// `Ok(None)` for a provider Dubbo itself would not call either
/// (`enabled=false`, or a category other than `providers`); `Err` for a
/// name that is no provider URL (garbage: skip it, with a warning).
pub(crate) fn decode_node(service: &str, node: &str) -> Result<Option<Provider>, String> {
    let url = decode_component(node).ok_or("not URL-encoded (a bad `%` escape, or not UTF-8)")?;
    let url = ProviderUrl::parse(&url)?;
    if url.params.get("enabled").is_some_and(|enabled| enabled == "false")
        || url.params.get("category").is_some_and(|category| category != PROVIDERS)
    {
        return Ok(None);
    }
    let registered_unix_ms = url.params.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
    let instance = match url.params.get(ID).filter(|id| !id.is_empty()) {
        Some(id) => courier_instance(service, id.clone(), url),
        None => dubbo_instance(service, url),
    };
    Ok(Some(Provider { instance, registered_unix_ms }))
}

/// A node courier wrote: its own fields are authoritative.
fn courier_instance(service: &str, id: String, url: ProviderUrl) -> Instance {
    let mut params = url.params;
    let version = params.remove("version").unwrap_or_default();
    let version = if semver::Version::parse(&version).is_ok() { version } else { lenient_version(&version) };
    let weight =
        params.get("weight").and_then(|w| w.parse::<u32>().ok()).map_or(1, |w| w / DUBBO_WEIGHT_SCALE);
    let protocols = match params.remove(PROTOCOLS) {
        Some(list) => list.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect(),
        None => protocols_of_scheme(&url.scheme),
    };
    let state = match params.get(STATE).map(String::as_str) {
        Some("draining") => InstanceState::Draining,
        _ => InstanceState::Serving,
    };
    let metadata = params
        .iter()
        .filter_map(|(key, value)| key.strip_prefix(META).map(|key| (key.to_owned(), value.clone())))
        .collect();
    Instance {
        service: service.to_owned(),
        version,
        id,
        addr: url.addr,
        protocols,
        weight,
        zone: params.remove(ZONE),
        metadata,
        state,
    }
}

/// A node someone else wrote (Dubbo, Dubbo-python, a tool): the address is
/// its id, protocols come from the scheme, Dubbo's weight is scaled to
/// courier's, and its parameters become metadata.
fn dubbo_instance(service: &str, url: ProviderUrl) -> Instance {
    let mut params = url.params;
    let version = lenient_version(&params.remove("version").unwrap_or_default());
    let weight = params.remove("weight").and_then(|w| w.parse::<u32>().ok()).unwrap_or(DUBBO_WEIGHT_SCALE);
    Instance {
        service: service.to_owned(),
        version,
        id: url.addr.clone(),
        addr: url.addr,
        protocols: protocols_of_scheme(&url.scheme),
        // Rounded up: any weight Dubbo would send calls to gets some here.
        weight: weight.div_ceil(DUBBO_WEIGHT_SCALE),
        zone: None,
        metadata: params,
        state: InstanceState::Serving,
    }
}

/// The protocols a URL scheme means: Triple (`tri`) and `grpc` are gRPC;
/// `courier` is courier's native protocol; any other (`dubbo`, Dubbo's own
/// binary protocol, which courier does not speak; `rest`) is listed by its
/// name, so consumers skip the instance.
fn protocols_of_scheme(scheme: &str) -> Vec<String> {
    match scheme {
        "tri" | "grpc" => vec!["grpc".to_owned()],
        other => vec![other.to_owned()],
    }
}

/// A version as semver: `1.2.3` as it is, `1.2` as `1.2.0`, `1` as
/// `1.0.0`; anything else (Dubbo's versions are free-form, often empty)
/// is `0.0.0`.
fn lenient_version(version: &str) -> String {
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = |part: &&str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let candidate = match parts.len() {
        1 | 2 if parts.iter().all(numeric) => {
            let mut parts = parts.clone();
            parts.resize(3, "0");
            parts.join(".")
        }
        _ => version.to_owned(),
    };
    match semver::Version::parse(&candidate) {
        Ok(parsed) => parsed.to_string(),
        Err(_) => "0.0.0".to_owned(),
    }
}

/// Where a `zookeeper://` URL points: the ensemble and the root path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port,host:port`, for the client's connect string.
    pub(crate) hosts: String,
    /// The chroot (`""` for none) followed by `/dubbo`.
    pub(crate) root: String,
}

impl Target {
    /// Parse what follows `zookeeper://`: `host[:port][,host[:port]...]`,
    /// an optional chroot path (`/chroot`), and Dubbo's `?backup=host:port,..`
    /// for more hosts.
    pub(crate) fn parse(rest: &str) -> Result<Target, String> {
        const EXPECTED: &str = "expected zookeeper://host:port[,host:port...][/chroot]";
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, chroot) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        let mut all = Vec::new();
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            all.push(parse_hostport(host, Some(DEFAULT_PORT)).map_err(|why| format!("{why}: {EXPECTED}"))?);
        }
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("backup", backups)) => {
                    for host in backups.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                        all.push(parse_hostport(host, Some(DEFAULT_PORT))?);
                    }
                }
                _ => {
                    return Err(format!("unknown parameter `{pair}` (only `backup=host:port,...` is known)"));
                }
            }
        }
        if all.is_empty() {
            return Err(EXPECTED.to_owned());
        }
        let chroot = chroot.trim_end_matches('/');
        if chroot.split('/').skip(1).any(|segment| segment.is_empty() || segment == "." || segment == "..") {
            return Err(format!("invalid chroot `{chroot}`: {EXPECTED}"));
        }
        Ok(Target { hosts: all.join(","), root: format!("{chroot}{DUBBO_ROOT}") })
    }

    /// `/dubbo/<service>`: the service's directory (its name encoded as
    /// Dubbo's `toServicePath` encodes it).
    pub(crate) fn service_dir(&self, service: &str) -> String {
        format!("{}/{}", self.root, encode_component(service))
    }

    /// `/dubbo/<service>/providers`.
    pub(crate) fn providers(&self, service: &str) -> String {
        format!("{}/{PROVIDERS}", self.service_dir(service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_instance() -> Instance {
        let mut instance = Instance::new("interop.Interop", "10.0.0.7:50051")
            .with_version("1.2.3")
            .with_id("node-7")
            .with_weight(3)
            .with_zone("eu-west-1a")
            .with_metadata("team", "blue & green")
            .with_metadata("query", "a=b?c#d%e+f")
            .with_metadata("unicode", "ünï €");
        instance.protocols = ["courier", "grpc", "jsonrpc", "http"].map(str::to_owned).to_vec();
        instance.state = InstanceState::Draining;
        instance
    }

    fn roundtrip(instance: &Instance) -> Provider {
        let name = node_name(instance, 1_700_000_000_123, 42);
        assert!(!name.contains('/'), "a node name has no slash: {name}");
        decode_node(&instance.service, &name).expect("decodes").expect("a provider")
    }

    #[test]
    fn what_courier_writes_reads_back_whole() {
        let full = full_instance();
        assert_eq!(
            roundtrip(&full),
            Provider { instance: full.clone(), registered_unix_ms: 1_700_000_000_123 }
        );
        let mut protocol_less = Instance::new("Calculator", "127.0.0.1:7000");
        protocol_less.protocols = Vec::new();
        assert_eq!(roundtrip(&protocol_less).instance, protocol_less);
        let native = Instance::new("Calculator", "[::1]:7000").with_weight(0);
        assert_eq!(roundtrip(&native).instance, native);
        let heavy = Instance::new("Calculator", "127.0.0.1:7000").with_weight(42_949_672);
        assert_eq!(roundtrip(&heavy).instance.weight, 42_949_672);
    }

    #[test]
    fn courier_writes_the_url_dubbo_3_writes() {
        let url = provider_url(&full_instance(), 1_700_000_000_123, 42).to_url_string();
        assert!(
            url.starts_with("tri://10.0.0.7:50051/interop.Interop?anyhost=false&application=courier&"),
            "{url}"
        );
        for part in [
            "&interface=interop.Interop&",
            "&side=provider&",
            "&timestamp=1700000000123&",
            "&version=1.2.3&",
            "&weight=300",
            "&courier.id=node-7&",
            "&courier.protocols=courier,grpc,jsonrpc,http&",
            "&courier.state=draining&",
            "&courier.zone=eu-west-1a",
            "&courier.meta.team=blue%20%26%20green&",
            "&courier.meta.query=a%3Db%3Fc%23d%25e%2Bf&",
            "&dubbo=2.0.2&",
        ] {
            assert!(url.contains(part), "{part} in {url}");
        }
        // Without gRPC, the scheme is courier's own.
        let native = provider_url(&Instance::new("Calculator", "127.0.0.1:7000"), 1, 1).to_url_string();
        assert!(native.starts_with("courier://127.0.0.1:7000/Calculator?"), "{native}");
        // The node name is the URL encoded as Java's URLEncoder does.
        let name = node_name(&Instance::new("Calculator", "127.0.0.1:7000"), 1, 1);
        assert!(
            name.starts_with("courier%3A%2F%2F127.0.0.1%3A7000%2FCalculator%3Fanyhost%3Dfalse%26"),
            "{name}"
        );
    }

    #[test]
    fn components_encode_as_java_does() {
        assert_eq!(encode_component("a b+c/d:e?f=g&h*i_j.k-l~m"), "a+b%2Bc%2Fd%3Ae%3Ff%3Dg%26h*i_j.k-l%7Em");
        assert_eq!(encode_component("ü"), "%C3%BC");
        assert_eq!(decode_component("a+b%2Bc%2fd"), Some("a b+c/d".to_owned()));
        assert_eq!(decode_component("%C3%BC"), Some("ü".to_owned()));
        for bad in ["%", "%4", "%zz", "%C3", "abc%"] {
            assert_eq!(decode_component(bad), None, "{bad}");
        }
    }

    /// A node as Dubbo 3.2 (Java) writes it for a Triple provider.
    const DUBBO3_TRI: &str = "tri%3A%2F%2F192.168.1.5%3A50052%2Forg.apache.dubbo.samples.api.GreetingsService%3F\
        anyhost%3Dtrue%26application%3Ddubbo-samples-triple%26background%3Dfalse%26deprecated%3Dfalse%26\
        dubbo%3D2.0.2%26dynamic%3Dtrue%26generic%3Dfalse%26interface%3Dorg.apache.dubbo.samples.api.\
        GreetingsService%26methods%3DsayHi%2Cgreet%26pid%3D4242%26prefer.serialization%3Dfastjson2%2C\
        hessian2%26release%3D3.2.10%26service-name-mapping%3Dtrue%26side%3Dprovider%26timestamp%3D\
        1700000000000%26version%3D1.0%26weight%3D150";

    #[test]
    fn dubbo_written_providers_are_read() {
        let service = "org.apache.dubbo.samples.api.GreetingsService";
        let provider = decode_node(service, DUBBO3_TRI).expect("decodes").expect("a provider");
        let instance = provider.instance;
        assert_eq!(provider.registered_unix_ms, 1_700_000_000_000);
        assert_eq!(
            (instance.id.as_str(), instance.addr.as_str()),
            ("192.168.1.5:50052", "192.168.1.5:50052")
        );
        assert_eq!(instance.protocols, ["grpc"]);
        assert_eq!(instance.version, "1.0.0", "Dubbo's `1.0` as semver");
        assert_eq!(instance.weight, 2, "Dubbo's 150 rounded up to courier's scale");
        assert_eq!(instance.metadata.get("methods").map(String::as_str), Some("sayHi,greet"));
        assert_eq!(instance.metadata.get("application").map(String::as_str), Some("dubbo-samples-triple"));
        assert_eq!(instance.service, service);

        // Dubbo's own binary protocol: listed under its name, so consumers skip it.
        let dubbo =
            encode_component("dubbo://10.0.0.9:20880/Greeter?interface=Greeter&side=provider&version=");
        let instance = decode_node("Greeter", &dubbo).expect("decodes").expect("a provider").instance;
        assert_eq!(instance.protocols, ["dubbo"]);
        assert_eq!((instance.version.as_str(), instance.weight), ("0.0.0", 1), "defaults");
        // Dubbo's `grpc` scheme, a weight of 0 (no calls), user info, IPv6.
        let grpc = encode_component("grpc://u:p@[fe80::1]:50051/Greeter?weight=0&version=2.1.0-rc.1");
        let instance = decode_node("Greeter", &grpc).expect("decodes").expect("a provider").instance;
        assert_eq!((instance.addr.as_str(), instance.weight), ("[fe80::1]:50051", 0));
        assert_eq!(
            (instance.protocols.as_slice(), instance.version.as_str()),
            (&["grpc".to_owned()][..], "2.1.0-rc.1")
        );
    }

    #[test]
    fn python_written_providers_are_read() {
        // Dubbo-python: `quote(url, safe="")` of a URL whose parameters went
        // through `urlencode` (so `%20`, `%2C`, `+` inside).
        let url =
            "tri://127.0.0.1:50051/Greeter?side=provider&methods=a%2Cb&application=py+app&version=1.0.0";
        let name = url
            .replace('%', "%25")
            .replace(':', "%3A")
            .replace('/', "%2F")
            .replace('?', "%3F")
            .replace('=', "%3D")
            .replace('&', "%26")
            .replace(',', "%2C")
            .replace('+', "%2B");
        let instance = decode_node("Greeter", &name).expect("decodes").expect("a provider").instance;
        assert_eq!(instance.metadata.get("methods").map(String::as_str), Some("a,b"));
        assert_eq!(instance.metadata.get("application").map(String::as_str), Some("py+app"));
        assert_eq!((instance.addr.as_str(), instance.version.as_str()), ("127.0.0.1:50051", "1.0.0"));
    }

    #[test]
    fn providers_dubbo_would_not_call_are_not_instances() {
        for url in [
            "tri://10.0.0.1:1/S?enabled=false",
            "tri://10.0.0.1:1/S?category=configurators",
            "dubbo://10.0.0.1:20880/S?category=routers&weight=200",
        ] {
            assert_eq!(decode_node("S", &encode_component(url)), Ok(None), "{url}");
        }
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for garbage in [
            "",
            "providers",
            "127.0.0.1:9000",
            "%zz",
            "%",
            "%C3%28",
            "tri%3A%2F%2F",
            "tri%3A%2F%2Fhost",
            "tri%3A%2F%2Fhost%3A",
            "tri%3A%2F%2Fhost%3A99999%2FS",
            "tri%3A%2F%2Fhost%3A0%2FS",
            "tri%3A%2F%2F%3A80%2FS",
            "tri%3A%2F%2F%5B%3A%3A1%3A80%2FS",
            "tri%3A%2F%2F%5Bnot-v6%5D%3A80%2FS",
            "tri%3A%2F%2Fho%20st%3A80%2FS",
            "1tri%3A%2F%2Fh%3A80",
            "%3A%2F%2Fh%3A80",
            "tri%3A%2F%2Fh%3A80%2FS%3F%3Dnameless",
        ] {
            assert!(decode_node("S", garbage).is_err(), "{garbage:?} must be refused");
        }
        // Lenient where Dubbo is: bad escapes inside a value stay as written.
        let odd = encode_component("tri://h:80/S?methods=100%&x");
        let instance = decode_node("S", &odd).expect("decodes").expect("a provider").instance;
        assert_eq!(instance.metadata.get("methods").map(String::as_str), Some("100%"));
        assert_eq!(instance.metadata.get("x").map(String::as_str), Some(""));
    }

    #[test]
    fn versions_become_semver() {
        for (written, read) in [
            ("1.2.3", "1.2.3"),
            ("1.2", "1.2.0"),
            ("7", "7.0.0"),
            ("", "0.0.0"),
            ("v1", "0.0.0"),
            ("1.x", "0.0.0"),
        ] {
            assert_eq!(lenient_version(written), read, "{written}");
        }
    }

    #[test]
    fn registry_urls_name_hosts_a_chroot_and_backups() {
        let target = Target::parse("h1:2181,h2:2182").expect("parse");
        assert_eq!(target, Target { hosts: "h1:2181,h2:2182".to_owned(), root: "/dubbo".to_owned() });
        let target = Target::parse("h1/apps/courier/").expect("parse");
        assert_eq!(target, Target { hosts: "h1:2181".to_owned(), root: "/apps/courier/dubbo".to_owned() });
        let target = Target::parse("[::1]:2181?backup=h2:2181,h3").expect("parse");
        assert_eq!(target.hosts, "[::1]:2181,h2:2181,h3:2181");
        assert_eq!(target.providers("a b/c"), "/dubbo/a+b%2Fc/providers");
        for bad in ["", "/chroot", "h:99999", "h:x", "h//x", "h/./x", "h?group=x", ",", "h:0"] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }
}
