//! The lease book of one `zookeeper://` registry handle, sans-IO: which
//! leases it granted, in which shared session, holding which node, until
//! when; and which session serves each TTL.
//!
//! ZooKeeper knows only sessions, and one session holds many leases here
//! (see the module docs of the backend), so what a lease is lives in this
//! book: an id of our own (from a counter the caller keeps), its session,
//! its node, and a deadline.
//! The deadlines are ordered (`(Instant, id)` in a `BTreeSet`), so the
//! expiring task finds what is due without scanning every lease, and a
//! renewal is two `O(log n)` steps.
//!
//! Sessions are counted per TTL: the current one of a TTL has a user count
//! (its leases, and the registrations reserving it while they write), and
//! leaves the book when it drops to zero, so it closes once nothing holds
//! it. A session that expired is forgotten as its TTL's current one at
//! once (new registrations get a new session), while the leases it held
//! stay until their next keep-alive or their deadline, whichever comes
//! first, so each is reported lost once and memory stays bounded by the
//! leases granted.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// One lease: a node held in a session.
#[derive(Clone, Debug)]
pub(super) struct Entry<S> {
    pub(super) id: u64,
    /// The TTL asked for: which session slot it counts in.
    pub(super) key: Duration,
    /// Which session of that TTL (our serial, not ZooKeeper's id, which
    /// the book does not know).
    pub(super) serial: u64,
    pub(super) session: S,
    /// The node's full path.
    pub(super) path: String,
    /// The lease's TTL: the session timeout negotiated.
    pub(super) ttl: Duration,
    pub(super) deadline: Instant,
    /// Past its deadline, its node not deleted yet (ZooKeeper did not
    /// answer): no lease any more, only the expiring task's work.
    pub(super) abandoned: bool,
}

/// The session serving one TTL.
#[derive(Debug)]
struct Slot<S> {
    serial: u64,
    session: S,
    /// Leases in it and registrations writing in it.
    users: usize,
}

/// A session reserved with [`Book::reserve`] or [`Book::install`].
#[derive(Debug)]
pub(super) struct Held<S> {
    /// The TTL asked for.
    pub(super) key: Duration,
    pub(super) serial: u64,
    pub(super) session: S,
}

/// What [`Book::grant`] did besides granting.
#[derive(Debug)]
pub(super) struct Granted<S> {
    /// The lease is now the first to fall due: wake the expiring task.
    pub(super) earliest: bool,
    /// An earlier lease of ours on the same path, now replaced (with its
    /// session, if that was its last user).
    pub(super) replaced: Option<(Entry<S>, Option<S>)>,
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct Book<S> {
    next_serial: u64,
    leases: HashMap<u64, Entry<S>>,
    /// The lease holding each node path.
    holders: HashMap<String, u64>,
    deadlines: BTreeSet<(Instant, u64)>,
    slots: HashMap<Duration, Slot<S>>,
}

impl<S: Clone> Book<S> {
    pub(super) fn new() -> Book<S> {
        Book {
            next_serial: 1,
            leases: HashMap::new(),
            holders: HashMap::new(),
            deadlines: BTreeSet::new(),
            slots: HashMap::new(),
        }
    }

    /// The current session of `key` if it is `alive`, reserved for one more
    /// user. A dead one is forgotten and returned as `Err` with its user
    /// count (for the log), so the caller starts a new one.
    pub(super) fn reserve(
        &mut self,
        key: Duration,
        alive: impl Fn(&S) -> bool,
    ) -> Result<Option<(u64, S)>, (S, usize)> {
        match self.slots.entry(key) {
            MapEntry::Vacant(_) => Ok(None),
            MapEntry::Occupied(mut current) if alive(&current.get().session) => {
                let slot = current.get_mut();
                slot.users += 1;
                Ok(Some((slot.serial, slot.session.clone())))
            }
            MapEntry::Occupied(dead) => {
                let slot = dead.remove();
                Err((slot.session, slot.users))
            }
        }
    }

    /// Make `session` the current one of `key`, reserved for one user; its
    /// serial. A previous one (dead, or raced) is no longer current: its
    /// leases keep it until they end.
    pub(super) fn install(&mut self, key: Duration, session: S) -> u64 {
        let serial = self.next_serial;
        self.next_serial += 1;
        self.slots.insert(key, Slot { serial, session, users: 1 });
        serial
    }

    /// One user less of session `serial` of `key`; the session if that was
    /// the last (it is out of the book: dropping it closes it).
    pub(super) fn release(&mut self, key: Duration, serial: u64) -> Option<S> {
        let slot = self.slots.get_mut(&key).filter(|slot| slot.serial == serial)?;
        slot.users = slot.users.saturating_sub(1);
        if slot.users > 0 {
            return None;
        }
        self.slots.remove(&key).map(|slot| slot.session)
    }

    /// Forget session `serial` of `key` (it expired): new registrations get
    /// a new one. Its user count if it was still current.
    pub(super) fn forget(&mut self, key: Duration, serial: u64) -> Option<usize> {
        if self.slots.get(&key).is_some_and(|slot| slot.serial == serial) {
            return self.slots.remove(&key).map(|slot| slot.users);
        }
        None
    }

    /// How many sessions are current (one per TTL in use).
    pub(super) fn sessions(&self) -> usize {
        self.slots.len()
    }

    /// Turn a reservation into lease `id` (the caller's counter) of `ttl`
    /// holding `path`, due at `now + ttl`.
    pub(super) fn grant(
        &mut self,
        id: u64,
        Held { key, serial, session }: Held<S>,
        path: String,
        ttl: Duration,
        now: Instant,
    ) -> Granted<S> {
        let replaced = self.take_holder(&path);
        let deadline = now + ttl;
        let earliest = self.deadlines.first().is_none_or(|&(first, _)| deadline < first);
        self.deadlines.insert((deadline, id));
        self.holders.insert(path.clone(), id);
        let entry = Entry { id, key, serial, session, path, ttl, deadline, abandoned: false };
        self.leases.insert(id, entry);
        Granted { earliest, replaced }
    }

    /// A node that a registration which failed may have written in `held`
    /// (ZooKeeper did not answer): book it as abandoned lease `id`, due
    /// `now`, so the expiring task deletes it (the shared session would
    /// keep it), unless a lease holds that path. Whether it is the first
    /// due.
    pub(super) fn orphan(&mut self, id: u64, held: Held<S>, path: String, now: Instant) -> bool {
        if self.holders.contains_key(&path) {
            return false;
        }
        let earliest = self.deadlines.first().is_none_or(|&(first, _)| now < first);
        self.deadlines.insert((now, id));
        self.holders.insert(path.clone(), id);
        let Held { key, serial, session } = held;
        let entry =
            Entry { id, key, serial, session, path, ttl: Duration::ZERO, deadline: now, abandoned: true };
        self.leases.insert(id, entry);
        earliest
    }

    /// Lease `id`, unless it ended.
    pub(super) fn get(&self, id: u64) -> Option<&Entry<S>> {
        self.leases.get(&id).filter(|entry| !entry.abandoned)
    }

    /// Renew lease `id`: due at `now` + its TTL. A copy of it, or `None`
    /// if it ended.
    pub(super) fn renew(&mut self, id: u64, now: Instant) -> Option<Entry<S>> {
        let entry = self.leases.get_mut(&id).filter(|entry| !entry.abandoned)?;
        self.deadlines.remove(&(entry.deadline, id));
        // Never earlier: the expiring task sleeps until the first deadline
        // and need not be woken for one that moved later.
        entry.deadline = entry.deadline.max(now + entry.ttl);
        self.deadlines.insert((entry.deadline, id));
        Some(entry.clone())
    }

    /// The lease holding `path`, if one does.
    pub(super) fn holder(&self, path: &str) -> Option<u64> {
        self.holders.get(path).copied()
    }

    /// End whichever lease holds `path` (its node was replaced): as
    /// [`Book::remove`].
    pub(super) fn take_holder(&mut self, path: &str) -> Option<(Entry<S>, Option<S>)> {
        let id = self.holder(path)?;
        self.remove(id)
    }

    /// End lease `id` (abandoned ones too): it, and its session if that was
    /// its last user.
    pub(super) fn remove(&mut self, id: u64) -> Option<(Entry<S>, Option<S>)> {
        let entry = self.leases.remove(&id)?;
        self.deadlines.remove(&(entry.deadline, id));
        if self.holders.get(&entry.path) == Some(&id) {
            self.holders.remove(&entry.path);
        }
        // Abandoned entries were released when they fell due.
        let closed = if entry.abandoned { None } else { self.release(entry.key, entry.serial) };
        Some((entry, closed))
    }

    /// The earliest deadline, if any lease is left.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// Up to `limit` leases due at `now`, earliest first: they are leases
    /// no more (renewing them fails), but stay in the book, abandoned, so
    /// their node is still known as ours until [`Book::finish`] or
    /// [`Book::retry`]. With them, the sessions that lost their last user.
    pub(super) fn take_due(&mut self, now: Instant, limit: usize) -> (Vec<Entry<S>>, Vec<S>) {
        let mut due = Vec::new();
        let mut closed = Vec::new();
        while due.len() < limit {
            let Some(&(deadline, id)) = self.deadlines.first() else { break };
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(entry) = self.leases.get_mut(&id) else { continue };
            let was_abandoned = entry.abandoned;
            entry.abandoned = true;
            let entry = entry.clone();
            if !was_abandoned && let Some(session) = self.release(entry.key, entry.serial) {
                closed.push(session);
            }
            due.push(entry);
        }
        (due, closed)
    }

    /// The node of abandoned lease `id` is gone (or not ours): forget it.
    pub(super) fn finish(&mut self, id: u64) {
        if self.leases.get(&id).is_some_and(|entry| entry.abandoned) {
            self.remove(id);
        }
    }

    /// Deleting the node of abandoned lease `id` failed: try again at `at`.
    pub(super) fn retry(&mut self, id: u64, at: Instant) {
        if let Some(entry) = self.leases.get_mut(&id).filter(|entry| entry.abandoned) {
            entry.deadline = at;
            self.deadlines.insert((at, id));
        }
    }

    /// How many leases (and abandoned nodes) are in the book.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(2);

    /// Grant lease `id` on `path` in the session of [`TTL`] (`"s1"`,
    /// started if there is none).
    fn grant(book: &mut Book<&'static str>, id: u64, path: &str, now: Instant) -> Granted<&'static str> {
        let serial = match book.reserve(TTL, |_| true) {
            Ok(Some((serial, _))) => serial,
            Ok(None) => book.install(TTL, "s1"),
            Err(_) => unreachable!("no dead session in these tests"),
        };
        book.grant(id, Held { key: TTL, serial, session: "s1" }, path.to_owned(), TTL, now)
    }

    fn ids(entries: &[Entry<&'static str>]) -> Vec<u64> {
        entries.iter().map(|entry| entry.id).collect()
    }

    #[test]
    fn leases_share_a_session_and_it_closes_with_the_last() {
        let mut book = Book::new();
        let now = Instant::now();
        grant(&mut book, 1, "/a", now);
        grant(&mut book, 2, "/b", now);
        assert_eq!(book.sessions(), 1, "one session for the TTL");
        // Another TTL, another session; unused, it closes.
        let other = book.install(Duration::from_secs(9), "s2");
        assert_eq!(book.sessions(), 2);
        assert_eq!(book.release(Duration::from_secs(9), other), Some("s2"));

        let (_, closed) = book.remove(1).expect("lease 1");
        assert_eq!(closed, None, "lease 2 still holds the session");
        let (_, closed) = book.remove(2).expect("lease 2");
        assert_eq!(closed, Some("s1"), "the last lease closes it");
        assert_eq!(book.sessions(), 0);
        assert!(book.remove(2).is_none());
        assert_eq!((book.len(), book.next_deadline()), (0, None));
    }

    #[test]
    fn only_the_lease_not_renewed_falls_due_in_deadline_order() {
        let mut book = Book::new();
        let start = Instant::now();
        assert!(grant(&mut book, 1, "/first", start).earliest);
        assert!(!grant(&mut book, 2, "/kept", start + Duration::from_millis(10)).earliest);
        grant(&mut book, 3, "/lapsing", start + Duration::from_millis(20));
        book.renew(1, start + Duration::from_secs(1)).expect("renewed");
        book.renew(2, start + Duration::from_secs(1)).expect("renewed");
        assert_eq!(book.next_deadline(), Some(start + Duration::from_millis(20) + TTL));
        let (due, closed) = book.take_due(start + TTL + Duration::from_millis(500), 10);
        assert_eq!(ids(&due), [3], "only the lease not renewed");
        assert!(closed.is_empty(), "the others hold the session");
        assert!(book.renew(3, start + TTL).is_none(), "it is no lease any more");
        assert!(book.get(3).is_none());
        assert_eq!(book.holder("/lapsing"), Some(3), "its node is still known as ours");
        book.finish(3);
        assert_eq!(book.holder("/lapsing"), None);
        assert_eq!(book.len(), 2);
        assert_eq!(book.next_deadline(), Some(start + Duration::from_secs(1) + TTL));
        // A renewal never moves a deadline earlier.
        book.renew(1, start).expect("renewed");
        assert_eq!(book.next_deadline(), Some(start + Duration::from_secs(1) + TTL));
    }

    #[test]
    fn the_last_lease_falling_due_closes_its_session_and_failed_deletions_are_retried() {
        let mut book = Book::new();
        let start = Instant::now();
        grant(&mut book, 1, "/only", start);
        let (due, closed) = book.take_due(start + TTL, 10);
        assert_eq!((ids(&due), closed), (vec![1], vec!["s1"]));
        book.retry(1, start + TTL + Duration::from_secs(1));
        assert_eq!(book.next_deadline(), Some(start + TTL + Duration::from_secs(1)));
        let (due, closed) = book.take_due(start + TTL + Duration::from_secs(1), 10);
        assert_eq!(ids(&due), [1], "again");
        assert!(closed.is_empty(), "released once");
        book.finish(1);
        assert_eq!((book.len(), book.next_deadline()), (0, None));
    }

    #[test]
    fn a_lease_on_the_same_path_replaces_the_earlier_one() {
        let mut book = Book::new();
        let now = Instant::now();
        grant(&mut book, 1, "/same", now);
        let new = grant(&mut book, 2, "/same", now);
        let (replaced, closed) = new.replaced.expect("lease 1 replaced");
        assert_eq!((replaced.id, closed), (1, None), "the new lease holds the session");
        assert!(book.renew(1, now).is_none(), "the old lease is gone");
        assert_eq!(book.holder("/same"), Some(2));
        assert_eq!(book.sessions(), 1);
        let (due, _) = book.take_due(now + TTL, 10);
        assert_eq!(ids(&due), [2], "one deadline left");
    }

    #[test]
    fn an_expired_session_is_forgotten_and_its_leases_end_one_by_one() {
        let mut book = Book::new();
        let now = Instant::now();
        grant(&mut book, 1, "/a", now);
        grant(&mut book, 2, "/b", now);
        let dead = book.reserve(TTL, |_| false);
        assert!(matches!(dead, Err(("s1", 2))), "{dead:?}");
        assert_eq!(book.sessions(), 0);
        let fresh = book.install(TTL, "s2");
        // The old session's leases release nothing of the new one's.
        let (_, closed) = book.remove(1).expect("lease 1");
        assert_eq!(closed, None);
        assert_eq!(book.sessions(), 1);
        assert!(book.get(2).is_some(), "reported lost when next kept alive, not before");
        assert_eq!(book.forget(TTL, fresh), Some(1));
        assert_eq!(book.forget(TTL, fresh), None);
    }

    #[test]
    fn a_node_a_failed_registration_may_have_written_is_due_at_once() {
        let mut book = Book::new();
        let now = Instant::now();
        grant(&mut book, 1, "/held", now);
        let held = || Held { key: TTL, serial: 1, session: "s1" };
        assert!(!book.orphan(2, held(), "/held".to_owned(), now), "a lease holds that path");
        assert!(book.orphan(3, held(), "/orphan".to_owned(), now), "due before the lease");
        assert!(book.get(3).is_none() && book.renew(3, now).is_none(), "no lease");
        let (due, closed) = book.take_due(now, 10);
        assert_eq!(ids(&due), [3]);
        assert!(closed.is_empty(), "it never counted as a user of the session");
        book.finish(3);
        assert_eq!((book.len(), book.sessions(), book.holder("/orphan")), (1, 1, None));
    }

    #[test]
    fn take_due_takes_at_most_its_limit() {
        let mut book = Book::new();
        let now = Instant::now();
        for id in 0..5 {
            grant(&mut book, id, &format!("/{id}"), now);
        }
        let (due, _) = book.take_due(now + TTL, 3);
        assert_eq!(ids(&due), [0, 1, 2], "earliest first (ties by id)");
        let (due, closed) = book.take_due(now + TTL, 3);
        assert_eq!((ids(&due), closed), (vec![3, 4], vec!["s1"]));
    }
}
