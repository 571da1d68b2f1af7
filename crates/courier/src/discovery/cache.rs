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
//!   removed one by one (deregistered, expired) are removed.
//! - **A consumer can start while the registry is down**, from the cache
//!   file written the last time it knew the service (Dubbo's registry cache).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Instance, Revision, WatchEvent};

/// A service's instances as known to one consumer.
#[derive(Debug, Default, Clone)]
pub struct ServiceView {
    instances: BTreeMap<String, Instance>,
    revision: Option<Revision>,
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
        ServiceView { instances: instances.into_iter().map(|i| (i.id.clone(), i)).collect(), revision }
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
                    Applied::EmptyIgnored
                } else {
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
                if self.instances.get(&instance.id) == Some(&instance) {
                    Applied::Unchanged
                } else {
                    self.instances.insert(instance.id.clone(), instance);
                    Applied::Changed
                }
            }
            WatchEvent::Remove { id, .. } => {
                if self.instances.remove(&id).is_some() {
                    Applied::Changed
                } else {
                    Applied::Unchanged
                }
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
