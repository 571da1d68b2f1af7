//! Load balancing: which instance a call goes to.
//!
//! A balancer does not pick one instance; it orders them. The caller tries
//! the first, and if that one cannot be reached (nothing was sent), the
//! next, so one dead instance costs a call a retry, not a failure.
//!
//! - [`Balance::RoundRobin`]: each in turn.
//! - [`Balance::WeightedRandom`]: at random, in proportion to weights.
//! - [`Balance::P2c`]: "power of two choices": of two random instances, the
//!   one with fewer calls outstanding; adapts to slow instances.
//! - [`Balance::ConsistentHash`]: by a per-call key
//!   (`CallOptions::with_hash_key`), so equal keys go to the same instance
//!   while the set is stable, and few keys move when it changes.

mod hash;

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use hash::Ring;

/// The hash of a routing key, as consistent hashing uses it.
pub fn hash_key(key: &[u8]) -> u64 {
    hash::hash(key)
}

/// A balancing policy, chosen per discovered channel.
///
/// ```no_run
/// use courier::{Balance, CallOptions, Channel};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = courier::registry::connect("courier://127.0.0.1:7600").await?;
/// // Fewest calls outstanding (of two random instances) for a service
/// // whose calls vary in cost:
/// let search = Channel::discover(&registry, "Search").balance(Balance::P2c).build().await?;
///
/// // Calls with the same key to the same instance, for per-user caches:
/// let carts = Channel::discover(&registry, "Cart").balance(Balance::ConsistentHash).build().await?;
/// let for_user = CallOptions::new().with_hash_key("user-42");
/// let total: u64 = carts.unary("Cart.Total", &(), &for_user).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// Each instance in turn.
    #[default]
    RoundRobin,
    /// At random, in proportion to instance weights.
    WeightedRandom,
    /// The less busy of two random instances.
    P2c,
    /// By the call's hash key; calls without one are spread at random.
    ConsistentHash,
}

/// What a balancer knows about one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) weight: u32,
    pub(crate) outstanding: usize,
}

/// Orders candidates for one call.
#[derive(Debug, Default)]
pub(crate) struct Picker {
    next: AtomicUsize,
}

impl Picker {
    /// The order to try `candidates` in, for `policy`. A call with a hash
    /// key under [`Balance::ConsistentHash`] walks the ring instead (see
    /// `hash`); here, without a key, it may go anywhere.
    pub(crate) fn order(
        &self,
        policy: Balance,
        candidates: &[Candidate],
        random: &mut fastrand::Rng,
    ) -> Vec<usize> {
        let n = candidates.len();
        if n == 0 {
            return Vec::new();
        }
        let first = match policy {
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Balance::WeightedRandom => weighted(candidates, random),
            Balance::P2c => {
                if n == 1 {
                    0
                } else {
                    let a = random.usize(..n);
                    let b = (a + 1 + random.usize(..n - 1)) % n;
                    let (ca, cb) = (candidates[a], candidates[b]);
                    // Fewer outstanding calls per unit of weight wins.
                    let load = |c: Candidate| c.outstanding as u64 * 1024 / u64::from(c.weight.max(1));
                    if load(ca) <= load(cb) { a } else { b }
                }
            }
            Balance::ConsistentHash => random.usize(..n),
        };
        // Then the others, in turn from the first.
        (0..n).map(|i| (first + i) % n).collect()
    }
}

/// An index drawn with probability proportional to weight.
fn weighted(candidates: &[Candidate], random: &mut fastrand::Rng) -> usize {
    let total: u64 = candidates.iter().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return random.usize(..candidates.len());
    }
    let mut point = random.u64(..total);
    for (index, candidate) in candidates.iter().enumerate() {
        let weight = u64::from(candidate.weight);
        if point < weight {
            return index;
        }
        point -= weight;
    }
    candidates.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(weights: &[u32]) -> Vec<Candidate> {
        weights.iter().map(|&weight| Candidate { weight, outstanding: 0 }).collect()
    }

    fn shares(policy: Balance, list: &[Candidate], calls: usize) -> Vec<usize> {
        let picker = Picker::default();
        let mut random = fastrand::Rng::with_seed(7);
        let mut counts = vec![0; list.len()];
        for _ in 0..calls {
            counts[picker.order(policy, list, &mut random)[0]] += 1;
        }
        counts
    }

    #[test]
    fn every_order_is_a_permutation() {
        let picker = Picker::default();
        let mut random = fastrand::Rng::with_seed(1);
        let list = candidates(&[1, 2, 3, 4]);
        for policy in [Balance::RoundRobin, Balance::WeightedRandom, Balance::P2c, Balance::ConsistentHash] {
            let mut order = picker.order(policy, &list, &mut random);
            order.sort_unstable();
            assert_eq!(order, vec![0, 1, 2, 3], "{policy:?}");
        }
        assert!(picker.order(Balance::P2c, &[], &mut random).is_empty());
    }

    #[test]
    fn round_robin_is_even() {
        assert_eq!(shares(Balance::RoundRobin, &candidates(&[1, 1, 1]), 3000), vec![1000, 1000, 1000]);
    }

    #[test]
    fn weighted_random_follows_weights() {
        let counts = shares(Balance::WeightedRandom, &candidates(&[1, 2, 3]), 60_000);
        for (count, expected) in counts.iter().zip([10_000, 20_000, 30_000]) {
            assert!((*count as i64 - expected).abs() < 1_000, "{counts:?}");
        }
    }

    #[test]
    fn p2c_weighs_outstanding_calls_by_weight() {
        // Two candidates, so both are always compared. Per unit of weight,
        // 1 call on weight 2 is lighter than 3 calls on weight 3.
        let list = [Candidate { weight: 2, outstanding: 1 }, Candidate { weight: 3, outstanding: 3 }];
        assert_eq!(shares(Balance::P2c, &list, 200), vec![200, 0]);
        // And 4 calls on weight 8 lighter than 1 on weight 1.
        let list = [Candidate { weight: 1, outstanding: 1 }, Candidate { weight: 8, outstanding: 4 }];
        assert_eq!(shares(Balance::P2c, &list, 200), vec![0, 200]);
    }

    #[test]
    fn a_single_candidate_is_always_first() {
        let picker = Picker::default();
        let mut random = fastrand::Rng::with_seed(3);
        let one = candidates(&[0]);
        for policy in [Balance::RoundRobin, Balance::WeightedRandom, Balance::P2c, Balance::ConsistentHash] {
            assert_eq!(picker.order(policy, &one, &mut random), vec![0], "{policy:?}");
        }
    }

    #[test]
    fn weight_zero_is_never_picked_first_while_others_have_weight() {
        assert_eq!(shares(Balance::WeightedRandom, &candidates(&[0, 5, 0]), 500), vec![0, 500, 0]);
        // All at zero: spread evenly rather than failing.
        let counts = shares(Balance::WeightedRandom, &candidates(&[0, 0]), 2000);
        assert!(counts.iter().all(|&n| (800..1200).contains(&n)), "{counts:?}");
    }

    #[test]
    fn orders_continue_in_turn_from_the_first() {
        let picker = Picker::default();
        let mut random = fastrand::Rng::with_seed(5);
        let list = candidates(&[1, 1, 1, 1]);
        assert_eq!(picker.order(Balance::RoundRobin, &list, &mut random), vec![0, 1, 2, 3]);
        assert_eq!(picker.order(Balance::RoundRobin, &list, &mut random), vec![1, 2, 3, 0]);
    }

    #[test]
    fn consistent_hash_without_a_key_still_tries_every_candidate() {
        let picker = Picker::default();
        let mut random = fastrand::Rng::with_seed(9);
        let list = candidates(&[1, 1, 1]);
        for _ in 0..20 {
            let mut order = picker.order(Balance::ConsistentHash, &list, &mut random);
            order.sort_unstable();
            assert_eq!(order, vec![0, 1, 2]);
        }
    }

    #[test]
    fn the_routing_hash_is_the_ring_s_hash() {
        // Callers hash their keys with `hash_key`; the ring places its
        // points with the same function, or keys would land anywhere.
        for key in [&b""[..], b"k", b"user-42"] {
            assert_eq!(hash_key(key), hash::hash(key));
        }
    }

    #[test]
    fn p2c_avoids_the_busy_instance() {
        let mut list = candidates(&[1, 1, 1]);
        list[1].outstanding = 50;
        let counts = shares(Balance::P2c, &list, 3000);
        assert!(counts[1] < 100, "the busy one is rarely first: {counts:?}");
    }
}
