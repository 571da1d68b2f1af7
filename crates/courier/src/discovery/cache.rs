//! What a consumer knows about a service: the instances, kept up to date
//! from watch events and saved to a cache file.
//!
//! Rules, each learned from a registry client's bug:
//!
//! - **An empty or failed answer never wipes what we know** (Nacos #10209).
//!   A failed watch changes nothing. A full set (`Reset`) that is empty
//!   while we know instances is taken for a registry that lost its state,
//!   and ignored: calls keep going to the last known instances, and the
//!   passive health checks take out any that are really gone. Instances
//!   removed one by one (deregistered, expired) are removed. Instances kept
//!   that way are suspects: they go at the first sign the registry has
//!   state again (any addition), or after [`SUSPECT_FOR`], and are never
//!   written to the cache file.
//! - **A consumer can start while the registry is down**, from the cache
//!   file written the last time it knew the service (Dubbo's registry cache).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Instance, Revision, WatchEvent};

/// How long instances kept despite an empty answer are believed.
pub const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// A service's instances as known to one consumer.
#[derive(Debug, Default, Clone)]
pub struct ServiceView {
    instances: BTreeMap<String, Instance>,
    revision: Option<Revision>,
    /// Ids kept although the registry said there were none, and since when.
    suspects: BTreeSet<String>,
    suspect_since: Option<Instant>,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The set changed.
    Changed,
    /// Nothing changed (a duplicate or stale event).
    Unchanged,
    /// An empty full set was ignored to keep routing to known instances.
    EmptyIgnored,
}

impl ServiceView {
    /// A view starting from `instances` (say, from the cache file).
    pub fn from_instances(instances: Vec<Instance>, revision: Option<Revision>) -> ServiceView {
        ServiceView {
            instances: instances.into_iter().map(|i| (i.id.clone(), i)).collect(),
            revision,
            ..ServiceView::default()
        }
    }

    /// The instances the registry has confirmed (what the cache file keeps).
    pub fn confirmed(&self) -> Vec<Instance> {
        self.instances.values().filter(|i| !self.suspects.contains(&i.id)).cloned().collect()
    }

    /// Drop suspects kept longer than `SUSPECT_FOR`; returns whether any went.
    pub fn expire_suspects(&mut self, now: Instant) -> bool {
        match self.suspect_since {
            Some(since) if now.saturating_duration_since(since) >= SUSPECT_FOR => self.drop_suspects(),
            _ => false,
        }
    }

    fn drop_suspects(&mut self) -> bool {
        let suspects = std::mem::take(&mut self.suspects);
        self.suspect_since = None;
        let before = self.instances.len();
        self.instances.retain(|id, _| !suspects.contains(id));
        self.instances.len() != before
    }

    /// The revision last applied, to resume a watch from.
    pub fn revision(&self) -> Option<Revision> {
        self.revision
    }

    /// Every known instance.
    pub fn instances(&self) -> Vec<Instance> {
        self.instances.values().cloned().collect()
    }

    /// Apply one watch event.
    pub fn apply(&mut self, event: WatchEvent) -> Applied {
        let revision = event.revision();
        let applied = match event {
            WatchEvent::Reset { instances, .. } => {
                if instances.is_empty() && !self.instances.is_empty() {
                    if self.suspect_since.is_none() {
                        self.suspect_since = Some(Instant::now());
                        self.suspects = self.instances.keys().cloned().collect();
                    }
                    Applied::EmptyIgnored
                } else {
                    self.suspects.clear();
                    self.suspect_since = None;
                    let next: BTreeMap<String, Instance> =
                        instances.into_iter().map(|i| (i.id.clone(), i)).collect();
                    if next == self.instances {
                        Applied::Unchanged
                    } else {
                        self.instances = next;
                        Applied::Changed
                    }
                }
            }
            WatchEvent::Add { instance, .. } | WatchEvent::Update { instance, .. } => {
                // The registry has state again: suspects it did not mention
                // were indeed gone.
                self.suspects.remove(&instance.id);
                let dropped = self.drop_suspects();
                if self.instances.get(&instance.id) == Some(&instance) && !dropped {
                    Applied::Unchanged
                } else {
                    self.instances.insert(instance.id.clone(), instance);
                    Applied::Changed
                }
            }
            WatchEvent::Remove { id, .. } => {
                self.suspects.remove(&id);
                if self.instances.remove(&id).is_some() { Applied::Changed } else { Applied::Unchanged }
            }
        };
        self.revision = Some(revision);
        applied
    }
}

/// The cache file's contents.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    service: String,
    revision: Option<Revision>,
    instances: Vec<Instance>,
}

/// Where a service's cache file lives under `dir`.
pub fn cache_path(dir: &Path, service: &str) -> PathBuf {
    let safe: String = service
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    dir.join(format!("{safe}.json"))
}

/// The default cache directory for a registry URL:
/// `$XDG_CACHE_HOME/courier/registry/<url>` (or under `~/.cache`).
pub fn default_cache_dir(registry_url: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    let safe: String = registry_url
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    Some(base.join("courier").join("registry").join(safe))
}

/// Read a service's cache file, if there is a usable one.
pub fn load(path: &Path, service: &str) -> Option<ServiceView> {
    let text = std::fs::read(path).ok()?;
    let file: CacheFile = serde_json::from_slice(&text)
        .map_err(
            |err| tracing::warn!(path = %path.display(), %err, "ignoring an unreadable registry cache file"),
        )
        .ok()?;
    (file.service == service).then(|| ServiceView::from_instances(file.instances, file.revision))
}

/// Write a service's cache file atomically (a new file, then a rename).
pub fn save(path: &Path, service: &str, view: &ServiceView) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file =
        CacheFile { service: service.to_owned(), revision: view.revision, instances: view.instances() };
    let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let temporary = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance::new("Calc", format!("127.0.0.1:{}", 9000 + id.len())).with_id(id)
    }

    #[test]
    fn events_build_the_set_and_an_empty_reset_cannot_wipe_it() {
        let mut view = ServiceView::default();
        assert_eq!(
            view.apply(WatchEvent::Reset { instances: vec![instance("a")], revision: 1 }),
            Applied::Changed
        );
        assert_eq!(view.apply(WatchEvent::Add { instance: instance("bb"), revision: 2 }), Applied::Changed);
        assert_eq!(view.apply(WatchEvent::Add { instance: instance("bb"), revision: 2 }), Applied::Unchanged);
        assert_eq!(view.apply(WatchEvent::Reset { instances: vec![], revision: 3 }), Applied::EmptyIgnored);
        assert_eq!(view.instances().len(), 2, "an empty full set is not believed");
        assert_eq!(view.apply(WatchEvent::Remove { id: "a".into(), revision: 4 }), Applied::Changed);
        assert_eq!(view.apply(WatchEvent::Remove { id: "bb".into(), revision: 5 }), Applied::Changed);
        assert!(view.instances().is_empty(), "instances removed one by one are removed");
        assert_eq!(view.revision(), Some(5));
        // An empty set is fine when we know nothing.
        assert_eq!(view.apply(WatchEvent::Reset { instances: vec![], revision: 6 }), Applied::Unchanged);
    }

    #[test]
    fn instances_kept_despite_an_empty_answer_go_when_the_registry_has_state_again() {
        let mut view = ServiceView::from_instances(vec![instance("dead")], Some(1));
        assert_eq!(view.apply(WatchEvent::Reset { instances: vec![], revision: 2 }), Applied::EmptyIgnored);
        assert_eq!(view.instances().len(), 1, "kept for now");
        assert!(view.confirmed().is_empty(), "but not confirmed");
        assert_eq!(view.apply(WatchEvent::Add { instance: instance("live"), revision: 3 }), Applied::Changed);
        let ids: Vec<String> = view.instances().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, vec!["live".to_owned()], "the suspect went with the first addition");
    }

    #[test]
    fn suspects_expire_after_a_while() {
        let mut view = ServiceView::from_instances(vec![instance("a")], Some(1));
        view.apply(WatchEvent::Reset { instances: vec![], revision: 2 });
        assert!(!view.expire_suspects(Instant::now()));
        assert!(view.expire_suspects(Instant::now() + SUSPECT_FOR));
        assert!(view.instances().is_empty());
    }

    #[test]
    fn cache_file_names_keep_only_safe_characters() {
        let dir = Path::new("/cache");
        assert_eq!(cache_path(dir, "my-svc_v1.2"), dir.join("my-svc_v1.2.json"));
        assert_eq!(cache_path(dir, "a/../b c:d"), dir.join("a_.._b_c_d.json"));
    }

    #[test]
    fn the_default_cache_dir_is_under_the_user_cache() {
        // Read, not set: the test process's own environment decides.
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
        let dir = default_cache_dir("etcd://127.0.0.1:2379/a-b_c");
        assert_eq!(dir, base.map(|base| base.join("courier/registry/etcd___127.0.0.1_2379_a-b_c")));
    }

    #[test]
    fn updates_replace_an_instance_and_repeats_change_nothing() {
        let mut view = ServiceView::default();
        view.apply(WatchEvent::Add { instance: instance("a"), revision: 1 });
        let heavier = instance("a").with_weight(9);
        assert_eq!(
            view.apply(WatchEvent::Update { instance: heavier.clone(), revision: 2 }),
            Applied::Changed
        );
        assert_eq!(view.instances(), vec![heavier.clone()]);
        assert_eq!(
            view.apply(WatchEvent::Update { instance: heavier.clone(), revision: 3 }),
            Applied::Unchanged
        );
        assert_eq!(view.revision(), Some(3), "even an unchanging event moves the revision");
        assert_eq!(
            view.apply(WatchEvent::Reset { instances: vec![heavier.clone()], revision: 4 }),
            Applied::Unchanged
        );
        assert_eq!(view.apply(WatchEvent::Remove { id: "zz".into(), revision: 5 }), Applied::Unchanged);
        assert_eq!(
            view.apply(WatchEvent::Reset { instances: vec![instance("b")], revision: 6 }),
            Applied::Changed
        );
        assert_eq!(view.instances(), vec![instance("b")]);
    }

    #[test]
    fn a_repeated_instance_still_clears_the_suspects() {
        let mut view = ServiceView::from_instances(vec![instance("a"), instance("bb")], Some(1));
        assert_eq!(view.apply(WatchEvent::Reset { instances: vec![], revision: 2 }), Applied::EmptyIgnored);
        // The registry is back and mentions `a` as we knew it: `bb` goes.
        assert_eq!(view.apply(WatchEvent::Add { instance: instance("a"), revision: 3 }), Applied::Changed);
        assert_eq!(view.instances(), vec![instance("a")]);
        assert_eq!(view.confirmed(), vec![instance("a")]);
    }

    #[test]
    fn a_second_empty_answer_does_not_restart_the_suspicion_clock() {
        let mut view = ServiceView::from_instances(vec![instance("a")], Some(1));
        view.apply(WatchEvent::Reset { instances: vec![], revision: 2 });
        let since = view.suspect_since.expect("suspected");
        view.apply(WatchEvent::Reset { instances: vec![], revision: 3 });
        assert_eq!(view.suspect_since, Some(since));
        assert!(!view.expire_suspects(since + SUSPECT_FOR - Duration::from_millis(1)));
        assert_eq!(view.instances().len(), 1);
        assert!(view.expire_suspects(since + SUSPECT_FOR + Duration::from_millis(1)));
        assert!(view.instances().is_empty());
        assert!(!view.expire_suspects(since + 2 * SUSPECT_FOR), "nothing left to expire");
    }

    #[test]
    fn a_non_empty_full_set_ends_the_suspicion() {
        let mut view = ServiceView::from_instances(vec![instance("a")], Some(1));
        view.apply(WatchEvent::Reset { instances: vec![], revision: 2 });
        assert_eq!(
            view.apply(WatchEvent::Reset { instances: vec![instance("a")], revision: 3 }),
            Applied::Unchanged
        );
        assert_eq!(view.confirmed(), vec![instance("a")], "confirmed again");
        assert!(!view.expire_suspects(Instant::now() + 2 * SUSPECT_FOR));
    }

    #[test]
    fn a_removed_suspect_is_no_longer_suspected() {
        let mut view = ServiceView::from_instances(vec![instance("a"), instance("bb")], Some(1));
        view.apply(WatchEvent::Reset { instances: vec![], revision: 2 });
        assert_eq!(view.apply(WatchEvent::Remove { id: "a".into(), revision: 3 }), Applied::Changed);
        assert!(!view.suspects.contains("a"));
        assert_eq!(view.instances(), vec![instance("bb")]);
    }

    #[test]
    fn save_creates_the_directory_and_a_missing_file_loads_nothing() {
        let dir = std::env::temp_dir().join(format!("courier-cache-test-dir-{}", std::process::id()));
        let path = cache_path(&dir.join("nested"), "Calc");
        assert!(load(&path, "Calc").is_none());
        let view = ServiceView::from_instances(vec![instance("a")], None);
        save(&path, "Calc", &view).expect("save");
        let loaded = load(&path, "Calc").expect("load");
        assert_eq!((loaded.instances(), loaded.revision()), (vec![instance("a")], None));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cache_file_round_trips_and_rejects_other_services() {
        let dir = std::env::temp_dir().join(format!("courier-cache-test-{}", std::process::id()));
        let path = cache_path(&dir, "Calc/weird name");
        assert!(path.file_name().is_some_and(|n| n.to_string_lossy() == "Calc_weird_name.json"));
        let view = ServiceView::from_instances(vec![instance("a"), instance("bb")], Some(42));
        save(&path, "Calc", &view).expect("save");
        let loaded = load(&path, "Calc").expect("load");
        assert_eq!((loaded.instances().len(), loaded.revision()), (2, Some(42)));
        assert!(load(&path, "Other").is_none());
        std::fs::write(&path, b"{not json").expect("write");
        assert!(load(&path, "Calc").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
