//! Quota counters in a shared key-value store with compare-and-swap: reserve, then settle.
//!
//! The store is Envoy's shared data in production (one map per `vm_id`, shared by every worker
//! VM of the process) and [`MemoryStore`] in tests. A counter is one key per (limit, scope
//! value) holding `(window index, used)`: when the window rolls over the same key is reused, so
//! keys do not accumulate per window.
//!
//! Reserve: for each applicable counter, read it, refuse if `used + amount > limit`, else write
//! `used + amount` with the CAS token read; on a CAS conflict (another worker wrote in between)
//! read again and retry. If a later counter refuses, the earlier reservations are given back.
//! Settle: add `actual − reserved` (refund or extra charge) the same way. A counter whose CAS
//! keeps failing after [`MAX_CAS_RETRIES`] is skipped (fail open, counted by the caller).
//!
//! Known race: a key's very first write cannot be compare-and-swapped (Envoy ignores the CAS of a
//! missing key), so two workers creating the same counter at the same instant can lose one
//! increment. It can happen once per counter key, ever.

/// Attempts per counter before giving up on it.
pub const MAX_CAS_RETRIES: u32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the value since it was read.
    CasMismatch,
    /// Any other host status.
    Failed(u32),
}

/// Shared data as the proxy-wasm ABI offers it.
pub trait SharedStore {
    /// The value and its CAS token, or `None` if the key was never written.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value` if the stored CAS token is still `cas` (0: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// `(window, used)` as stored: 16 bytes, little endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    pub window: u64,
    pub used: u64,
}

impl Counter {
    pub fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.window.to_le_bytes());
        out[8..].copy_from_slice(&self.used.to_le_bytes());
        out
    }

    /// Anything that is not 16 bytes reads as an empty counter.
    pub fn decode(bytes: &[u8]) -> Counter {
        let word = |range: std::ops::Range<usize>| {
            let mut buf = [0u8; 8];
            if let Some(src) = bytes.get(range) {
                buf.copy_from_slice(src);
            }
            u64::from_le_bytes(buf)
        };
        if bytes.len() != 16 {
            return Counter::default();
        }
        Counter { window: word(0..8), used: word(8..16) }
    }

    /// The usage of window `window`: this counter's if it is that window's, else 0.
    pub fn used_in(self, window: u64) -> u64 {
        if self.window == window {
            self.used
        } else {
            0
        }
    }
}

/// One counter to charge: where, how much, against what limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub key: String,
    pub window: u64,
    pub amount: u64,
    pub limit: u64,
}

/// The state of a counter after an admission decision (for headers and filter state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub used: u64,
    pub limit: u64,
}

impl Standing {
    pub fn remaining(self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

/// Outcome of [`reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Index (into the charges) of the first counter that would go over its limit, if any.
    pub exhausted: Option<usize>,
    /// Per charge: the counter after the decision (`None` if it could not be read/written).
    pub standings: Vec<Option<Standing>>,
    /// Whether each charge was actually written (and so must be settled or released).
    pub held: Vec<bool>,
    /// CAS conflicts met (contention indicator).
    pub retries: u32,
    /// Counters skipped after [`MAX_CAS_RETRIES`] conflicts or a store failure.
    pub skipped: u32,
}

impl Reservation {
    pub fn admitted(&self) -> bool {
        self.exhausted.is_none()
    }
}

/// Adds `delta` to a counter of window `window`, with a CAS loop. `check` decides, from the
/// current usage, whether the write may happen (`false`: give up, nothing written). Returns
/// the counter as written, or `Err(used)` when `check` refused, or `Ok(None)` if skipped.
fn update(
    store: &dyn SharedStore,
    key: &str,
    window: u64,
    delta: i64,
    check: impl Fn(u64) -> bool,
    retries: &mut u32,
) -> Result<Option<u64>, u64> {
    for _ in 0..MAX_CAS_RETRIES {
        let (current, cas) = match store.get(key) {
            Some((bytes, cas)) => (Counter::decode(&bytes), cas),
            None => (Counter::default(), 0),
        };
        let used = current.used_in(window);
        if !check(used) {
            return Err(used);
        }
        let next = Counter { window, used: used.saturating_add_signed(delta) };
        match store.set(key, &next.encode(), cas) {
            Ok(()) => return Ok(Some(next.used)),
            Err(StoreError::CasMismatch) => *retries += 1,
            Err(StoreError::Failed(_)) => return Ok(None),
        }
    }
    Ok(None)
}

/// Reserves every charge, or none: refuses at the first counter that would go over its
/// limit (when `enforce`), giving back what was already reserved. In shadow mode (`!enforce`)
/// everything is reserved and `exhausted` still names the first limit that would have refused.
pub fn reserve(store: &dyn SharedStore, charges: &[Charge], enforce: bool) -> Reservation {
    let mut reservation = Reservation {
        exhausted: None,
        standings: vec![None; charges.len()],
        held: vec![false; charges.len()],
        retries: 0,
        skipped: 0,
    };
    let mut refused_at = None;
    let slots = reservation.held.iter_mut().zip(reservation.standings.iter_mut());
    for (i, (charge, (held, standing))) in charges.iter().zip(slots).enumerate() {
        let fits = |used: u64| !enforce || used.saturating_add(charge.amount) <= charge.limit;
        let amount = i64::try_from(charge.amount).unwrap_or(i64::MAX);
        match update(store, &charge.key, charge.window, amount, fits, &mut reservation.retries) {
            Ok(Some(used)) => {
                *held = true;
                *standing = Some(Standing { used, limit: charge.limit });
                if used > charge.limit && reservation.exhausted.is_none() {
                    reservation.exhausted = Some(i); // shadow mode: would have refused here
                }
            }
            Ok(None) => reservation.skipped += 1,
            Err(used) => {
                *standing = Some(Standing { used, limit: charge.limit });
                refused_at = Some(i);
                break;
            }
        }
    }
    if let Some(i) = refused_at {
        reservation.exhausted = Some(i);
        for (earlier, held) in charges.iter().zip(reservation.held.iter_mut()).take(i) {
            if *held {
                let back = -i64::try_from(earlier.amount).unwrap_or(i64::MAX);
                let _ = update(store, &earlier.key, earlier.window, back, |_| true, &mut reservation.retries);
                *held = false;
            }
        }
    }
    reservation
}

/// Settles a held charge to its actual amount: refunds the unused part or charges the excess.
/// If the window rolled over since the reservation, the reservation went with the old window:
/// only an excess is charged, to the current one (`current_window`).
pub fn settle(store: &dyn SharedStore, charge: &Charge, actual: u64, current_window: u64, retries: &mut u32) -> bool {
    let delta = i128::from(actual) - i128::from(charge.amount);
    if delta == 0 {
        return true;
    }
    let (window, delta) = if current_window == charge.window {
        (charge.window, delta)
    } else if delta > 0 {
        (current_window, delta)
    } else {
        return true;
    };
    let delta = i64::try_from(delta).unwrap_or(if delta > 0 { i64::MAX } else { i64::MIN });
    matches!(update(store, &charge.key, window, delta, |_| true, retries), Ok(Some(_)))
}

/// An in-memory [`SharedStore`] with Envoy's semantics (global CAS counter, CAS ignored for a
/// missing key), and a knob that makes the next writes conflict, for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>,
    next_cas: std::cell::Cell<u32>,
    /// The next this-many `set` calls with a non-zero CAS fail with `CasMismatch` (as if another
    /// worker had written first) and bump the value's CAS.
    pub conflicts: std::cell::Cell<u32>,
}

impl MemoryStore {
    pub fn used(&self, key: &str, window: u64) -> u64 {
        self.map.borrow().get(key).map(|(v, _)| Counter::decode(v).used_in(window)).unwrap_or(0)
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.map.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut map = self.map.borrow_mut();
        let bump = self.next_cas.get().wrapping_add(1).max(1);
        if let Some((_, stored)) = map.get_mut(key) {
            if cas != 0 && self.conflicts.get() > 0 {
                self.conflicts.set(self.conflicts.get() - 1);
                *stored = bump;
                self.next_cas.set(bump);
                return Err(StoreError::CasMismatch);
            }
            if cas != 0 && *stored != cas {
                return Err(StoreError::CasMismatch);
            }
        }
        let bump = bump.wrapping_add(1).max(1);
        self.next_cas.set(bump);
        map.insert(key.to_string(), (value.to_vec(), bump));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(key: &str, amount: u64, limit: u64) -> Charge {
        Charge { key: key.into(), window: 7, amount, limit }
    }

    #[test]
    fn counters_encode_and_reset_with_the_window() {
        let c = Counter { window: 9, used: 1234 };
        assert_eq!(Counter::decode(&c.encode()), c);
        assert_eq!(c.used_in(9), 1234);
        assert_eq!(c.used_in(10), 0, "a new window starts from zero");
        assert_eq!(Counter::decode(b"garbage"), Counter::default());
    }

    #[test]
    fn reserves_until_the_limit_then_refuses_exactly_at_it() {
        let store = MemoryStore::default();
        for _ in 0..3 {
            assert!(reserve(&store, &[charge("a", 30, 100)], true).admitted());
        }
        let full = reserve(&store, &[charge("a", 11, 100)], true);
        assert_eq!(full.exhausted, Some(0));
        assert_eq!(full.standings[0], Some(Standing { used: 90, limit: 100 }));
        assert!(reserve(&store, &[charge("a", 10, 100)], true).admitted(), "exactly the limit fits");
        assert_eq!(store.used("a", 7), 100);
    }

    #[test]
    fn a_refusal_gives_back_earlier_reservations() {
        let store = MemoryStore::default();
        assert!(reserve(&store, &[charge("b", 50, 50)], true).admitted());
        let refused = reserve(&store, &[charge("a", 10, 100), charge("b", 1, 50), charge("c", 1, 9)], true);
        assert_eq!(refused.exhausted, Some(1));
        assert_eq!(refused.held, vec![false, false, false]);
        assert_eq!((store.used("a", 7), store.used("c", 7)), (0, 0));
    }

    #[test]
    fn shadow_mode_reserves_and_reports_what_would_have_refused() {
        let store = MemoryStore::default();
        let shadow = reserve(&store, &[charge("a", 150, 100)], false);
        assert_eq!(shadow.exhausted, Some(0));
        assert_eq!(shadow.held, vec![true]);
        assert_eq!(store.used("a", 7), 150);
    }

    #[test]
    fn settle_refunds_and_charges_excess() {
        let store = MemoryStore::default();
        let c = charge("a", 100, 1000);
        assert!(reserve(&store, std::slice::from_ref(&c), true).admitted());
        let mut retries = 0;
        assert!(settle(&store, &c, 40, 7, &mut retries));
        assert_eq!(store.used("a", 7), 40, "unused reservation refunded");
        let c2 = charge("a", 10, 1000);
        assert!(reserve(&store, std::slice::from_ref(&c2), true).admitted());
        assert!(settle(&store, &c2, 35, 7, &mut retries));
        assert_eq!(store.used("a", 7), 75, "excess charged");
    }

    #[test]
    fn settle_after_a_window_rollover_only_charges_excess_to_the_new_window() {
        let store = MemoryStore::default();
        let c = charge("a", 100, 1000);
        assert!(reserve(&store, std::slice::from_ref(&c), true).admitted());
        let mut retries = 0;
        assert!(settle(&store, &c, 30, 8, &mut retries));
        assert_eq!(store.used("a", 8), 0, "refund of an old window's reservation is moot");
        assert!(settle(&store, &c, 130, 8, &mut retries));
        assert_eq!(store.used("a", 8), 30, "excess goes to the current window");
    }

    #[test]
    fn cas_conflicts_are_retried_and_counted() {
        let store = MemoryStore::default();
        assert!(reserve(&store, &[charge("a", 1, 100)], true).admitted());
        store.conflicts.set(5);
        let r = reserve(&store, &[charge("a", 1, 100)], true);
        assert!(r.admitted());
        assert_eq!(r.retries, 5);
        assert_eq!(store.used("a", 7), 2, "exactly one increment despite the conflicts");
    }

    #[test]
    fn endless_conflicts_skip_the_counter_instead_of_looping() {
        let store = MemoryStore::default();
        assert!(reserve(&store, &[charge("a", 1, 100)], true).admitted());
        store.conflicts.set(MAX_CAS_RETRIES + 10);
        let r = reserve(&store, &[charge("a", 1, 100)], true);
        assert!(r.admitted());
        assert_eq!((r.skipped, r.held[0]), (1, false));
    }

    #[test]
    fn interleaved_reservations_never_exceed_the_limit() {
        // Two "workers" alternately read and write the same counter; CAS makes one of them
        // retry, and the total admitted never passes the limit.
        let store = MemoryStore::default();
        let mut admitted = 0;
        for i in 0..200 {
            if i % 3 == 0 {
                store.conflicts.set(1);
            }
            if reserve(&store, &[charge("a", 7, 500)], true).admitted() {
                admitted += 7;
            }
        }
        assert_eq!(admitted, store.used("a", 7));
        assert!(admitted <= 500 && admitted > 500 - 7);
    }
}
