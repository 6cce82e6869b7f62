//! Per-key turns for an endpoint with `ordering: "key"`: its deliveries of events with the
//! same ordering key go one at a time, in sequence order (assigned at acknowledgement). A pure
//! structure owned by the endpoint's actor; the actor parks what is not yet allowed and
//! brings it back when [`KeyTurns::done`] says its turn came.
//!
//! Invariants:
//! - a key is known while it has pending ordered deliveries; its `head` is the lowest pending
//!   sequence number, `last` the highest known;
//! - at most one delivery per key is `busy` (its attempt out or its result being stored), and
//!   it is the head;
//! - sequence numbers of pending deliveries are contiguous from `head`: only the head becomes
//!   final (the others cannot start), so the next turn is always `head + 1`.

use rustc_hash::FxHashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Turn {
    head: u64,
    last: u64,
    busy: bool,
}

impl Turn {
    /// A key whose lowest pending sequence number is `seq`, the only one known yet.
    fn first(seq: u64, busy: bool) -> Turn {
        Turn {
            head: seq,
            last: seq,
            busy,
        }
    }
}

#[derive(Debug, Default)]
pub struct KeyTurns {
    keys: FxHashMap<String, Turn>,
}

impl KeyTurns {
    /// As stored: each key's lowest and highest pending sequence numbers.
    pub fn restore(keys: impl IntoIterator<Item = (String, (u64, u64))>) -> KeyTurns {
        KeyTurns {
            keys: keys
                .into_iter()
                .map(|(k, (head, last))| {
                    (
                        k,
                        Turn {
                            head,
                            last,
                            busy: false,
                        },
                    )
                })
                .collect(),
        }
    }

    /// A new pending delivery of `key` with sequence number `seq` (from ingest).
    pub fn learn(&mut self, key: &str, seq: u64) {
        match self.keys.get_mut(key) {
            Some(t) => t.last = t.last.max(seq),
            None => {
                self.keys.insert(key.to_string(), Turn::first(seq, false));
            }
        }
    }

    /// Whether `key`'s delivery `seq` may start now; if so, the key is busy until
    /// [`KeyTurns::done`].
    pub fn take(&mut self, key: &str, seq: u64) -> bool {
        match self.keys.get_mut(key) {
            // Behind the turn (cannot happen while sequences stay contiguous): it holds up
            // no one and waits for no one.
            Some(t) if seq < t.head => true,
            Some(t) if t.busy || seq > t.head => false,
            Some(t) => {
                t.busy = true;
                true
            }
            // Every pending ordered delivery's key is known; one that is not has no one
            // before it.
            None => {
                self.keys.insert(key.to_string(), Turn::first(seq, true));
                true
            }
        }
    }

    /// The attempt of `key`'s delivery `seq` is settled, the delivery now `is_final` or not.
    /// Returns the sequence number whose turn it now is, if one is pending.
    pub fn done(&mut self, key: &str, seq: u64, is_final: bool) -> Option<u64> {
        let t = self.keys.get_mut(key)?;
        if t.head != seq {
            return None;
        }
        t.busy = false;
        if !is_final {
            return None;
        }
        if seq >= t.last {
            self.keys.remove(key);
            return None;
        }
        t.head = seq + 1;
        Some(t.head)
    }

    pub fn clear(&mut self) {
        self.keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    #[test]
    fn one_at_a_time_in_order_and_a_retry_keeps_the_turn() {
        let mut t = KeyTurns::default();
        for seq in 1..=3 {
            t.learn("card", seq);
        }
        assert!(!t.take("card", 2), "not its turn");
        assert!(t.take("card", 1));
        assert!(!t.take("card", 1), "its attempt is out");
        // Failed, a retry is scheduled: still its turn, the next one waits.
        assert_eq!(t.done("card", 1, false), None);
        assert!(!t.take("card", 2));
        assert!(t.take("card", 1));
        assert_eq!(t.done("card", 1, true), Some(2));
        assert!(t.take("card", 2));
        assert_eq!(t.done("card", 2, true), Some(3));
        assert!(t.take("card", 3));
        assert_eq!(t.done("card", 3, true), None, "the key is done");
        // Other keys never wait on this one.
        t.learn("other", 7);
        assert!(t.take("other", 7));
    }

    #[test]
    fn a_restart_resumes_at_the_lowest_pending_number() {
        let mut t = KeyTurns::restore([("card".to_string(), (4, 9))]);
        assert!(!t.take("card", 5));
        assert!(t.take("card", 4));
        assert_eq!(t.done("card", 4, true), Some(5));
    }

    proptest! {
        /// Whatever order the scheduler offers deliveries in and however attempts end, each
        /// key's starts never overlap and its deliveries become final in sequence order.
        #[test]
        fn keys_go_in_sequence_whatever_the_offers(
            keys in 1usize..5,
            per_key in 1u64..12,
            script in proptest::collection::vec((0usize..64, 0u64..64, any::<bool>()), 1..400),
        ) {
            let mut t = KeyTurns::default();
            let mut pending: HashMap<usize, BTreeSet<u64>> = HashMap::new();
            for k in 0..keys {
                for s in 1..=per_key {
                    t.learn(&format!("k{k}"), s);
                    pending.entry(k).or_default().insert(s);
                }
            }
            let mut busy: HashMap<usize, u64> = HashMap::new();
            let mut finals: HashMap<usize, Vec<u64>> = HashMap::new();
            for (k, s, ends) in script {
                let k = k % keys;
                let key = format!("k{k}");
                if let Some(&out) = busy.get(&k) {
                    // Settle the attempt that is out: final or not.
                    let next = t.done(&key, out, ends);
                    busy.remove(&k);
                    if ends {
                        pending.get_mut(&k).unwrap().remove(&out);
                        finals.entry(k).or_default().push(out);
                        prop_assert_eq!(next, pending[&k].first().copied());
                    }
                    continue;
                }
                let Some(&lowest) = pending[&k].first() else { continue };
                let offered = 1 + s % per_key;
                if !pending[&k].contains(&offered) {
                    continue;
                }
                let allowed = t.take(&key, offered);
                prop_assert_eq!(allowed, offered == lowest, "k{} offered {} lowest {}", k, offered, lowest);
                if allowed {
                    busy.insert(k, offered);
                }
            }
            for seqs in finals.values() {
                prop_assert!(seqs.windows(2).all(|w| w[0] + 1 == w[1]), "{:?}", seqs);
            }
        }
    }
}
