//! `redis://host:6379`: a Redis server as the registry (cargo feature
//! `redis`). Redis 6.2 or later, standalone (or a primary with replicas);
//! not Redis Cluster: one script touches keys of several services.
//!
//! # URL
//!
//! `redis://[user[:password]@]host[:port][/db][?prefix=P]`: the port
//! defaults to 6379 and the database to 0; `user:password` (percent-encoded)
//! authenticates with Redis 6 ACLs (`:password@` alone with `requirepass`).
//! `prefix` (percent-encoded, default `courier/`) is put before every key,
//! so several registries can share a database. Other query parameters are
//! the `redis` crate's (`protocol=resp3`). No TLS (`rediss://`).
//! [`Registry::url`](crate::registry::Registry::url) keeps the URL without
//! its password (it names the cache directory).
//!
//! # Layout
//!
//! With the prefix `P` (`courier/`), for each service `S` and instance `I`:
//!
//! | key | type | what |
//! |---|---|---|
//! | `P s/S/i/I` | hash | the instance: `lease`, `ttl` (ms), `registered` (Unix ms), `instance` (JSON); expires a while after its lease |
//! | `P s/S/deadlines` | sorted set | instance id → its lease's deadline, in ms of Redis's clock |
//! | `P s/S/rev` | string | the service's revision, the last change's |
//! | `P s/S/log` | stream | the last 1024 changes, entry id `<revision>-0`, fields `op` (`add`, `remove`), `id`, and for `add` `instance`, `lease`, `registered` |
//! | `P services` | sorted set | service → a time at or before its next deadline: the reapers' work list |
//! | `P leases` | string | the last lease id given |
//! | `P swept`, `P run`, `P grace` | strings | when a reaper last swept, the Redis process it swept in, when the last outage ended |
//!
//! (No space between `P` and the rest: `courier/s/Greeter/rev`.)
//!
//! # How
//!
//! Every write is one Lua script (register, keep-alive, deregister, reap;
//! `EVALSHA`, loaded again after a Redis restart), so a crash between steps
//! cannot leave an index entry without its instance or a change without
//! its revision. Each script takes its times from Redis's `TIME`, never a
//! client's clock, so clients with skewed clocks agree on deadlines.
//!
//! **Revisions** are a counter per service bumped by the script that makes
//! the change, and the change is appended to the service's log under that
//! revision in the same script: the log has every revision, in order, with
//! no gap. A counter that is missing (Redis lost it, or it expired a day
//! after the service's last activity) starts again from Redis's clock in
//! ms × 1024, above any revision it can have given before (that would take
//! over 1024 changes per ms), so revisions only ever increase.
//!
//! **The log** is a Redis Stream rather than pub/sub: pub/sub forgets what
//! it publishes while a subscriber is disconnected, while a stream is a
//! bounded log a watcher reads from the last revision it saw (`XREAD BLOCK`
//! from `<revision>-0`) and a resumed watch replays from. `MAXLEN 1024`
//! bounds it; a watch resumed from a revision the log no longer reaches
//! back to gets a complete `Reset` instead. Each watch holds its own
//! connection (a blocked `XREAD` would hold up every other command on a
//! shared one).
//!
//! **Reconciling**: a watch reads the whole service (in pages) on every
//! (re)connect and every 15 s, replays the log up to that listing's
//! revision, and compares what it has told its consumer with the listing.
//! They differ only if something changed without a log entry (an instance
//! key expired with no reaper running, a hand edit, a lost log): then it
//! sends the listing as a `Reset`. A watch survives Redis restarts
//! (reconnecting with backoff, catching up from the log); it ends with an
//! error only when it cannot be set up at all.
//!
//! **Expiry**: Redis expires keys silently (keyspace notifications are off
//! by default), which would remove instances without a `Remove`. So every
//! connected client runs a reaper that calls the reap script every 250 ms:
//! it takes the services whose next deadline has passed, removes their due
//! instances, and logs each `Remove` under a new revision, like any other
//! change (idempotent: reapers of many clients may race). The instance
//! key's own TTL (its deadline plus 30 s) is only the backstop for when no
//! client runs. A lease lives until it is reaped, so a renewal that comes
//! a little late, before a reaper, still holds.
//!
//! **Outages**: when the reap script finds it runs in another Redis process
//! than the last sweep (a restart), or that nobody swept for 5 s, it gives
//! every lease a fresh TTL from that moment, as etcd and courier's own
//! registry do after a restart: providers had no way to renew meanwhile.
//! (Outages longer than a lease's TTL plus 30 s lose the instance keys;
//! providers then register again.)
//!
//! An instance id held by another live lease is refused (`AlreadyExists`),
//! as courier's own registry does. Data under the prefix that courier did
//! not write (a value that is not JSON, a key of the wrong type, a foreign
//! log entry) is skipped with a warning; a key of the wrong type where a
//! script must write is replaced.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, Script, ServerErrorKind, Value};
use tokio::sync::mpsc;

use crate::discovery::{
    Instance, Lease, Registration, RegistryBackend, RegistryError, Revision, Snapshot, WatchEvent,
    WatchStream,
};
use crate::registry::mem::store::{MAX_TTL, MIN_TTL};
use crate::resilience::Backoff;
use crate::service::BoxFuture;

/// The prefix of every key when the URL names none.
const DEFAULT_PREFIX: &str = "courier/";
/// Timeout of every Redis request (but a blocked `XREAD`'s wait).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How many changes a service's log keeps (as the store backends' log).
const LOG_LEN: usize = 1024;
/// How long a service's revision and log outlive its last activity.
const RETAIN: Duration = Duration::from_secs(24 * 3600);
/// How long an instance key outlives its lease's deadline: the backstop
/// for when no reaper runs, long enough to ride out a Redis restart.
const BACKSTOP: Duration = Duration::from_secs(30);
/// How often each client's reaper sweeps.
const REAP_EVERY: Duration = Duration::from_millis(250);
/// A sweep this long after the last one (by anybody) means nobody could
/// sweep: leases get a fresh TTL.
const OUTAGE: Duration = Duration::from_secs(5);
/// How many services, and instances of each, one sweep handles at most
/// (the reaper sweeps again at once when there is more).
const REAP_SERVICES: usize = 64;
const REAP_INSTANCES: usize = 256;
/// How long a watch's `XREAD` waits for a change before looking around.
const BLOCK: Duration = Duration::from_secs(2);
/// How often a watch re-reads the whole service to reconcile.
const RECONCILE: Duration = Duration::from_secs(15);
/// Instances read per page of a listing, log entries per read.
const LIST_PAGE: usize = 64;
const LOG_PAGE: usize = 128;
/// How often a listing is read again when the service keeps changing
/// under it and the log cannot patch it.
const LIST_ATTEMPTS: usize = 5;

// The key layout (see the module docs), shared by the Rust side and,
// through `lua`, the scripts.
const SERVICE_SEGMENT: &str = "s/";
const INSTANCE_SEGMENT: &str = "i/";
const REV_KEY: &str = "rev";
const LOG_KEY: &str = "log";
const DEADLINES_KEY: &str = "deadlines";
const SERVICES_KEY: &str = "services";
const LEASES_KEY: &str = "leases";
const SWEPT_KEY: &str = "swept";
const RUN_KEY: &str = "run";
const GRACE_KEY: &str = "grace";

/// Where a registry's keys live: every name is `prefix` + a layout name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn service_base(&self, service: &str) -> String {
        format!("{}{SERVICE_SEGMENT}{service}/", self.prefix)
    }

    fn services(&self) -> String {
        format!("{}{SERVICES_KEY}", self.prefix)
    }

    fn log(&self, service: &str) -> String {
        format!("{}{LOG_KEY}", self.service_base(service))
    }

    #[cfg(test)]
    fn rev(&self, service: &str) -> String {
        format!("{}{REV_KEY}", self.service_base(service))
    }

    #[cfg(test)]
    fn instance(&self, service: &str, id: &str) -> String {
        format!("{}{INSTANCE_SEGMENT}{id}", self.service_base(service))
    }
}

/// A `redis://` URL taken apart: what the `redis` crate connects to, and
/// the key prefix.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// The URL without courier's own parameter.
    connection_url: String,
    prefix: String,
}

/// Take a `redis://` URL apart (see the module docs). The `redis` crate
/// checks the rest (host, port, database, credentials).
fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url.strip_prefix("redis://").ok_or("expected redis://host[:port][/db][?prefix=...]")?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let host = location.rsplit_once('@').map_or(location, |(_, host)| host);
    if host.is_empty() || host.starts_with('/') || host.starts_with(':') {
        return Err("expected redis://host[:port][/db]: no host".to_owned());
    }
    let mut prefix = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("prefix", value)) => {
                if prefix.is_some() {
                    return Err("`prefix` given twice".to_owned());
                }
                prefix = Some(percent_decode(value)?);
            }
            _ => kept.push(pair),
        }
    }
    let connection_url = if kept.is_empty() {
        format!("redis://{location}")
    } else {
        format!("redis://{location}?{}", kept.join("&"))
    };
    Ok(Target { connection_url, prefix: prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned()) })
}

/// `%XX` escapes decoded (as UTF-8).
fn percent_decode(text: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).and_then(|hex| std::str::from_utf8(hex).ok());
            let decoded = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok());
            let Some(decoded) = decoded else {
                return Err(format!("a bad percent escape in `{text}`"));
            };
            bytes.push(decoded);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("`{text}` is not UTF-8 once decoded"))
}

/// `url` without the password, if it has one: what the registry handle
/// shows (in `Debug`, and as the name of its cache directory).
pub(crate) fn redacted_url(url: &str) -> String {
    let Some(rest) = url.strip_prefix("redis://") else { return url.to_owned() };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if user.is_empty() {
                format!("redis://{host}{tail}")
            } else {
                format!("redis://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

// --- The scripts ----------------------------------------------------------

/// What every script starts with. ARGV[1..4] are the same for all:
/// the log length, the retention (ms), the backstop (ms), the prefix.
/// Lua numbers are doubles: every integer written goes through `int`
/// (`tostring` would write 1.8e+15), and every one read through `number`.
const LUA_COMMON: &str = r#"
local LOG_LEN, RETAIN, BACKSTOP, PREFIX = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local SERVICES, LEASES = PREFIX .. '@SERVICES@', PREFIX .. '@LEASES@'
local SWEPT, RUN, GRACE = PREFIX .. '@SWEPT@', PREFIX .. '@RUN@', PREFIX .. '@GRACE@'
local repaired = 0

local function int(n) return string.format('%.0f', n) end

-- A whole number read from Redis, or nil for anything else.
local function number(value)
  local n = tonumber(value)
  if n and n == math.floor(n) and n >= 0 and n < 9007199254740992 then return n end
  return nil
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function kind(key) return redis.call('TYPE', key)['ok'] end

-- A key of another type where ours must be was written by something else:
-- delete it so the structure can be rebuilt (and count it, for a warning).
local function own(key, expected)
  local t = kind(key)
  if t ~= 'none' and t ~= expected then
    redis.call('DEL', key)
    repaired = repaired + 1
  end
end

local function read_number(key)
  if kind(key) ~= 'string' then return nil end
  return number(redis.call('GET', key))
end

-- Make `key` (if it exists) live at least `ms` more.
local function extend(key, ms)
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < ms) then redis.call('PEXPIRE', key, int(ms)) end
end

local function service_keys(service)
  local base = PREFIX .. '@SERVICE@' .. service .. '/'
  return {rev = base .. '@REV@', log = base .. '@LOG@', deadlines = base .. '@DEADLINES@',
          instances = base .. '@INSTANCE@'}
end

-- When a lease with this deadline and TTL really ends: after an outage
-- (GRACE), no earlier than a full TTL after it.
local function effective(deadline, ttl)
  local grace = read_number(GRACE)
  if grace and ttl and grace + ttl > deadline then return grace + ttl end
  return deadline
end

-- Log a change under the service's next revision, and return it.
local function append(ks, op, id, fields)
  own(ks.rev, 'string')
  own(ks.log, 'stream')
  local rev = number(redis.call('GET', ks.rev))
  local args = {}
  if rev then
    rev = rev + 1
  else
    -- The first revision of this counter: a watcher at 0 (the service
    -- did not exist) goes on from here, though it is no `0 + 1`.
    rev = now_ms() * 1024
    args = {'start', '1'}
  end
  redis.call('SET', ks.rev, int(rev), 'PX', int(RETAIN))
  args = {'XADD', ks.log, 'MAXLEN', LOG_LEN, int(rev) .. '-0', 'op', op, 'id', id, unpack(args)}
  for i = 1, #fields do args[#args + 1] = fields[i] end
  local added = redis.pcall(unpack(args))
  if type(added) == 'table' and added['err'] then
    -- The log is ahead of the counter (written to by something else):
    -- start it again; watchers from before get a complete reset.
    redis.call('DEL', ks.log)
    repaired = repaired + 1
    redis.call(unpack(args))
  end
  redis.call('PEXPIRE', ks.log, int(RETAIN))
  return rev
end

local function remove(ks, id)
  redis.call('DEL', ks.instances .. id)
  redis.call('ZREM', ks.deadlines, id)
  return append(ks, 'remove', id, {})
end
"#;

/// ARGV[5..8]: service, id, instance JSON, TTL (ms).
/// Returns `{1, repaired, lease, revision}`, or `{0, repaired}` when a live
/// lease holds the id.
const LUA_REGISTER: &str = r#"
local service, id, json, ttl = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local ks = service_keys(service)
local key = ks.instances .. id
own(key, 'hash')
own(ks.deadlines, 'zset')
own(SERVICES, 'zset')
own(LEASES, 'string')
local now = now_ms()
local held = redis.call('HGET', key, 'lease')
local deadline = number(redis.call('ZSCORE', ks.deadlines, id))
if held or deadline then
  local held_ttl = number(redis.call('HGET', key, 'ttl'))
  if held and deadline and held_ttl and effective(deadline, held_ttl) > now then
    return {0, repaired}
  end
  -- Its lease ended and no reaper came yet, or half of it is missing (its
  -- key expired, or something else wrote it): it goes, with its Remove.
  remove(ks, id)
end
local lease = number(redis.pcall('INCR', LEASES))
if not lease then
  lease = now
  redis.call('SET', LEASES, int(lease))
  repaired = repaired + 1
end
local expires = now + ttl
redis.call('HSET', key, 'lease', int(lease), 'ttl', int(ttl), 'registered', int(now), 'instance', json)
redis.call('PEXPIRE', key, int(ttl + BACKSTOP))
redis.call('ZADD', ks.deadlines, int(expires), id)
redis.call('ZADD', SERVICES, 'LT', int(expires), service)
extend(ks.deadlines, ttl + BACKSTOP)
extend(SERVICES, ttl + BACKSTOP)
local rev = append(ks, 'add', id, {'instance', json, 'lease', int(lease), 'registered', int(now)})
return {1, repaired, lease, rev}
"#;

/// ARGV[5..7]: service, id, lease. Returns `{1, repaired}` if renewed,
/// `{0, repaired}` if the lease does not hold the instance (any more).
const LUA_KEEP_ALIVE: &str = r#"
local service, id, lease = ARGV[5], ARGV[6], ARGV[7]
local ks = service_keys(service)
local key = ks.instances .. id
if kind(key) ~= 'hash' or redis.call('HGET', key, 'lease') ~= lease then return {0, repaired} end
local ttl = number(redis.call('HGET', key, 'ttl'))
if not ttl then return {0, repaired} end
own(ks.deadlines, 'zset')
own(SERVICES, 'zset')
local expires = now_ms() + ttl
redis.call('ZADD', ks.deadlines, int(expires), id)
redis.call('ZADD', SERVICES, 'LT', int(expires), service)
redis.call('PEXPIRE', key, int(ttl + BACKSTOP))
extend(ks.deadlines, ttl + BACKSTOP)
extend(SERVICES, ttl + BACKSTOP)
extend(ks.rev, RETAIN)
extend(ks.log, RETAIN)
return {1, repaired}
"#;

/// ARGV[5..7]: service, id, lease. Returns `{1, repaired, revision}`, or
/// `{0, repaired}` if the lease does not hold the instance.
const LUA_DEREGISTER: &str = r#"
local service, id, lease = ARGV[5], ARGV[6], ARGV[7]
local ks = service_keys(service)
local key = ks.instances .. id
if kind(key) ~= 'hash' or redis.call('HGET', key, 'lease') ~= lease then return {0, repaired} end
own(ks.deadlines, 'zset')
local rev = remove(ks, id)
return {1, repaired, rev}
"#;

/// ARGV[5..7]: the outage gap (ms), services per sweep, instances per
/// service. Returns `{repaired, more, {service, id, ...}}`: whether there is
/// more to reap now, and what was removed.
const LUA_REAP: &str = r#"
local gap, max_services, max_instances = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
own(SERVICES, 'zset')
own(SWEPT, 'string')
own(RUN, 'string')
own(GRACE, 'string')
local now = now_ms()
-- An outage (Redis restarted, or nobody could sweep for a while): leases
-- get a fresh TTL from now (see `effective`).
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
local last_run = redis.call('GET', RUN)
local last = number(redis.call('GET', SWEPT))
if (last_run and last_run ~= run) or (last and now - last > gap) then
  redis.call('SET', GRACE, int(now), 'PX', int(RETAIN))
end
redis.call('SET', SWEPT, int(now), 'PX', int(RETAIN))
redis.call('SET', RUN, run, 'PX', int(RETAIN))
local removed, more = {}, 0
local due = redis.call('ZRANGEBYSCORE', SERVICES, '-inf', int(now), 'LIMIT', 0, max_services)
if #due >= max_services then more = 1 end
for _, service in ipairs(due) do
  local ks = service_keys(service)
  own(ks.deadlines, 'zset')
  local ids = redis.call('ZRANGEBYSCORE', ks.deadlines, '-inf', int(now), 'WITHSCORES', 'LIMIT', 0, max_instances)
  if #ids >= 2 * max_instances then more = 1 end
  for i = 1, #ids, 2 do
    local id, deadline = ids[i], tonumber(ids[i + 1])
    local key = ks.instances .. id
    local ttl = nil
    if kind(key) == 'hash' then ttl = number(redis.call('HGET', key, 'ttl')) end
    local ends = deadline
    if ttl then ends = effective(deadline, ttl) end
    if ends > now then
      redis.call('ZADD', ks.deadlines, int(ends), id)
      redis.call('PEXPIRE', key, int(ends - now + BACKSTOP))
      extend(ks.deadlines, ends - now + BACKSTOP)
    else
      remove(ks, id)
      removed[#removed + 1] = service
      removed[#removed + 1] = id
    end
  end
  local first = redis.call('ZRANGE', ks.deadlines, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', SERVICES, first[2], service)
  else
    redis.call('ZREM', SERVICES, service)
  end
end
return {repaired, more, removed}
"#;

/// ARGV[5..7]: service, `ZSCAN` cursor, page size. Read-only. Returns
/// `{revision, next cursor, {{id, key type, lease, registered, instance}, ...}}`.
const LUA_LIST_PAGE: &str = r#"
local ks = service_keys(ARGV[5])
local rev = read_number(ks.rev) or 0
if kind(ks.deadlines) ~= 'zset' then return {rev, '0', {}} end
local scan = redis.call('ZSCAN', ks.deadlines, ARGV[6], 'COUNT', ARGV[7])
local out, members = {}, scan[2]
for i = 1, #members, 2 do
  local id = members[i]
  local key = ks.instances .. id
  local t = kind(key)
  if t == 'hash' then
    local f = redis.call('HMGET', key, 'lease', 'registered', 'instance')
    out[#out + 1] = {id, t, f[1] or '', f[2] or '', f[3] or ''}
  else
    out[#out + 1] = {id, t, '', '', ''}
  end
end
return {rev, scan[1], out}
"#;

/// A script's source: the common part with the layout's names filled in,
/// then `body`.
fn lua(body: &str) -> String {
    let common = LUA_COMMON
        .replace("@SERVICES@", SERVICES_KEY)
        .replace("@LEASES@", LEASES_KEY)
        .replace("@SWEPT@", SWEPT_KEY)
        .replace("@RUN@", RUN_KEY)
        .replace("@GRACE@", GRACE_KEY)
        .replace("@SERVICE@", SERVICE_SEGMENT)
        .replace("@REV@", REV_KEY)
        .replace("@LOG@", LOG_KEY)
        .replace("@DEADLINES@", DEADLINES_KEY)
        .replace("@INSTANCE@", INSTANCE_SEGMENT);
    format!("{common}{body}")
}

struct Scripts {
    register: Script,
    keep_alive: Script,
    deregister: Script,
    reap: Script,
    list_page: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            register: Script::new(&lua(LUA_REGISTER)),
            keep_alive: Script::new(&lua(LUA_KEEP_ALIVE)),
            deregister: Script::new(&lua(LUA_DEREGISTER)),
            reap: Script::new(&lua(LUA_REAP)),
            list_page: Script::new(&lua(LUA_LIST_PAGE)),
        }
    }
}

// --- Reading what Redis sent (sans-IO) -------------------------------------

fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&str> {
    bytes(value).and_then(|bytes| std::str::from_utf8(bytes).ok())
}

fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other).and_then(|text| text.parse().ok()),
    }
}

/// A stream entry id as courier writes it, `<revision>-0`; `None` for
/// any other (an entry courier did not write).
fn parse_entry_id(id: &str) -> Option<Revision> {
    let (revision, sequence) = id.split_once('-')?;
    if sequence != "0" {
        return None;
    }
    revision.parse().ok()
}

/// A change as the log records it.
#[derive(Clone, Debug, PartialEq)]
enum Change {
    Add(Record),
    Remove(String),
}

impl Change {
    fn event(self, revision: Revision) -> WatchEvent {
        match self {
            Change::Add(record) => WatchEvent::Add { instance: record.instance, revision },
            Change::Remove(id) => WatchEvent::Remove { id, revision },
        }
    }
}

/// One entry of a service's log.
#[derive(Clone, Debug, PartialEq)]
enum Entry {
    /// Written by courier under `revision`; the change, or why it cannot
    /// be read (the revision is used all the same). `start`: the first
    /// revision of its service's counter.
    Ours { revision: Revision, start: bool, change: Result<Change, String> },
    /// Not courier's (its id is not `<revision>-0`): skipped.
    Foreign { id: String },
}

/// An instance as its key holds it.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    instance: Instance,
    lease: u64,
    registered_unix_ms: u64,
}

/// The instance `json` describes, if it is one and the one its key names.
fn decode_instance(service: &str, id: &str, json: &[u8]) -> Result<Instance, String> {
    let instance: Instance =
        serde_json::from_slice(json).map_err(|err| format!("the instance is not courier's JSON: {err}"))?;
    if instance.service != service || instance.id != id {
        return Err(format!(
            "the instance is `{}` of `{}`, not `{id}` of `{service}`",
            instance.id, instance.service
        ));
    }
    Ok(instance)
}

fn decode_record(
    service: &str,
    id: &str,
    lease: &[u8],
    registered: &[u8],
    json: &[u8],
) -> Result<Record, String> {
    let instance = decode_instance(service, id, json)?;
    let number = |what: &str, value: &[u8]| {
        std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).ok_or_else(|| format!("no {what}"))
    };
    Ok(Record {
        instance,
        lease: number("lease", lease)?,
        registered_unix_ms: number("registered", registered)?,
    })
}

/// An entry of `service`'s log: its id and field/value pairs, as Redis
/// sent them.
fn decode_entry(service: &str, entry: &Value) -> Option<Entry> {
    let [id, fields] = items(entry)? else { return None };
    let id = text(id)?;
    let Some(revision) = parse_entry_id(id) else { return Some(Entry::Foreign { id: id.to_owned() }) };
    let fields: BTreeMap<&[u8], &[u8]> = match fields {
        Value::Map(pairs) => pairs.iter().filter_map(|(k, v)| Some((bytes(k)?, bytes(v)?))).collect(),
        other => items(other)?
            .chunks(2)
            .filter_map(|pair| Some((bytes(pair.first()?)?, bytes(pair.get(1)?)?)))
            .collect(),
    };
    let start = fields.get(b"start".as_slice()) == Some(&b"1".as_slice());
    Some(Entry::Ours { revision, start, change: decode_change(service, &fields) })
}

fn decode_change(service: &str, fields: &BTreeMap<&[u8], &[u8]>) -> Result<Change, String> {
    let field = |name: &str| fields.get(name.as_bytes()).copied();
    let id = field("id").and_then(|id| std::str::from_utf8(id).ok()).filter(|id| !id.is_empty());
    let id = id.ok_or("no instance id")?;
    match field("op") {
        Some(b"add") => {
            let json = field("instance").ok_or("an add without its instance")?;
            let record = decode_record(
                service,
                id,
                field("lease").unwrap_or_default(),
                field("registered").unwrap_or_default(),
                json,
            )?;
            Ok(Change::Add(record))
        }
        Some(b"remove") => Ok(Change::Remove(id.to_owned())),
        Some(op) => Err(format!("unknown op `{}`", String::from_utf8_lossy(op))),
        None => Err("no op".to_owned()),
    }
}

/// Whether `revision` comes right after `at`: the next one, or the first
/// of a counter after 0 (a service that did not exist yet).
fn follows(at: Revision, revision: Revision, start: bool) -> bool {
    revision == at + 1 || (at == 0 && start)
}

/// The entries of an `XRANGE` reply, and the stream id of the last one
/// (courier's or not: where the next read starts).
fn range_entries(service: &str, reply: &Value) -> (Vec<Entry>, Option<String>) {
    let entries = items(reply).unwrap_or_default();
    let last =
        entries.last().and_then(items).and_then(|entry| entry.first()).and_then(text).map(str::to_owned);
    (entries.iter().filter_map(|entry| decode_entry(service, entry)).collect(), last)
}

/// The entries of an `XREAD` reply for one stream (nil: none yet), and
/// the stream id of the last one.
fn read_entries(service: &str, reply: &Value) -> (Vec<Entry>, Option<String>) {
    let entries = match reply {
        Value::Map(streams) => streams.first().map(|(_, entries)| entries),
        other => items(other).and_then(|streams| streams.first()).and_then(items).and_then(|s| s.get(1)),
    };
    entries.map(|entries| range_entries(service, entries)).unwrap_or_default()
}

/// One page of a listing.
#[derive(Debug, PartialEq)]
struct Page {
    revision: Revision,
    cursor: String,
    records: Vec<Record>,
}

/// A page the list script returned; instances that cannot be read are
/// skipped with a warning.
fn decode_page(service: &str, reply: &Value) -> Option<Page> {
    let [revision, cursor, entries] = items(reply)? else { return None };
    let mut records = Vec::new();
    for entry in items(entries)? {
        let Some([id, kind, lease, registered, json]) = items(entry) else { continue };
        let (Some(id), Some(kind)) = (text(id), text(kind)) else { continue };
        match kind {
            // Gone meanwhile (expired, to be reaped): not an instance.
            "none" => {}
            "hash" => {
                let field = |value: &Value| bytes(value).unwrap_or_default().to_vec();
                match decode_record(service, id, &field(lease), &field(registered), &field(json)) {
                    Ok(record) => records.push(record),
                    Err(reason) => {
                        tracing::warn!(%service, instance = %id, %reason, "skipping an unreadable instance in Redis");
                    }
                }
            }
            other => {
                tracing::warn!(%service, instance = %id, kind = %other, "skipping a key of the wrong type in Redis")
            }
        }
    }
    Some(Page { revision: integer(revision)?, cursor: text(cursor)?.to_owned(), records })
}

// --- Talking to Redis -----------------------------------------------------

fn unavailable(err: impl fmt::Display) -> RegistryError {
    RegistryError::Unavailable(format!("redis: {err}"))
}

fn redis_error(err: RedisError) -> RegistryError {
    match err.kind() {
        ErrorKind::AuthenticationFailed
        | ErrorKind::InvalidClientConfig
        | ErrorKind::Server(ServerErrorKind::NoPerm) => RegistryError::Rejected(format!("redis: {err}")),
        _ => unavailable(err),
    }
}

fn wrong_type(err: &RedisError) -> bool {
    err.code() == Some("WRONGTYPE")
}

async fn timed<T>(call: impl Future<Output = Result<T, RedisError>>) -> Result<T, RegistryError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(redis_error),
        Err(_) => Err(unavailable(format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Run `script` with the common arguments, then `args`.
async fn run(
    conn: &mut impl ConnectionLike,
    script: &Script,
    keys: &Keys,
    args: &[&str],
) -> Result<Vec<Value>, RegistryError> {
    let mut invocation = script.prepare_invoke();
    invocation.arg(LOG_LEN).arg(millis(RETAIN)).arg(millis(BACKSTOP)).arg(&keys.prefix);
    for arg in args {
        invocation.arg(*arg);
    }
    let reply: Value = timed(invocation.invoke_async(conn)).await?;
    match reply {
        Value::Array(items) => Ok(items),
        other => Err(unavailable(format!("unexpected script reply {other:?}"))),
    }
}

/// Warn about keys of the wrong type a script replaced.
fn note_repaired(reply: &[Value], what: &str) {
    let repaired = reply.get(1).and_then(integer).unwrap_or(0);
    if repaired > 0 {
        tracing::warn!(
            repaired,
            "{what}: replaced keys of the wrong type under the Redis prefix (written by something else)"
        );
    }
}

/// The entries of `service`'s log after `cursor` (a stream id), at most
/// `count`, and the id of the last one. A log of the wrong type has none.
async fn log_after(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    service: &str,
    cursor: &str,
) -> Result<(Vec<Entry>, Option<String>), RegistryError> {
    let mut command = ::redis::cmd("XRANGE");
    command.arg(keys.log(service)).arg(format!("({cursor}")).arg("+").arg("COUNT").arg(LOG_PAGE);
    let reply: Value = match tokio::time::timeout(CALL_TIMEOUT, command.query_async(conn)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(err)) if wrong_type(&err) => {
            tracing::warn!(%service, "the Redis log is not a stream (written by something else); ignoring it");
            return Ok((Vec::new(), None));
        }
        Ok(Err(err)) => return Err(redis_error(err)),
        Err(_) => return Err(unavailable(format!("no answer within {CALL_TIMEOUT:?}"))),
    };
    Ok(range_entries(service, &reply))
}

/// The log's changes in `(from, to]`, if it still has every one of them.
async fn changes_between(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    service: &str,
    from: Revision,
    to: Revision,
) -> Result<Option<Vec<(Revision, Result<Change, String>)>>, RegistryError> {
    let mut changes = Vec::new();
    let (mut at, mut cursor) = (from, format!("{from}-0"));
    while at < to {
        let (entries, last) = log_after(conn, keys, service, &cursor).await?;
        let Some(last) = last else { return Ok(None) };
        for entry in entries {
            let Entry::Ours { revision, start, change } = entry else { continue };
            if revision <= at {
                continue;
            }
            if revision > to {
                return Ok(Some(changes));
            }
            if !follows(at, revision, start) {
                return Ok(None);
            }
            at = revision;
            changes.push((revision, change));
        }
        cursor = last;
    }
    Ok(Some(changes))
}

/// Every instance of a service at one revision, read in pages. A page is
/// one script, atomic; when the service changed between pages, the log's
/// changes in between are applied on top, which makes it exact.
async fn listing(
    conn: &mut impl ConnectionLike,
    scripts: &Scripts,
    keys: &Keys,
    service: &str,
) -> Result<(BTreeMap<String, Record>, Revision), RegistryError> {
    for _ in 0..LIST_ATTEMPTS {
        let mut records = BTreeMap::new();
        let mut first = None;
        let mut cursor = "0".to_owned();
        let last = loop {
            let page_size = LIST_PAGE.to_string();
            let reply = run(conn, &scripts.list_page, keys, &[service, &cursor, &page_size]).await?;
            let page = decode_page(service, &Value::Array(reply))
                .ok_or_else(|| unavailable("an unexpected listing reply"))?;
            first.get_or_insert(page.revision);
            records.extend(page.records.into_iter().map(|record| (record.instance.id.clone(), record)));
            cursor = page.cursor;
            if cursor == "0" {
                break page.revision;
            }
        };
        let first = first.unwrap_or(last);
        if first == last {
            return Ok((records, last));
        }
        if first < last
            && let Some(changes) = changes_between(conn, keys, service, first, last).await?
        {
            for (_, change) in changes {
                match change {
                    Ok(Change::Add(record)) => {
                        records.insert(record.instance.id.clone(), record);
                    }
                    Ok(Change::Remove(id)) => {
                        records.remove(&id);
                    }
                    Err(_) => {}
                }
            }
            return Ok((records, last));
        }
    }
    Err(unavailable(format!("`{service}` changed too fast to be listed")))
}

// --- The backend ----------------------------------------------------------

pub(crate) struct RedisRegistry {
    client: Client,
    conn: ConnectionManager,
    keys: Keys,
    scripts: Arc<Scripts>,
}

impl RedisRegistry {
    /// The registry at `url` (see the module docs), and its reaper. Connects
    /// on first use, so this works while Redis is down (calls fail until it
    /// is back). Must be called within a tokio runtime.
    pub(crate) fn connect(url: &str) -> Result<Arc<RedisRegistry>, String> {
        let target = parse_url(url)?;
        let client = Client::open(target.connection_url.as_str()).map_err(|err| err.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(4);
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|err| err.to_string())?;
        let registry = Arc::new(RedisRegistry {
            client,
            conn,
            keys: Keys { prefix: target.prefix },
            scripts: Arc::new(Scripts::new()),
        });
        tokio::spawn(reap_loop(Arc::downgrade(&registry)));
        Ok(registry)
    }

    /// One sweep of the reaper; whether there is more to reap right away.
    async fn reap(&self) -> Result<bool, RegistryError> {
        let mut conn = self.conn.clone();
        let gap = millis(OUTAGE).to_string();
        let (services, instances) = (REAP_SERVICES.to_string(), REAP_INSTANCES.to_string());
        let reply = run(&mut conn, &self.scripts.reap, &self.keys, &[&gap, &services, &instances]).await?;
        if reply.first().and_then(integer).unwrap_or(0) > 0 {
            tracing::warn!(
                "replaced keys of the wrong type under the Redis prefix (written by something else)"
            );
        }
        let removed = reply.get(2).and_then(items).unwrap_or_default();
        for pair in removed.chunks(2) {
            let (service, id) = (pair.first().and_then(text), pair.get(1).and_then(text));
            let (service, id) = (service.unwrap_or("?"), id.unwrap_or("?"));
            tracing::info!(
                %service,
                instance = %id,
                "lease expired; instance removed"
            );
        }
        Ok(reply.get(1).and_then(integer).unwrap_or(0) == 1)
    }

    async fn registrations_of(&self, service: &str) -> Result<Vec<Registration>, RegistryError> {
        let mut conn = self.conn.clone();
        let (records, _) = listing(&mut conn, &self.scripts, &self.keys, service).await?;
        Ok(records
            .into_values()
            .map(|record| Registration {
                instance: record.instance,
                lease: record.lease,
                registered_unix_ms: record.registered_unix_ms,
            })
            .collect())
    }

    /// Every service with instances (or recently with some).
    async fn services(&self) -> Result<Vec<String>, RegistryError> {
        let mut conn = self.conn.clone();
        let mut services = Vec::new();
        let mut cursor = "0".to_owned();
        loop {
            let mut command = ::redis::cmd("ZSCAN");
            command.arg(self.keys.services()).arg(&cursor).arg("COUNT").arg(LIST_PAGE);
            let reply: Value = match tokio::time::timeout(CALL_TIMEOUT, command.query_async(&mut conn)).await
            {
                Ok(Ok(reply)) => reply,
                Ok(Err(err)) if wrong_type(&err) => {
                    tracing::warn!("the Redis service index is not a sorted set (written by something else)");
                    return Ok(services);
                }
                Ok(Err(err)) => return Err(redis_error(err)),
                Err(_) => return Err(unavailable(format!("no answer within {CALL_TIMEOUT:?}"))),
            };
            let Some([next, members]) = items(&reply) else {
                return Err(unavailable("an unexpected ZSCAN reply"));
            };
            let members = items(members).unwrap_or_default();
            services.extend(members.iter().step_by(2).filter_map(text).map(str::to_owned));
            cursor = text(next).unwrap_or("0").to_owned();
            if cursor == "0" {
                break;
            }
        }
        services.sort_unstable();
        services.dedup();
        Ok(services)
    }
}

/// Sweep every `REAP_EVERY` (jittered, so many clients spread out) until
/// the registry is dropped.
async fn reap_loop(registry: Weak<RedisRegistry>) {
    let mut failing = false;
    loop {
        let pause = REAP_EVERY.mul_f64(0.75 + fastrand::f64() / 2.0);
        tokio::time::sleep(pause).await;
        loop {
            let Some(this) = registry.upgrade() else { return };
            match this.reap().await {
                Ok(more) => {
                    failing = false;
                    if !more {
                        break;
                    }
                }
                Err(err) => {
                    // Registration and watches say so too; once is enough.
                    if !failing {
                        tracing::debug!(%err, "could not reap expired leases in Redis; retrying");
                    }
                    failing = true;
                    break;
                }
            }
        }
    }
}

/// Follows one service's log for one consumer, across reconnects.
struct Watcher {
    registry: Weak<RedisRegistry>,
    client: Client,
    keys: Keys,
    scripts: Arc<Scripts>,
    service: String,
    tx: mpsc::Sender<Result<WatchEvent, RegistryError>>,
    /// What the consumer has been told: its instances, at a revision.
    /// `None` until the first reading.
    told: Option<(BTreeMap<String, Instance>, Revision)>,
    /// The revision the consumer resumed from, while `told` is `None`.
    after: Option<Revision>,
}

impl Watcher {
    async fn run(mut self) {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            ..Backoff::default()
        };
        let mut failures = 0u32;
        loop {
            let err = match self.follow(&mut failures).await {
                Ok(()) => return,
                Err(err) => err,
            };
            if self.told.is_none() {
                // Never set up: let the consumer know, and retry in its own time.
                let _ = self.tx.send(Err(err)).await;
                return;
            }
            failures = failures.saturating_add(1);
            if failures == 1 {
                tracing::warn!(service = %self.service, %err, "lost the Redis watch; reconnecting");
            } else {
                tracing::debug!(service = %self.service, %err, failures, "the Redis watch is still lost");
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.delay(failures, fastrand::f64())) => {}
                () = self.tx.closed() => return,
            }
            if self.registry.strong_count() == 0 {
                return;
            }
        }
    }

    /// Connect, catch up, follow; `Ok` when the consumer or the registry
    /// is gone.
    async fn follow(&mut self, failures: &mut u32) -> Result<(), RegistryError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(BLOCK + CALL_TIMEOUT));
        let mut conn = timed(self.client.get_multiplexed_async_connection_with_config(&config)).await?;
        let log = self.keys.log(&self.service);
        loop {
            if !self.sync(&mut conn).await? {
                return Ok(());
            }
            if *failures > 0 {
                tracing::info!(service = %self.service, "the Redis watch is back");
                *failures = 0;
            }
            let reconcile_at = Instant::now() + RECONCILE;
            // Where the next read starts: past every entry read, ours or
            // not (a foreign entry must not be read again and again).
            let mut cursor = format!("{}-0", self.told.as_ref().map_or(0, |(_, revision)| *revision));
            while Instant::now() < reconcile_at {
                if self.registry.strong_count() == 0 {
                    return Ok(());
                }
                let mut read = ::redis::cmd("XREAD");
                read.arg("COUNT").arg(LOG_PAGE).arg("BLOCK").arg(millis(BLOCK));
                read.arg("STREAMS").arg(&log).arg(&cursor);
                let reply = tokio::select! {
                    reply = read.query_async::<Value>(&mut conn) => reply,
                    () = self.tx.closed() => return Ok(()),
                };
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(err) if wrong_type(&err) => {
                        // Written by something else; a writer replaces it.
                        tracing::warn!(service = %self.service, "the Redis log is not a stream; re-reading the service");
                        tokio::select! {
                            () = tokio::time::sleep(BLOCK) => break,
                            () = self.tx.closed() => return Ok(()),
                        }
                    }
                    Err(err) => return Err(redis_error(err)),
                };
                let (entries, last) = read_entries(&self.service, &reply);
                if let Some(last) = last {
                    cursor = last;
                }
                match self.apply(entries).await {
                    Applied::Followed => {}
                    Applied::Gap => break,
                    Applied::Closed => return Ok(()),
                }
            }
        }
    }

    /// Pass on the entries read past the consumer's revision.
    async fn apply(&mut self, entries: Vec<Entry>) -> Applied {
        for entry in entries {
            let revision = self.told.as_ref().map_or(0, |(_, revision)| *revision);
            match entry {
                Entry::Foreign { id } => {
                    tracing::warn!(service = %self.service, entry = %id, "skipping a log entry courier did not write");
                }
                Entry::Ours { revision: next, .. } if next <= revision => {}
                // A revision skipped: the log was cut or rewritten under us.
                Entry::Ours { revision: next, start, .. } if !follows(revision, next, start) => {
                    return Applied::Gap;
                }
                Entry::Ours { revision: next, change, .. } => {
                    if !self.deliver(next, change).await {
                        return Applied::Closed;
                    }
                }
            }
        }
        Applied::Followed
    }

    /// Tell the consumer about one change; `false` if it is gone.
    async fn deliver(&mut self, revision: Revision, change: Result<Change, String>) -> bool {
        let event = match change {
            Ok(change) => change.event(revision),
            Err(reason) => {
                tracing::warn!(service = %self.service, revision, %reason, "skipping an unreadable change in the Redis log");
                match &mut self.told {
                    Some((_, told)) => *told = revision,
                    None => self.after = Some(revision),
                }
                return true;
            }
        };
        match &mut self.told {
            Some((view, told)) => {
                match &event {
                    WatchEvent::Add { instance, .. } | WatchEvent::Update { instance, .. } => {
                        view.insert(instance.id.clone(), instance.clone());
                    }
                    WatchEvent::Remove { id, .. } => {
                        view.remove(id);
                    }
                    WatchEvent::Reset { .. } => {}
                }
                *told = revision;
            }
            None => self.after = Some(revision),
        }
        self.tx.send(Ok(event)).await.is_ok()
    }

    /// Read the service and bring the consumer to it: the log's changes
    /// since its revision, or the full set when the log does not have them
    /// or what it was told differs from what Redis lists. `false` if the
    /// consumer is gone.
    async fn sync(&mut self, conn: &mut MultiplexedConnection) -> Result<bool, RegistryError> {
        let (records, revision) = listing(conn, &self.scripts, &self.keys, &self.service).await?;
        let listed: BTreeMap<String, Instance> =
            records.into_iter().map(|(id, record)| (id, record.instance)).collect();
        let from = match &self.told {
            Some((_, told)) => Some(*told),
            None => self.after,
        };
        let Some(from) = from else { return Ok(self.reset(listed, revision).await) };
        if from > revision {
            // Redis lost data (restored from an old file, or replaced).
            tracing::warn!(service = %self.service, from, revision, "Redis is behind the watch; re-reading the service");
            return Ok(self.reset(listed, revision).await);
        }
        if from < revision {
            let Some(changes) = changes_between(conn, &self.keys, &self.service, from, revision).await?
            else {
                tracing::debug!(service = %self.service, from, "the Redis log no longer reaches back; sending the full set");
                return Ok(self.reset(listed, revision).await);
            };
            for (next, change) in changes {
                if !self.deliver(next, change).await {
                    return Ok(false);
                }
            }
        }
        match &mut self.told {
            Some((view, told)) => {
                if *view != listed {
                    tracing::info!(service = %self.service, revision, "Redis lists other instances than its log says (changed without a log entry); sending the full set");
                    return Ok(self.reset(listed, revision).await);
                }
                *told = revision;
            }
            // Resumed by the consumer: it knows what it was told before.
            None => self.told = Some((listed, revision)),
        }
        Ok(true)
    }

    async fn reset(&mut self, listed: BTreeMap<String, Instance>, revision: Revision) -> bool {
        let instances = listed.values().cloned().collect();
        self.told = Some((listed, revision));
        self.after = None;
        self.tx.send(Ok(WatchEvent::Reset { instances, revision })).await.is_ok()
    }
}

enum Applied {
    Followed,
    Gap,
    Closed,
}

impl RegistryBackend for Arc<RedisRegistry> {
    fn register(&self, instance: Instance, ttl: Duration) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        Box::pin(async move {
            instance.validate().map_err(RegistryError::Rejected)?;
            if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
                return Err(RegistryError::Rejected(format!(
                    "invalid TTL {ttl:?}: must be between 1 s and 1 h"
                )));
            }
            let json =
                serde_json::to_string(&instance).map_err(|err| RegistryError::Rejected(err.to_string()))?;
            let ttl_ms = millis(ttl).to_string();
            let mut conn = self.conn.clone();
            let reply = run(
                &mut conn,
                &self.scripts.register,
                &self.keys,
                &[&instance.service, &instance.id, &json, &ttl_ms],
            )
            .await?;
            note_repaired(&reply, "register");
            match reply.first().and_then(integer) {
                Some(1) => {
                    let lease =
                        reply.get(2).and_then(integer).ok_or_else(|| unavailable("no lease in the reply"))?;
                    Ok(Lease { id: lease, ttl, service: instance.service, instance_id: instance.id })
                }
                Some(0) => Err(RegistryError::AlreadyExists { service: instance.service, id: instance.id }),
                _ => Err(unavailable("an unexpected register reply")),
            }
        })
    }

    fn keep_alive<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let id = lease.id.to_string();
            let args = [lease.service.as_str(), lease.instance_id.as_str(), id.as_str()];
            let reply = run(&mut conn, &self.scripts.keep_alive, &self.keys, &args).await?;
            match reply.first().and_then(integer) {
                Some(1) => Ok(()),
                _ => Err(RegistryError::LeaseNotFound(lease.id)),
            }
        })
    }

    fn deregister<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let id = lease.id.to_string();
            let args = [lease.service.as_str(), lease.instance_id.as_str(), id.as_str()];
            let reply = run(&mut conn, &self.scripts.deregister, &self.keys, &args).await?;
            match reply.first().and_then(integer) {
                Some(1) => Ok(()),
                _ => Err(RegistryError::LeaseNotFound(lease.id)),
            }
        })
    }

    fn list<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Snapshot, RegistryError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let (records, revision) = listing(&mut conn, &self.scripts, &self.keys, service).await?;
            Ok(Snapshot {
                instances: records.into_values().map(|record| record.instance).collect(),
                revision,
            })
        })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
        after: Option<Revision>,
    ) -> BoxFuture<'a, Result<WatchStream, RegistryError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(256);
            let watcher = Watcher {
                registry: Arc::downgrade(self),
                client: self.client.clone(),
                keys: self.keys.clone(),
                scripts: self.scripts.clone(),
                service: service.to_owned(),
                tx,
                told: None,
                after,
            };
            tokio::spawn(watcher.run());
            Ok(WatchStream::new(rx))
        })
    }

    fn registrations<'a>(
        &'a self,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Registration>, RegistryError>> {
        Box::pin(async move {
            let services = match service {
                Some(service) => vec![service.to_owned()],
                None => self.services().await?,
            };
            let mut registrations = Vec::new();
            for service in services {
                registrations.extend(self.registrations_of(&service).await?);
            }
            Ok(registrations)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys { prefix: DEFAULT_PREFIX.to_owned() }
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let keys = keys();
        assert_eq!(keys.services(), "courier/services");
        assert_eq!(keys.rev("Greeter"), "courier/s/Greeter/rev");
        assert_eq!(keys.log("Greeter"), "courier/s/Greeter/log");
        assert_eq!(keys.instance("Greeter", "127.0.0.1:7000"), "courier/s/Greeter/i/127.0.0.1:7000");
        // An id may hold slashes: the service (which has none) ends at the
        // first slash after `s/`, so names stay unambiguous.
        assert_eq!(keys.instance("Greeter", "a/b"), "courier/s/Greeter/i/a/b");
        let other = Keys { prefix: "team-a:".to_owned() };
        assert_eq!(other.log("Greeter"), "team-a:s/Greeter/log");
    }

    #[test]
    fn the_scripts_use_the_same_names() {
        let source = lua(LUA_REGISTER);
        assert!(!source.contains('@'), "every placeholder is filled in");
        assert!(source.contains("PREFIX .. 's/' .. service .. '/'"));
        assert!(source.contains("deadlines = base .. 'deadlines'"));
        assert!(source.contains("instances = base .. 'i/'"));
        for body in [LUA_KEEP_ALIVE, LUA_DEREGISTER, LUA_REAP, LUA_LIST_PAGE] {
            assert!(!lua(body).contains('@'));
        }
    }

    #[test]
    fn urls_name_the_server_and_the_prefix() {
        let parse = |url: &str| parse_url(url);
        assert_eq!(
            parse("redis://127.0.0.1:6379"),
            Ok(Target { connection_url: "redis://127.0.0.1:6379".to_owned(), prefix: "courier/".to_owned() })
        );
        assert_eq!(
            parse("redis://h:1/3?prefix=team%2Fa%3A"),
            Ok(Target { connection_url: "redis://h:1/3".to_owned(), prefix: "team/a:".to_owned() })
        );
        assert_eq!(
            parse("redis://u:p%40ss@h/?protocol=resp3&prefix=x/"),
            Ok(Target {
                connection_url: "redis://u:p%40ss@h/?protocol=resp3".to_owned(),
                prefix: "x/".to_owned()
            })
        );
        // An empty prefix: a database of its own.
        assert_eq!(parse("redis://h?prefix=").map(|t| t.prefix), Ok(String::new()));
        for bad in
            ["etcd://h:1", "redis://", "redis:///0", "redis://:6379", "redis://u@", "redis://h?prefix=%zz"]
        {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("redis://h?prefix=a&prefix=b").is_err());
    }

    #[test]
    fn the_redis_crate_reads_the_rest_of_the_url() {
        let info = |url: &str| {
            let target = parse_url(url).expect("parsed");
            Client::open(target.connection_url.as_str()).map(|client| client.get_connection_info().clone())
        };
        let plain = info("redis://127.0.0.1").expect("valid");
        assert_eq!(plain.addr().to_string(), "127.0.0.1:6379");
        assert_eq!(plain.redis_settings().db(), 0);
        let full = info("redis://courier:s%3Acret@10.0.0.1:7000/5?prefix=p/").expect("valid");
        assert_eq!(full.addr().to_string(), "10.0.0.1:7000");
        assert_eq!(full.redis_settings().db(), 5);
        assert_eq!(full.redis_settings().username(), Some("courier"));
        assert_eq!(full.redis_settings().password(), Some("s:cret"));
        assert!(info("redis://h:1/notadb").is_err());
    }

    #[test]
    fn the_shown_url_has_no_password() {
        assert_eq!(redacted_url("redis://u:secret@h:1/2?prefix=x"), "redis://u@h:1/2?prefix=x");
        assert_eq!(redacted_url("redis://:secret@h:1"), "redis://h:1");
        assert_eq!(redacted_url("redis://u@h:1"), "redis://u@h:1");
        assert_eq!(redacted_url("redis://h:1/0"), "redis://h:1/0");
        // An `@` in the query is not userinfo.
        assert_eq!(redacted_url("redis://h:1?prefix=a@b"), "redis://h:1?prefix=a@b");
    }

    #[test]
    fn entry_ids_are_revisions() {
        assert_eq!(parse_entry_id("1839524994048000-0"), Some(1_839_524_994_048_000));
        assert_eq!(parse_entry_id("7-0"), Some(7));
        // What `XADD *` makes next to ours, and nonsense.
        assert_eq!(parse_entry_id("1839524994048000-1"), None);
        assert_eq!(parse_entry_id("x-0"), None);
        assert_eq!(parse_entry_id("12"), None);
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let fields = fields.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect();
        Value::Array(vec![bulk(id), Value::Array(fields)])
    }

    fn instance() -> Instance {
        Instance::new("Greeter", "127.0.0.1:7000").with_version("1.2.3").with_weight(2)
    }

    #[test]
    fn log_entries_decode_into_changes() {
        let json = serde_json::to_string(&instance()).expect("json");
        let add = entry(
            "5-0",
            &[
                ("op", "add"),
                ("id", "127.0.0.1:7000"),
                ("instance", &json),
                ("lease", "3"),
                ("registered", "99"),
            ],
        );
        let record = Record { instance: instance(), lease: 3, registered_unix_ms: 99 };
        assert_eq!(
            decode_entry("Greeter", &add),
            Some(Entry::Ours { revision: 5, start: false, change: Ok(Change::Add(record.clone())) })
        );
        assert_eq!(Change::Add(record).event(5), WatchEvent::Add { instance: instance(), revision: 5 });
        let remove = entry("6-0", &[("op", "remove"), ("id", "127.0.0.1:7000")]);
        assert_eq!(
            decode_entry("Greeter", &remove),
            Some(Entry::Ours {
                revision: 6,
                start: false,
                change: Ok(Change::Remove("127.0.0.1:7000".to_owned()))
            })
        );
        // RESP3 sends the fields as a map.
        let map = Value::Array(vec![
            bulk("7-0"),
            Value::Map(vec![(bulk("op"), bulk("remove")), (bulk("id"), bulk("x"))]),
        ]);
        assert_eq!(
            decode_entry("Greeter", &map),
            Some(Entry::Ours { revision: 7, start: false, change: Ok(Change::Remove("x".to_owned())) })
        );
    }

    #[test]
    fn unreadable_log_entries_are_reported_not_fatal() {
        let json = serde_json::to_string(&instance()).expect("json");
        let unreadable: &[&[(&str, &str)]] = &[
            &[("op", "add"), ("id", "127.0.0.1:7000"), ("instance", "not json")],
            &[("op", "add"), ("id", "127.0.0.1:7000")],
            // An instance under another id than its entry says.
            &[("op", "add"), ("id", "other"), ("instance", &json), ("lease", "1"), ("registered", "1")],
            &[
                ("op", "add"),
                ("id", "127.0.0.1:7000"),
                ("instance", &json),
                ("lease", "x"),
                ("registered", "1"),
            ],
            &[("op", "explode"), ("id", "x")],
            &[("id", "x")],
            &[("op", "remove")],
            &[],
        ];
        for fields in unreadable {
            match decode_entry("Greeter", &entry("9-0", fields)) {
                Some(Entry::Ours { revision: 9, change: Err(_), .. }) => {}
                other => panic!("{fields:?}: {other:?}"),
            }
        }
        // The same under another service is not that service's instance.
        let add = entry(
            "9-0",
            &[
                ("op", "add"),
                ("id", "127.0.0.1:7000"),
                ("instance", &json),
                ("lease", "1"),
                ("registered", "1"),
            ],
        );
        assert!(matches!(decode_entry("Other", &add), Some(Entry::Ours { change: Err(_), .. })));
        // Not our id: foreign, whatever it holds.
        assert_eq!(
            decode_entry("Greeter", &entry("9-1", &[("op", "remove"), ("id", "x")])),
            Some(Entry::Foreign { id: "9-1".to_owned() })
        );
        // Not an entry at all.
        assert_eq!(decode_entry("Greeter", &Value::Int(3)), None);
        assert_eq!(decode_entry("Greeter", &Value::Array(vec![bulk("1-0")])), None);
    }

    #[test]
    fn a_counter_starts_anywhere_after_zero_and_goes_on_by_one() {
        let first = entry("1839524994048000-0", &[("op", "remove"), ("id", "a"), ("start", "1")]);
        let Some(Entry::Ours { revision, start: true, .. }) = decode_entry("Greeter", &first) else {
            panic!("a start entry")
        };
        // A watcher that saw the service empty at 0 goes on from it...
        assert!(follows(0, revision, true));
        // ...but one that saw revisions before does not: the counter
        // started again (Redis lost it), so what it knew may be gone.
        assert!(!follows(17, revision, true));
        assert!(follows(17, 18, false));
        assert!(!follows(17, 19, false));
        assert!(!follows(0, 5, false), "trimmed: the log does not reach back to its start");
    }

    #[test]
    fn xread_replies_in_both_protocols() {
        let entries = Value::Array(vec![entry("3-0", &[("op", "remove"), ("id", "a")])]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("courier/s/Greeter/log"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("courier/s/Greeter/log"), entries)]);
        let expected =
            vec![Entry::Ours { revision: 3, start: false, change: Ok(Change::Remove("a".to_owned())) }];
        assert_eq!(read_entries("Greeter", &resp2), (expected.clone(), Some("3-0".to_owned())));
        assert_eq!(read_entries("Greeter", &resp3), (expected, Some("3-0".to_owned())));
        assert_eq!(read_entries("Greeter", &Value::Nil), (Vec::new(), None));
        // The last id is the last entry's, courier's or not.
        let mixed = Value::Array(vec![entry("3-0", &[("op", "remove"), ("id", "a")]), entry("3-1", &[])]);
        assert_eq!(range_entries("Greeter", &mixed).1, Some("3-1".to_owned()));
    }

    #[test]
    fn listing_pages_skip_what_is_not_an_instance() {
        let json = serde_json::to_string(&instance()).expect("json");
        let row = |id: &str, kind: &str, lease: &str, json: &str| {
            Value::Array(vec![bulk(id), bulk(kind), bulk(lease), bulk("42"), bulk(json)])
        };
        let reply = Value::Array(vec![
            Value::Int(12),
            bulk("0"),
            Value::Array(vec![
                row("127.0.0.1:7000", "hash", "4", &json),
                row("gone", "none", "", ""),
                row("junk", "string", "", ""),
                row("bad", "hash", "4", "{not json"),
                Value::Int(1),
            ]),
        ]);
        let page = decode_page("Greeter", &reply).expect("a page");
        assert_eq!(page.revision, 12);
        assert_eq!(page.cursor, "0");
        assert_eq!(page.records, vec![Record { instance: instance(), lease: 4, registered_unix_ms: 42 }]);
        assert_eq!(decode_page("Greeter", &Value::Nil), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%3a"), Ok("a/b:".to_owned()));
        assert_eq!(percent_decode("plain"), Ok("plain".to_owned()));
        assert!(percent_decode("%").is_err());
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%ff").is_err(), "not UTF-8");
    }
}
