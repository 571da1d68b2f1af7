//! A consistent-hash ring with virtual nodes, weighted.

/// Virtual nodes per unit of weight: enough for an even spread.
const POINTS_PER_WEIGHT: u32 = 64;

/// The ring of a set of instances, identified by their ids.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    /// (point, candidate index), sorted by point.
    points: Vec<(u64, usize)>,
}

/// FNV-1a, then a 64-bit finaliser: stable across processes and versions,
/// so every consumer maps a key to the same instance.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

impl Ring {
    /// A ring over `(id, weight)` pairs, in candidate order.
    pub(crate) fn new<'a>(members: impl IntoIterator<Item = (&'a str, u32)>) -> Ring {
        let mut points = Vec::new();
        for (index, (id, weight)) in members.into_iter().enumerate() {
            for replica in 0..weight.clamp(1, 100) * POINTS_PER_WEIGHT {
                points.push((hash(format!("{id}#{replica}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The candidates in ring order from `key`, each once.
    #[cfg(test)]
    pub(crate) fn walk(&self, key: u64, candidates: usize) -> Vec<usize> {
        self.walk_where(key, candidates, candidates, |_| true)
    }

    /// The first `limit` candidates (of `candidates` in all) in ring order
    /// from `key` that `wanted` accepts, each once. Stops as soon as it has
    /// them, so a call pays for the few instances it may try, not the ring.
    pub(crate) fn walk_where(
        &self,
        key: u64,
        candidates: usize,
        limit: usize,
        wanted: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let start = self.points.partition_point(|(point, _)| *point < key);
        let mut seen = vec![false; candidates];
        let mut order = Vec::with_capacity(limit.min(candidates));
        for i in 0..self.points.len() {
            let (_, index) = self.points[(start + i) % self.points.len()];
            if index < candidates && !seen[index] {
                seen[index] = true;
                if wanted(index) {
                    order.push(index);
                    if order.len() == limit {
                        break;
                    }
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_land_on_the_same_instance_and_few_move_when_one_is_added() {
        let three = Ring::new([("a", 1), ("b", 1), ("c", 1)]);
        let four = Ring::new([("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        let keys: Vec<u64> = (0..10_000u32).map(|k| hash(&k.to_be_bytes())).collect();
        let mut per_instance = [0; 3];
        let mut moved = 0;
        for &key in &keys {
            let before = three.walk(key, 3)[0];
            assert_eq!(three.walk(key, 3)[0], before, "stable");
            per_instance[before] += 1;
            if four.walk(key, 4)[0] != before {
                moved += 1;
            }
        }
        assert!(per_instance.iter().all(|&n| (2_700..4_000).contains(&n)), "{per_instance:?}");
        // Ideally a quarter of the keys move to the new instance.
        assert!((1_800..3_200).contains(&moved), "{moved} keys moved");
    }

    #[test]
    fn a_filtered_walk_stops_at_its_limit() {
        let ring = Ring::new(
            (0..1000).map(|i| (format!("n{i}"), 1)).collect::<Vec<_>>().iter().map(|(s, w)| (s.as_str(), *w)),
        );
        let order = ring.walk_where(hash(b"k"), 1000, 3, |i| i % 2 == 0);
        assert_eq!(order.len(), 3);
        assert!(order.iter().all(|i| i % 2 == 0));
        // The same key starts from the same place.
        assert_eq!(order, ring.walk_where(hash(b"k"), 1000, 3, |i| i % 2 == 0));
    }

    #[test]
    fn the_hash_is_stable_across_versions() {
        // Every consumer (of any version) must map a key to the same
        // instance, so these values may never change: FNV-1a 64 with the
        // murmur3 finaliser, checked against an independent computation.
        fn reference(bytes: &[u8]) -> u64 {
            let mut h = 14_695_981_039_346_656_037_u64; // FNV offset basis
            for &b in bytes {
                h = (h ^ u64::from(b)).wrapping_mul(1_099_511_628_211); // FNV prime
            }
            let h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^ (h >> 33)
        }
        for key in [&b""[..], b"a", b"courier", b"user-42#7"] {
            assert_eq!(hash(key), reference(key), "{key:?}");
        }
    }

    #[test]
    fn each_unit_of_weight_adds_its_virtual_nodes() {
        let ring = Ring::new([("a", 1), ("b", 3), ("zero", 0), ("huge", 1000)]);
        let count = |index| ring.points.iter().filter(|(_, i)| *i == index).count();
        let per = POINTS_PER_WEIGHT as usize;
        // Weight 0 still gets a place on the ring; weights are capped at 100.
        assert_eq!((count(0), count(1), count(2), count(3)), (per, 3 * per, per, 100 * per));
        assert!(ring.points.windows(2).all(|w| w[0] <= w[1]), "sorted");
    }

    #[test]
    fn keys_spread_in_proportion_to_weight() {
        let ring = Ring::new([("a", 1), ("b", 3)]);
        let mut on_b = 0;
        for k in 0..8_000u32 {
            if ring.walk(hash(&k.to_be_bytes()), 2)[0] == 1 {
                on_b += 1;
            }
        }
        assert!((5_200..6_800).contains(&on_b), "{on_b} of 8000 keys on the weight-3 instance");
    }

    #[test]
    fn a_key_on_a_point_belongs_to_that_point_s_instance() {
        let ring = Ring::new([("a", 1), ("b", 1), ("c", 1)]);
        for &(point, index) in ring.points.iter().step_by(17) {
            assert_eq!(ring.walk(point, 3)[0], index, "key {point:#x}");
        }
        // Past the last point the walk wraps to the first.
        let (first_point, first) = ring.points[0];
        let last_point = ring.points[ring.points.len() - 1].0;
        assert!(first_point > 0);
        if last_point < u64::MAX {
            assert_eq!(ring.walk(last_point + 1, 3)[0], first);
        }
    }

    #[test]
    fn a_walk_ignores_members_beyond_the_candidates_it_is_given() {
        // The ring may be built over more members than are candidates now.
        let ring = Ring::new([("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        for key in [0, u64::MAX / 3, u64::MAX] {
            let mut order = ring.walk(key, 2);
            order.sort_unstable();
            assert_eq!(order, vec![0, 1]);
            // A walk that finds too few it wants goes round the whole
            // ring, past every member beyond the candidates.
            assert_eq!(ring.walk_where(key, 2, 2, |i| i == 0), vec![0]);
        }
    }

    #[test]
    fn a_walk_visits_every_candidate_once() {
        let ring = Ring::new([("a", 1), ("b", 3), ("c", 1)]);
        let mut order = ring.walk(hash(b"key"), 3);
        order.sort_unstable();
        assert_eq!(order, vec![0, 1, 2]);
    }
}
