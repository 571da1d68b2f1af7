//! Sans-IO: one service's providers as successive reads of its
//! `providers` node, turned into [`WatchEvent`]s with revisions derived
//! from ZooKeeper's zxids, and a bounded log of them to resume watches
//! from.
//!
//! ZooKeeper keeps no history and its watches are one-shot: each read
//! (the children, the parent's `Stat`, each new child's `czxid`) is
//! compared with the previous one. A change is emitted at a revision only
//! when the state at that revision is provably what ZooKeeper held at that
//! zxid, so a watch resumed from any revision this log (or another
//! process's) emitted gets exactly the changes since:
//!
//! - the parent's `cversion` counts every child created or deleted; when
//!   it moved by exactly the number of children that appeared and
//!   disappeared between two reads, nothing came and went unseen;
//! - a new child's `czxid` is the zxid of its creation, exact;
//! - a deletion has no zxid of its own, but when it is the last change in
//!   the window, the parent's `pzxid` is its zxid.
//!
//! Creations (grouped by transaction) followed by at most one deletion
//! are therefore emitted one by one at their zxids. Any other window is
//! emitted as one change at the parent's `pzxid` if it changed one
//! instance only (a re-registration, which courier writes as one
//! transaction), the revisions inside it being claimed by nobody; and as a
//! complete [`WatchEvent::Reset`] otherwise, after which the log starts
//! over (resuming from before it gets a `Reset`). So does anything that
//! breaks continuity: the parent deleted and created again, or counters
//! going backwards (a ZooKeeper restored from an old snapshot).

use std::collections::{BTreeMap, VecDeque};

use crate::discovery::{Instance, Revision, WatchEvent};

/// The `providers` node's stat, what continuity is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parent {
    /// The zxid that created it (it was not deleted and created again if
    /// this is unchanged).
    pub(crate) czxid: i64,
    /// The zxid of the last child created or deleted.
    pub(crate) pzxid: i64,
    /// How many children were created or deleted, ever.
    pub(crate) cversion: i32,
}

/// One child of the `providers` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Child {
    /// The zxid that created it.
    pub(crate) czxid: i64,
    /// The instance it names; `None` for garbage and providers Dubbo would
    /// not call either (they still count as children).
    pub(crate) instance: Option<Instance>,
}

/// One read of the `providers` node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Read {
    /// `None` when the node does not exist (nothing registered yet).
    pub(crate) parent: Option<Parent>,
    /// Every child by node name.
    pub(crate) children: BTreeMap<String, Child>,
}

impl Read {
    /// The revision this read is at: the parent's `pzxid` (0 while it does
    /// not exist).
    pub(crate) fn revision(&self) -> Revision {
        self.parent.map_or(0, |parent| zxid(parent.pzxid))
    }
}

/// A zxid as a revision (zxids are never negative).
pub(crate) fn zxid(zxid: i64) -> Revision {
    u64::try_from(zxid).unwrap_or(0)
}

/// The instances a set of children names: one per id, the newest node
/// (highest `czxid`) winning, so a provider that restarted before its old
/// session expired is its new self.
fn project(children: &BTreeMap<String, Child>) -> BTreeMap<String, Instance> {
    let mut newest: BTreeMap<String, (i64, &Instance)> = BTreeMap::new();
    for child in children.values() {
        let Some(instance) = &child.instance else { continue };
        let entry = newest.entry(instance.id.clone()).or_insert((child.czxid, instance));
        if child.czxid > entry.0 {
            *entry = (child.czxid, instance);
        }
    }
    newest.into_iter().map(|(id, (_, instance))| (id, instance.clone())).collect()
}

/// The changes from `before` to `after`, each at `revision`.
fn diff(
    before: &BTreeMap<String, Instance>,
    after: &BTreeMap<String, Instance>,
    revision: Revision,
) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    for (id, instance) in after {
        match before.get(id) {
            None => events.push(WatchEvent::Add { instance: instance.clone(), revision }),
            Some(old) if old != instance => {
                events.push(WatchEvent::Update { instance: instance.clone(), revision })
            }
            Some(_) => {}
        }
    }
    for id in before.keys().filter(|id| !after.contains_key(*id)) {
        events.push(WatchEvent::Remove { id: id.clone(), revision });
    }
    events
}

/// What a watcher needs to catch up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Catchup {
    /// These changes, in order (possibly none).
    Events(Vec<WatchEvent>),
    /// The complete set: the watcher's position is not provable.
    Reset { instances: Vec<Instance>, revision: Revision },
}

/// Where a watcher is: a revision within one run of the log (`epoch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) epoch: u64,
    pub(crate) revision: Revision,
}

/// A service's last read and the changes that led to it.
#[derive(Debug)]
pub(crate) struct History {
    /// The last read, `None` before the first.
    read: Option<Read>,
    /// Its instances.
    instances: BTreeMap<String, Instance>,
    /// The changes after `base`, in order, at most `limit`.
    log: VecDeque<WatchEvent>,
    /// Every change after this revision (up to the last read's) is in
    /// `log`.
    base: Revision,
    /// Open intervals of revisions, within the log, whose states nobody
    /// claims (inside a window emitted as one change).
    unclaimed: Vec<(Revision, Revision)>,
    /// Bumped whenever the log starts over (a `Reset`).
    epoch: u64,
    limit: usize,
}

impl History {
    /// An empty history keeping at most `limit` changes.
    pub(crate) fn new(limit: usize) -> History {
        History {
            read: None,
            instances: BTreeMap::new(),
            log: VecDeque::new(),
            base: 0,
            unclaimed: Vec::new(),
            epoch: 0,
            limit: limit.max(1),
        }
    }

    /// The revision of the last read.
    pub(crate) fn revision(&self) -> Revision {
        self.read.as_ref().map_or(0, Read::revision)
    }

    /// The instances as of the last read, by id.
    pub(crate) fn instances(&self) -> Vec<Instance> {
        self.instances.values().cloned().collect()
    }

    /// The children of the last read, to tell new ones (whose `czxid` must
    /// be read) from known ones.
    pub(crate) fn children(&self) -> Option<&BTreeMap<String, Child>> {
        self.read.as_ref().map(|read| &read.children)
    }

    /// The position of a watcher that saw everything up to now.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor { epoch: self.epoch, revision: self.revision() }
    }

    /// The position of a watcher resuming after `revision`, if the log can
    /// prove what it holds: a revision of this run, not inside a window
    /// nobody claims.
    pub(crate) fn resume_at(&self, revision: Revision) -> Option<Cursor> {
        let provable = self.read.is_some()
            && self.base <= revision
            && revision <= self.revision()
            && !self.unclaimed.iter().any(|&(low, high)| low < revision && revision < high);
        provable.then_some(Cursor { epoch: self.epoch, revision })
    }

    /// What a watcher at `cursor` needs to be up to date.
    pub(crate) fn since(&self, cursor: Cursor) -> Catchup {
        if cursor.epoch != self.epoch || cursor.revision < self.base {
            return Catchup::Reset { instances: self.instances(), revision: self.revision() };
        }
        Catchup::Events(self.log.iter().filter(|event| event.revision() > cursor.revision).cloned().collect())
    }

    /// Take in a new read. Returns the changes it made (a `Reset` first
    /// when the log started over), for logging.
    pub(crate) fn commit(&mut self, read: Read) -> Vec<WatchEvent> {
        let Some(previous) = self.read.take() else {
            // The first read: nothing to compare with; resuming from before
            // it is not provable.
            self.instances = project(&read.children);
            self.base = read.revision();
            self.read = Some(read);
            return Vec::new();
        };
        match self.changes(&previous, &read) {
            Some(steps) => {
                let mut emitted = Vec::new();
                for (step, unclaimed_since) in steps {
                    if let Some(low) = unclaimed_since {
                        self.unclaimed.push((low, step.revision()));
                    }
                    self.push(step.clone());
                    emitted.push(step);
                }
                if let Some(low) = self.unclaimed_window(&previous, &read, &emitted) {
                    self.unclaimed.push((low, read.revision()));
                }
                self.instances = project(&read.children);
                self.read = Some(read);
                emitted
            }
            None => {
                // Start over: a complete set at this read's revision.
                self.instances = project(&read.children);
                self.epoch += 1;
                self.log.clear();
                self.unclaimed.clear();
                self.base = read.revision();
                let reset = WatchEvent::Reset { instances: self.instances(), revision: read.revision() };
                self.read = Some(read);
                vec![reset]
            }
        }
    }

    /// A window in which changes happened but whose states are not all
    /// claimed by an event at an exact revision: when no event was emitted
    /// for a window that was not exact (say, a garbage child came and
    /// went), the states inside it are unknown.
    fn unclaimed_window(&self, previous: &Read, read: &Read, emitted: &[WatchEvent]) -> Option<Revision> {
        let window = Window::of(previous, read)?;
        (!window.exact && emitted.is_empty() && read.revision() > previous.revision())
            .then_some(previous.revision())
    }

    fn push(&mut self, event: WatchEvent) {
        self.log.push_back(event);
        while self.log.len() > self.limit {
            if let Some(dropped) = self.log.pop_front() {
                self.base = dropped.revision();
            }
        }
        let base = self.base;
        self.unclaimed.retain(|&(_, high)| high > base);
    }

    /// The changes from `previous` to `read`, each with the start of the
    /// unclaimed window before it (if any); `None` when they cannot be told
    /// apart (start over with a `Reset`).
    fn changes(&self, previous: &Read, read: &Read) -> Option<Vec<(WatchEvent, Option<Revision>)>> {
        let window = Window::of(previous, read)?;
        let mut children = previous.children.clone();
        let mut instances = project(&children);
        let mut claimed = previous.revision();
        let mut out = Vec::new();
        for step in window.steps() {
            if step.revision <= claimed {
                // Not after what was already claimed: nothing to trust.
                return None;
            }
            for name in &step.deleted {
                children.remove(*name);
            }
            for name in &step.created {
                children.insert((*name).to_owned(), read.children.get(*name)?.clone());
            }
            let after = project(&children);
            let mut events = diff(&instances, &after, step.revision);
            match events.len() {
                0 => {}
                1 => {
                    let unclaimed_since = (!step.exact).then_some(claimed);
                    out.extend(events.pop().map(|event| (event, unclaimed_since)));
                }
                _ => return None,
            }
            instances = after;
            claimed = step.revision;
        }
        Some(out)
    }
}

/// What changed between two reads of the `providers` node.
struct Window<'a> {
    created: Vec<(&'a str, i64)>,
    deleted: Vec<&'a str>,
    /// Whether every child created or deleted in the window is accounted
    /// for (the `cversion` moved by exactly that much).
    exact: bool,
    pzxid: Revision,
}

/// Changes applied together, at one revision.
struct Step<'a> {
    revision: Revision,
    created: Vec<&'a str>,
    deleted: Vec<&'a str>,
    /// Whether the state at `revision` and at every revision since the
    /// last step is known exactly.
    exact: bool,
}

impl<'a> Window<'a> {
    /// The window between `previous` and `read`; `None` if they are not
    /// two states of one node (continuity lost).
    fn of(previous: &'a Read, read: &'a Read) -> Option<Window<'a>> {
        let counted = match (previous.parent, read.parent) {
            (None, None) => 0,
            // Created since: every child of it is new.
            (None, Some(now)) => i64::from(now.cversion),
            (Some(then), Some(now)) => {
                if then.czxid != now.czxid || now.pzxid < then.pzxid || now.cversion < then.cversion {
                    return None;
                }
                i64::from(now.cversion) - i64::from(then.cversion)
            }
            // Deleted: its children went at unknown zxids.
            (Some(_), None) => return None,
        };
        let created: Vec<(&str, i64)> = read
            .children
            .iter()
            .filter(|(name, _)| !previous.children.contains_key(*name))
            .map(|(name, child)| (name.as_str(), child.czxid))
            .collect();
        let deleted: Vec<&str> = previous
            .children
            .keys()
            .filter(|name| !read.children.contains_key(*name))
            .map(String::as_str)
            .collect();
        let changed = i64::try_from(created.len() + deleted.len()).unwrap_or(i64::MAX);
        Some(Window { exact: counted == changed, created, deleted, pzxid: read.revision() })
    }

    /// The window as steps: each creation transaction at its zxid, then a
    /// deletion at `pzxid`, when provable; else everything at `pzxid`.
    fn steps(self) -> Vec<Step<'a>> {
        if self.created.is_empty() && self.deleted.is_empty() {
            return Vec::new();
        }
        let last_is_the_deletion =
            self.deleted.len() == 1 && self.created.iter().all(|&(_, czxid)| zxid(czxid) < self.pzxid);
        if self.exact && (self.deleted.is_empty() || last_is_the_deletion) {
            let mut by_transaction: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
            for &(name, czxid) in &self.created {
                by_transaction.entry(czxid).or_default().push(name);
            }
            let mut steps: Vec<Step<'a>> = by_transaction
                .into_iter()
                .map(|(czxid, created)| Step {
                    revision: zxid(czxid),
                    created,
                    deleted: Vec::new(),
                    exact: true,
                })
                .collect();
            if !self.deleted.is_empty() {
                steps.push(Step {
                    revision: self.pzxid,
                    created: Vec::new(),
                    deleted: self.deleted,
                    exact: true,
                });
            }
            return steps;
        }
        vec![Step {
            revision: self.pzxid,
            created: self.created.into_iter().map(|(name, _)| name).collect(),
            deleted: self.deleted,
            exact: false,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, weight: u32) -> Instance {
        Instance::new("S", format!("{id}:1")).with_id(id).with_weight(weight)
    }

    /// A child: its node name, `czxid`, and the id and weight it names
    /// (`None`: garbage).
    type Named<'a> = (&'a str, i64, Option<(&'a str, u32)>);

    /// A read of `children` under a parent with `pzxid` and `cversion`.
    fn read(pzxid: i64, cversion: i32, children: &[Named<'_>]) -> Read {
        Read {
            parent: Some(Parent { czxid: 1, pzxid, cversion }),
            children: children
                .iter()
                .map(|&(name, czxid, id)| {
                    let instance = id.map(|(id, weight)| instance(id, weight));
                    (name.to_owned(), Child { czxid, instance })
                })
                .collect(),
        }
    }

    fn describe(events: &[WatchEvent]) -> Vec<String> {
        events
            .iter()
            .map(|event| match event {
                WatchEvent::Reset { instances, revision } => {
                    let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
                    format!("reset {ids:?} @{revision}")
                }
                WatchEvent::Add { instance, revision } => format!("add {} @{revision}", instance.id),
                WatchEvent::Update { instance, revision } => format!("update {} @{revision}", instance.id),
                WatchEvent::Remove { id, revision } => format!("remove {id} @{revision}"),
            })
            .collect()
    }

    fn events(catchup: Catchup) -> Vec<String> {
        match catchup {
            Catchup::Events(events) => describe(&events),
            Catchup::Reset { instances, revision } => describe(&[WatchEvent::Reset { instances, revision }]),
        }
    }

    #[test]
    fn one_change_per_read_is_emitted_at_its_zxid() {
        let mut history = History::new(100);
        assert!(history.commit(read(10, 1, &[("a", 10, Some(("a", 1)))])).is_empty(), "the first read");
        let start = history.cursor();
        assert_eq!(
            describe(&history.commit(read(12, 2, &[("a", 10, Some(("a", 1))), ("b", 12, Some(("b", 1)))]))),
            ["add b @12"]
        );
        assert_eq!(describe(&history.commit(read(15, 3, &[("b", 12, Some(("b", 1)))]))), ["remove a @15"]);
        assert_eq!(events(history.since(start)), ["add b @12", "remove a @15"]);
        assert_eq!(events(history.since(history.resume_at(12).expect("provable"))), ["remove a @15"]);
        assert_eq!(history.resume_at(9), None, "before the first read");
        assert_eq!(history.resume_at(16), None, "after the last read");
        assert_eq!(history.resume_at(13).map(|c| c.revision), Some(13), "between exact changes");
    }

    #[test]
    fn creations_then_one_deletion_are_ordered_by_zxid() {
        let mut history = History::new(100);
        history.commit(read(10, 1, &[("a", 10, Some(("a", 1)))]));
        // b created at 11, a deleted, c created at 14, a garbage child at 12,
        // and c's deletion last... no: one deletion, and pzxid is c's: the
        // deletion's place is unknown.
        let batched = read(14, 5, &[("b", 11, Some(("b", 1))), ("g", 12, None), ("c", 14, Some(("c", 1)))]);
        let emitted = history.commit(batched);
        assert!(matches!(emitted.as_slice(), [WatchEvent::Reset { .. }]), "{emitted:?}");

        let mut history = History::new(100);
        history.commit(read(10, 1, &[("a", 10, Some(("a", 1)))]));
        // b at 11, c at 13, then a deleted at 16 (the last change: pzxid).
        let batched = read(16, 4, &[("b", 11, Some(("b", 1))), ("c", 13, Some(("c", 1)))]);
        assert_eq!(describe(&history.commit(batched)), ["add b @11", "add c @13", "remove a @16"]);
    }

    #[test]
    fn a_reregistration_in_one_transaction_is_one_update() {
        let mut history = History::new(100);
        history.commit(read(10, 1, &[("a-old", 10, Some(("a", 1)))]));
        // Deleted and created in one multi: pzxid is the create's zxid.
        let emitted = history.commit(read(20, 3, &[("a-new", 20, Some(("a", 7)))]));
        assert_eq!(describe(&emitted), ["update a @20"]);
        assert_eq!(history.resume_at(15), None, "inside a window nobody claims");
        assert!(history.resume_at(10).is_some() && history.resume_at(20).is_some());
    }

    #[test]
    fn the_newest_node_of_an_id_wins() {
        let mut history = History::new(100);
        history.commit(read(10, 1, &[("a-1", 10, Some(("a", 1)))]));
        // A restarted provider registers again before its old session ends.
        let emitted =
            history.commit(read(12, 2, &[("a-1", 10, Some(("a", 1))), ("a-2", 12, Some(("a", 5)))]));
        assert_eq!(describe(&emitted), ["update a @12"]);
        assert_eq!(history.instances()[0].weight, 5);
        // The old session expires: nothing changes for consumers.
        assert!(history.commit(read(14, 3, &[("a-2", 12, Some(("a", 5)))])).is_empty());
    }

    #[test]
    fn unprovable_windows_reset_and_start_the_log_over() {
        let mut history = History::new(100);
        history.commit(read(10, 2, &[("a", 9, Some(("a", 1))), ("b", 10, Some(("b", 1)))]));
        let before = history.cursor();
        // Two deletions: their order is unknown.
        let emitted = history.commit(read(15, 4, &[]));
        assert_eq!(describe(&emitted), ["reset [] @15"]);
        assert_eq!(events(history.since(before)), ["reset [] @15"], "an old cursor gets the set");
        assert_eq!(history.resume_at(10), None);
        // Something came and went unseen (cversion moved by 3 for 1 change).
        let mut history = History::new(100);
        history.commit(read(10, 1, &[("a", 10, Some(("a", 1)))]));
        let emitted = history.commit(read(20, 4, &[("a", 10, Some(("a", 1))), ("c", 20, Some(("c", 1)))]));
        assert_eq!(describe(&emitted), ["add c @20"], "one change: emitted at pzxid");
        assert_eq!(history.resume_at(15), None, "but nothing inside is claimed");
        // Two instances changed in one transaction: a Reset.
        let emitted = history.commit(read(
            30,
            6,
            &[
                ("a", 10, Some(("a", 1))),
                ("c", 20, Some(("c", 1))),
                ("d", 30, Some(("d", 1))),
                ("e", 30, Some(("e", 1))),
            ],
        ));
        assert!(
            matches!(emitted.as_slice(), [WatchEvent::Reset { instances, revision: 30 }] if instances.len() == 4),
            "{emitted:?}"
        );
    }

    #[test]
    fn continuity_is_lost_when_the_node_is_replaced_or_goes_back() {
        for replaced in [
            Read { parent: Some(Parent { czxid: 2, pzxid: 12, cversion: 2 }), ..Read::default() },
            Read { parent: Some(Parent { czxid: 1, pzxid: 5, cversion: 2 }), ..Read::default() },
            Read { parent: Some(Parent { czxid: 1, pzxid: 12, cversion: 0 }), ..Read::default() },
            Read::default(),
        ] {
            let mut history = History::new(100);
            history.commit(read(10, 1, &[("a", 10, Some(("a", 1)))]));
            let emitted = history.commit(replaced.clone());
            assert!(
                matches!(emitted.as_slice(), [WatchEvent::Reset { instances, .. }] if instances.is_empty()),
                "{replaced:?}: {emitted:?}"
            );
        }
    }

    #[test]
    fn a_node_created_since_counts_all_its_children() {
        let mut history = History::new(100);
        history.commit(Read::default());
        assert_eq!(history.revision(), 0);
        let emitted = history.commit(Read {
            parent: Some(Parent { czxid: 5, pzxid: 7, cversion: 2 }),
            children: [("a", 6), ("b", 7)]
                .map(|(name, czxid)| (name.to_owned(), Child { czxid, instance: Some(instance(name, 1)) }))
                .into(),
        });
        assert_eq!(describe(&emitted), ["add a @6", "add b @7"]);
    }

    #[test]
    fn garbage_children_count_but_are_not_instances() {
        let mut history = History::new(100);
        history.commit(read(10, 1, &[("a", 10, Some(("a", 1)))]));
        assert!(history.commit(read(11, 2, &[("a", 10, Some(("a", 1))), ("junk", 11, None)])).is_empty());
        assert_eq!(
            describe(&history.commit(read(
                12,
                3,
                &[("a", 10, Some(("a", 1))), ("junk", 11, None), ("b", 12, Some(("b", 1)))]
            ))),
            ["add b @12"]
        );
        assert!(history.resume_at(11).is_some(), "the garbage's arrival is exact too");
    }

    #[test]
    fn the_log_is_bounded_and_old_cursors_get_a_reset() {
        let mut history = History::new(2);
        history.commit(read(10, 0, &[]));
        let start = history.cursor();
        let mut children = Vec::new();
        let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            let czxid = 11 + i64::try_from(i).expect("small");
            children.push((name.as_str(), czxid, Some((name.as_str(), 1))));
            history.commit(read(czxid, i32::try_from(i + 1).expect("small"), &children));
        }
        assert!(
            matches!(history.since(start), Catchup::Reset { ref instances, revision: 15 } if instances.len() == 5)
        );
        assert_eq!(history.resume_at(12), None);
        assert_eq!(events(history.since(history.resume_at(13).expect("kept"))), ["add n3 @14", "add n4 @15"]);
    }
}
