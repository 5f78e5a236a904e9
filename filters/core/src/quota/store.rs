//! Quota counters in a shared key-value store with compare-and-swap: reserve, then settle.
//!
//! The store is Envoy's shared data in production (one map per `vm_id`, shared by every worker
//! VM of the process) and [`MemoryStore`] in tests. One key per scope value (a consumer, a
//! consumer × model, a model, or the one global scope) holds a [`Record`]: one counter
//! `(window index, used)` per limit name of that scope. When a window rolls over its counter is
//! reused, so keys do not accumulate per window. Counters of limits this configuration does not
//! have are kept (another plugin configuration sharing the VM, hence the shared data, may count
//! them, as it did when each limit had its own key), up to [`MAX_RECORD_COUNTERS`]: past that,
//! a write keeps only this configuration's (names removed by reloads cannot pile up). Every
//! limit a request meets in one scope is therefore read and
//! written in one shared-data round trip: with the usual per-consumer limits (tokens and
//! requests per minute) a request costs one read and one write at reservation and one of each
//! at settlement, whatever the number of limits.
//!
//! Reserve: for each record the request touches, read it, refuse if any of its counters would
//! go over its limit (`used + amount > limit`), else write every `used + amount` with the CAS
//! token read; on a CAS conflict (another worker wrote in between) read again and retry. If a
//! later record refuses, the earlier reservations are given back. Settle: add `actual −
//! reserved` (refund or extra charge) the same way. A record whose CAS keeps failing after
//! [`MAX_CAS_RETRIES`] is skipped (fail open, counted by the caller).
//!
//! Known race: a key's very first write cannot be compare-and-swapped (Envoy ignores the CAS of a
//! missing key), so two workers creating the same record at the same instant can lose one
//! increment. It can happen once per key, ever.

/// Attempts per record before giving up on it.
pub const MAX_CAS_RETRIES: u32 = 32;

/// The longest limit name a record can hold (the configuration refuses longer ones).
pub const MAX_NAME_LEN: usize = 64;

/// Counters a record keeps before those of limits unknown to the writer are dropped.
pub const MAX_RECORD_COUNTERS: usize = 32;

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

/// One limit's count in a record: `(window, used)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    pub window: u64,
    pub used: u64,
}

impl Counter {
    /// The usage of window `window`: this counter's if it is that window's, else 0.
    pub fn used_in(self, window: u64) -> u64 {
        if self.window == window {
            self.used
        } else {
            0
        }
    }
}

/// The counters of one scope value as stored: for each limit, its name's length (one byte), the
/// name, then the window index and the usage (8 bytes each, little endian). Read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record<'a> {
    bytes: &'a [u8],
}

impl<'a> Record<'a> {
    /// A value that does not parse as a whole reads as an empty record (every counter at 0).
    pub fn decode(bytes: &'a [u8]) -> Record<'a> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match Self::split(rest) {
                Some((_, _, tail)) => rest = tail,
                None => return Record::default(),
            }
        }
        Record { bytes }
    }

    /// The first counter of `bytes` and what follows it.
    fn split(bytes: &'a [u8]) -> Option<(&'a str, Counter, &'a [u8])> {
        let (&len, tail) = bytes.split_first()?;
        // Longer names are never written (`encode_counter`): such bytes are not a record.
        let len = Some(usize::from(len)).filter(|&l| l <= MAX_NAME_LEN)?;
        let name = std::str::from_utf8(tail.get(..len)?).ok()?;
        let counter = Counter { window: le_u64(tail.get(len..len + 8)?), used: le_u64(tail.get(len + 8..len + 16)?) };
        Some((name, counter, tail.get(len + 16..)?))
    }

    pub fn counters(self) -> impl Iterator<Item = (&'a str, Counter)> {
        let mut rest = self.bytes;
        std::iter::from_fn(move || {
            let (name, counter, tail) = Self::split(rest)?;
            rest = tail;
            Some((name, counter))
        })
    }

    /// The counter of limit `name` (empty if the record has none).
    pub fn counter(self, name: &str) -> Counter {
        self.counters().find(|(n, _)| *n == name).map(|(_, c)| c).unwrap_or_default()
    }

    /// Appends one counter's encoding to `out`; `None` if the name is too long to be stored.
    fn encode_counter(out: &mut Vec<u8>, name: &str, counter: Counter) -> Option<()> {
        let len = u8::try_from(name.len()).ok().filter(|&l| usize::from(l) <= MAX_NAME_LEN)?;
        out.push(len);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&counter.window.to_le_bytes());
        out.extend_from_slice(&counter.used.to_le_bytes());
        Some(())
    }

    /// The encoding of a record holding `counters` (writes go through `update`, which encodes
    /// counter by counter).
    #[cfg(test)]
    pub fn encode(counters: &[(&str, Counter)]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(counters.iter().map(|(n, _)| 17 + n.len()).sum());
        for (name, counter) in counters {
            Self::encode_counter(&mut out, name, *counter)?;
        }
        Some(out)
    }
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    if let Some(src) = bytes.get(..8) {
        buf.copy_from_slice(src);
    }
    u64::from_le_bytes(buf)
}

/// One counter to charge: which record, which limit in it, how much, against what limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The record's key (the scope value).
    pub key: String,
    /// The limit's name in the record.
    pub name: String,
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
    /// Index (into the charges) of the counter that would go over its limit, if any: in
    /// shadow mode the first in the charges' order, when enforcing the one that refused.
    pub exhausted: Option<usize>,
    /// Per charge: the counter after the decision (`None` if it could not be read/written).
    pub standings: Vec<Option<Standing>>,
    /// Whether each charge was actually written (and so must be settled or released).
    pub held: Vec<bool>,
    /// CAS conflicts met (contention indicator).
    pub retries: u32,
    /// Charges skipped after [`MAX_CAS_RETRIES`] conflicts or a store failure.
    pub skipped: u32,
}

impl Reservation {
    pub fn admitted(&self) -> bool {
        self.exhausted.is_none()
    }
}

/// One change to one counter of a record.
#[derive(Clone, Copy)]
struct Item<'a> {
    name: &'a str,
    window: u64,
    delta: i64,
}

/// Applies every item to the record at `key` in one read and one compare-and-swap write (retried
/// on conflicts). `check(k, used)` decides, from item `k`'s current usage, whether the write may
/// happen. Counters of other limits are kept, or, when the record would hold more than
/// [`MAX_RECORD_COUNTERS`], only those with `keep(name)`. Once written,
/// `written(k, used)` is told each item's new usage. `Err((k, used))` when `check` refused item
/// `k` (nothing written); `Ok(false)` if the record was skipped.
fn update(
    store: &dyn SharedStore,
    key: &str,
    items: &[Item<'_>],
    check: impl Fn(usize, u64) -> bool,
    mut written: impl FnMut(usize, u64),
    keep: &dyn Fn(&str) -> bool,
    retries: &mut u32,
) -> Result<bool, (usize, u64)> {
    for _ in 0..MAX_CAS_RETRIES {
        let stored = store.get(key);
        let (record, cas) = match &stored {
            Some((bytes, cas)) => (Record::decode(bytes), *cas),
            None => (Record::default(), 0),
        };
        let after = |item: &Item<'_>| record.counter(item.name).used_in(item.window).saturating_add_signed(item.delta);
        for (k, item) in items.iter().enumerate() {
            let used = record.counter(item.name).used_in(item.window);
            if !check(k, used) {
                return Err((k, used));
            }
        }
        let mut next = Vec::with_capacity(record.bytes.len() + 17 * items.len());
        for item in items {
            if Record::encode_counter(&mut next, item.name, Counter { window: item.window, used: after(item) })
                .is_none()
            {
                return Ok(false);
            }
        }
        let others = |name: &str| !items.iter().any(|i| i.name == name);
        let crowded = items.len() + record.counters().filter(|(name, _)| others(name)).count() > MAX_RECORD_COUNTERS;
        for (name, counter) in record.counters() {
            if others(name) && (!crowded || keep(name)) {
                // A name read from a record fits a record (`split` refuses longer ones).
                let _ = Record::encode_counter(&mut next, name, counter);
            }
        }
        match store.set(key, &next, cas) {
            Ok(()) => {
                for (k, item) in items.iter().enumerate() {
                    written(k, after(item));
                }
                return Ok(true);
            }
            Err(StoreError::CasMismatch) => *retries += 1,
            Err(StoreError::Failed(_)) => return Ok(false),
        }
    }
    Ok(false)
}

/// The records the charges touch, in the order each first appears: for each, its key and the
/// indices of its charges (`key(i)`: the record of charge `i`).
fn by_record<'a>(n: usize, key: impl Fn(usize) -> &'a str + Copy) -> impl Iterator<Item = (&'a str, Vec<usize>)> {
    (0..n).filter(move |&i| !(0..i).any(|j| key(j) == key(i))).map(move |i| {
        let lead = key(i);
        (lead, (i..n).filter(|&j| key(j) == lead).collect())
    })
}

fn signed(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

/// Reserves every charge, or none: refuses at the first record with a counter that would go
/// over its limit (when `enforce`), giving back what was already reserved. In shadow mode
/// (`!enforce`) everything is reserved and `exhausted` still names the first limit that would
/// have refused. `keep(name)`: whether a counter found in a record belongs to a configured limit
/// (see [`MAX_RECORD_COUNTERS`]).
pub fn reserve(store: &dyn SharedStore, charges: &[Charge], enforce: bool, keep: &dyn Fn(&str) -> bool) -> Reservation {
    let mut reservation = Reservation {
        exhausted: None,
        standings: vec![None; charges.len()],
        held: vec![false; charges.len()],
        retries: 0,
        skipped: 0,
    };
    let key = |i: usize| charges.get(i).map_or("", |c| c.key.as_str());
    let mut refused_at = None;
    for (record, group) in by_record(charges.len(), key) {
        let members: Vec<&Charge> = group.iter().filter_map(|&i| charges.get(i)).collect();
        let items: Vec<Item<'_>> =
            members.iter().map(|c| Item { name: &c.name, window: c.window, delta: signed(c.amount) }).collect();
        let fits =
            |k: usize, used: u64| !enforce || members.get(k).is_some_and(|c| used.saturating_add(c.amount) <= c.limit);
        let (held, standings) = (&mut reservation.held, &mut reservation.standings);
        let written = |k: usize, used: u64| {
            if let (Some(&i), Some(charge)) = (group.get(k), members.get(k)) {
                if let (Some(held), Some(standing)) = (held.get_mut(i), standings.get_mut(i)) {
                    *held = true;
                    *standing = Some(Standing { used, limit: charge.limit });
                }
            }
        };
        match update(store, record, &items, fits, written, keep, &mut reservation.retries) {
            Ok(true) => {}
            Ok(false) => reservation.skipped += u32::try_from(group.len()).unwrap_or(u32::MAX),
            Err((k, used)) => {
                if let (Some(&i), Some(charge)) = (group.get(k), members.get(k)) {
                    if let Some(standing) = reservation.standings.get_mut(i) {
                        *standing = Some(Standing { used, limit: charge.limit });
                    }
                    refused_at = Some(i);
                }
                break;
            }
        }
    }
    if let Some(i) = refused_at {
        reservation.exhausted = Some(i);
        let held = std::mem::take(&mut reservation.held);
        let held_key = |i: usize| if held.get(i).copied().unwrap_or(false) { key(i) } else { "" };
        for (record, group) in by_record(charges.len(), held_key).filter(|(record, _)| !record.is_empty()) {
            let items: Vec<Item<'_>> = group
                .iter()
                .filter_map(|&i| charges.get(i))
                .map(|c| Item { name: &c.name, window: c.window, delta: -signed(c.amount) })
                .collect();
            let _ = update(store, record, &items, |_, _| true, |_, _| {}, keep, &mut reservation.retries);
        }
        reservation.held = vec![false; charges.len()];
    } else {
        // Shadow mode: the first counter (in the charges' order) that went over.
        reservation.exhausted = reservation.standings.iter().position(|s| s.is_some_and(|s| s.used > s.limit));
    }
    reservation
}

/// The standing of each charge's counter without charging it: one read per record, no write
/// (for the headers of a call that is not metered). A record never written stands at 0.
pub fn standings(store: &dyn SharedStore, charges: &[Charge]) -> Vec<Standing> {
    let mut standings = vec![Standing { used: 0, limit: 0 }; charges.len()];
    let key = |i: usize| charges.get(i).map_or("", |c| c.key.as_str());
    for (record, group) in by_record(charges.len(), key) {
        let stored = store.get(record);
        let record = stored.as_ref().map(|(bytes, _)| Record::decode(bytes)).unwrap_or_default();
        for i in group {
            if let (Some(charge), Some(standing)) = (charges.get(i), standings.get_mut(i)) {
                *standing = Standing { used: record.counter(&charge.name).used_in(charge.window), limit: charge.limit };
            }
        }
    }
    standings
}

/// One held charge to settle to its actual amount; `current_window` is its limit's window now.
#[derive(Debug, Clone, Copy)]
pub struct Settlement<'a> {
    pub charge: &'a Charge,
    pub actual: u64,
    pub current_window: u64,
}

/// Settles held charges to their actual amounts: refunds the unused part or charges the excess,
/// one read and one write per record. If a window rolled over since the reservation, the
/// reservation went with the old window: only an excess is charged, to the current one.
/// Returns the number of charges that could not be settled.
pub fn settle(
    store: &dyn SharedStore,
    settlements: &[Settlement<'_>],
    keep: &dyn Fn(&str) -> bool,
    retries: &mut u32,
) -> u32 {
    let changes: Vec<(&Charge, Item<'_>)> = settlements
        .iter()
        .filter_map(|s| {
            let delta = i128::from(s.actual) - i128::from(s.charge.amount);
            let (window, delta) = match delta {
                0 => return None,
                _ if s.current_window == s.charge.window => (s.charge.window, delta),
                d if d > 0 => (s.current_window, d),
                _ => return None,
            };
            let delta = i64::try_from(delta).unwrap_or(if delta > 0 { i64::MAX } else { i64::MIN });
            Some((s.charge, Item { name: &s.charge.name, window, delta }))
        })
        .collect();
    let key = |i: usize| changes.get(i).map_or("", |(c, _)| c.key.as_str());
    let mut failed = 0;
    for (record, group) in by_record(changes.len(), key) {
        let items: Vec<Item<'_>> = group.iter().filter_map(|&i| changes.get(i)).map(|(_, item)| *item).collect();
        if !matches!(update(store, record, &items, |_, _| true, |_, _| {}, keep, retries), Ok(true)) {
            failed += u32::try_from(items.len()).unwrap_or(u32::MAX);
        }
    }
    failed
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
    /// `get` and `set` calls so far (each is a host call in Envoy).
    pub gets: std::cell::Cell<u32>,
    pub sets: std::cell::Cell<u32>,
}

impl MemoryStore {
    /// Limit `name`'s usage in window `window` of the record at `key`.
    pub fn used(&self, key: &str, name: &str, window: u64) -> u64 {
        self.map.borrow().get(key).map_or(0, |(v, _)| Record::decode(v).counter(name).used_in(window))
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.gets.set(self.gets.get() + 1);
        self.map.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.sets.set(self.sets.get() + 1);
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
        named(key, "n", amount, limit)
    }

    fn named(key: &str, name: &str, amount: u64, limit: u64) -> Charge {
        Charge { key: key.into(), name: name.into(), window: 7, amount, limit }
    }

    fn all(_: &str) -> bool {
        true
    }

    fn reserve(store: &dyn SharedStore, charges: &[Charge], enforce: bool) -> Reservation {
        super::reserve(store, charges, enforce, &all)
    }

    fn settle_one(store: &dyn SharedStore, c: &Charge, actual: u64, current_window: u64) -> bool {
        let mut retries = 0;
        super::settle(store, &[Settlement { charge: c, actual, current_window }], &all, &mut retries) == 0
    }

    #[test]
    fn records_encode_and_counters_reset_with_the_window() {
        let counters = [("tpm", Counter { window: 9, used: 1234 }), ("rpd", Counter { window: 2, used: 5 })];
        let bytes = Record::encode(&counters).unwrap();
        assert_eq!(bytes.len(), 2 * 17 + 6);
        let record = Record::decode(&bytes);
        assert_eq!(record.counters().collect::<Vec<_>>(), counters);
        assert_eq!(record.counter("tpm").used_in(9), 1234);
        assert_eq!(record.counter("tpm").used_in(10), 0, "a new window starts from zero");
        assert_eq!(record.counter("other"), Counter::default());
        // Anything that does not parse as a whole is an empty record, never a wrong count.
        assert_eq!(Record::decode(b"garbage"), Record::default());
        for cut in 0..bytes.len() {
            let decoded: Vec<_> = Record::decode(&bytes[..cut]).counters().collect();
            assert!(decoded.is_empty() || (cut == 20 && decoded == counters[..1]), "cut at {cut}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(Record::encode(&[(&long, Counter::default())]), None);
        // Nor is it read: a record that holds one is not ours (its counters would be dropped
        // silently on the next write).
        let mut bytes = vec![65u8];
        bytes.extend_from_slice(long.as_bytes());
        bytes.extend_from_slice(&[0; 16]);
        assert_eq!(Record::decode(&bytes), Record::default());
    }

    proptest::proptest! {
        /// Whatever a key holds (another version's format, a torn write), reading it never
        /// panics and yields either nothing or exactly what re-encodes to the same bytes.
        #[test]
        fn any_bytes_read_as_a_record_or_as_nothing(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let record = Record::decode(&bytes);
            let counters: Vec<(&str, Counter)> = record.counters().collect();
            proptest::prop_assert!(counters.is_empty() || Record::encode(&counters).as_deref() == Some(&bytes[..]));
        }

        /// A valid record reads as its counters; with one byte changed, inserted or removed, or
        /// cut anywhere, it reads as nothing or as what re-encodes to the changed bytes.
        #[test]
        fn changed_records_read_as_a_record_or_as_nothing(
            counters in proptest::collection::vec(("[a-z_]{1,64}", proptest::num::u64::ANY, proptest::num::u64::ANY), 1..6),
            at in proptest::num::usize::ANY,
            byte in proptest::num::u8::ANY,
            change in 0u8..4,
        ) {
            let counters: Vec<(&str, Counter)> =
                counters.iter().map(|(n, window, used)| (n.as_str(), Counter { window: *window, used: *used })).collect();
            let valid = Record::encode(&counters).unwrap();
            proptest::prop_assert_eq!(Record::decode(&valid).counters().collect::<Vec<_>>(), counters.clone());
            let mut bytes = valid.clone();
            let at = at % bytes.len();
            match change {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 => { bytes.remove(at); }
                _ => bytes.truncate(at),
            }
            let read: Vec<(&str, Counter)> = Record::decode(&bytes).counters().collect();
            proptest::prop_assert!(read.is_empty() || Record::encode(&read).as_deref() == Some(&bytes[..]), "{:?}", read);
        }

        /// Reservations and settlements of random amounts against two limits sharing a record
        /// leave each counter at the sum of what was settled, whatever the order.
        #[test]
        fn counters_sharing_a_record_add_up(ops in proptest::collection::vec((0u64..500, 0u64..500, proptest::bool::ANY), 1..40)) {
            let store = MemoryStore::default();
            let (mut tokens, mut requests) = (0, 0);
            for (reserved, actual, conflict) in ops {
                if conflict {
                    store.conflicts.set(1);
                }
                let charges = [named("c", "tpm", reserved, u64::MAX), named("c", "rpm", 1, u64::MAX)];
                let r = reserve(&store, &charges, true);
                proptest::prop_assert!(r.admitted());
                let mut retries = 0;
                let settlements = [Settlement { charge: &charges[0], actual, current_window: 7 }];
                proptest::prop_assert_eq!(settle(&store, &settlements, &all, &mut retries), 0);
                tokens += actual;
                requests += 1;
            }
            proptest::prop_assert_eq!((store.used("c", "tpm", 7), store.used("c", "rpm", 7)), (tokens, requests));
        }
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
        assert_eq!(store.used("a", "n", 7), 100);
    }

    #[test]
    fn the_limits_of_one_scope_are_one_read_and_one_write() {
        let store = MemoryStore::default();
        let charges = [named("c1", "tpm", 100, 1000), named("c1", "rpm", 1, 10), named("m", "model_tpm", 100, 10_000)];
        let r = reserve(&store, &charges, true);
        assert!(r.admitted());
        assert_eq!((store.gets.get(), store.sets.get()), (2, 2), "two records: c1 and m");
        assert_eq!((store.used("c1", "tpm", 7), store.used("c1", "rpm", 7)), (100, 1));
        assert_eq!(store.used("m", "model_tpm", 7), 100);
        let mut retries = 0;
        let settlements: Vec<Settlement<'_>> = charges
            .iter()
            .map(|c| Settlement { charge: c, actual: if c.name == "rpm" { 1 } else { 40 }, current_window: 7 })
            .collect();
        assert_eq!(settle(&store, &settlements, &all, &mut retries), 0);
        assert_eq!((store.gets.get(), store.sets.get()), (4, 4), "an unchanged counter (rpm) costs nothing more");
        assert_eq!((store.used("c1", "tpm", 7), store.used("c1", "rpm", 7)), (40, 1));
        assert_eq!(store.used("m", "model_tpm", 7), 40);
    }

    #[test]
    fn standings_read_each_record_once_and_write_nothing() {
        let store = MemoryStore::default();
        assert!(reserve(&store, &[named("c1", "tpm", 60, 1000), named("c1", "rpm", 1, 10)], true).admitted());
        let (gets, sets) = (store.gets.get(), store.sets.get());
        let mut stale = named("c1", "tpm", 0, 1000);
        stale.window = 8;
        let charges = [named("c1", "tpm", 0, 1000), named("c1", "rpm", 0, 10), named("fresh", "tpm", 0, 500), stale];
        let standings = standings(&store, &charges);
        assert_eq!(
            standings,
            [
                Standing { used: 60, limit: 1000 },
                Standing { used: 1, limit: 10 },
                Standing { used: 0, limit: 500 },
                Standing { used: 0, limit: 1000 },
            ],
            "a record never written, or a window gone by, stands at 0"
        );
        assert_eq!((store.gets.get() - gets, store.sets.get() - sets), (2, 0), "two records read, none written");
        assert_eq!(store.used("c1", "tpm", 7), 60);
    }

    #[test]
    fn a_record_refuses_as_a_whole_and_keeps_its_other_counters() {
        let store = MemoryStore::default();
        assert!(reserve(&store, &[named("c", "daily", 5, 1000)], true).admitted(), "a limit this model does not meet");
        assert!(reserve(&store, &[named("c", "rpm", 1, 1)], true).admitted());
        let refused = reserve(&store, &[named("c", "tpm", 10, 100), named("c", "rpm", 1, 1)], true);
        assert_eq!(refused.exhausted, Some(1));
        assert_eq!(refused.standings[1], Some(Standing { used: 1, limit: 1 }));
        assert_eq!(refused.held, vec![false, false]);
        assert_eq!(
            (store.used("c", "tpm", 7), store.used("c", "rpm", 7), store.used("c", "daily", 7)),
            (0, 1, 5),
            "nothing of the refused record written, the other limit's counter untouched"
        );
    }

    #[test]
    fn counters_of_other_configurations_stay_until_the_record_is_crowded() {
        let store = MemoryStore::default();
        let mine = |name: &str| name.starts_with("mine");
        // Another plugin configuration (same VM, same shared data) counts "theirs" for this consumer.
        assert!(reserve(&store, &[named("c", "theirs", 5, 100)], true).admitted());
        assert!(super::reserve(&store, &[named("c", "mine", 1, 100)], true, &mine).admitted());
        assert_eq!((store.used("c", "theirs", 7), store.used("c", "mine", 7)), (5, 1), "both counted");
        // Each reload renames the limit: the names left behind pile up to the cap, then a write
        // keeps only its own configuration's.
        let names = |store: &MemoryStore| -> Vec<String> {
            let stored = store.get("c").unwrap().0;
            Record::decode(&stored).counters().map(|(n, _)| n.to_string()).collect()
        };
        for i in 0..MAX_RECORD_COUNTERS {
            let name = format!("renamed{i}");
            assert!(super::reserve(&store, &[named("c", &name, 1, 100)], true, &|n| n == name).admitted());
            assert!(names(&store).len() <= MAX_RECORD_COUNTERS);
        }
        assert_eq!(names(&store), ["renamed31", "renamed30"], "crowded at the 33rd name: the others dropped");
    }

    #[test]
    fn a_refusal_gives_back_earlier_reservations() {
        let store = MemoryStore::default();
        assert!(reserve(&store, &[charge("b", 50, 50)], true).admitted());
        let refused = reserve(&store, &[charge("a", 10, 100), charge("b", 1, 50), charge("c", 1, 9)], true);
        assert_eq!(refused.exhausted, Some(1));
        assert_eq!(refused.held, vec![false, false, false]);
        assert_eq!((store.used("a", "n", 7), store.used("c", "n", 7)), (0, 0));
    }

    #[test]
    fn shadow_mode_reserves_and_reports_what_would_have_refused() {
        let store = MemoryStore::default();
        let shadow =
            reserve(&store, &[charge("z", 1, 100), named("a", "x", 10, 100), named("a", "y", 150, 100)], false);
        assert_eq!(shadow.exhausted, Some(2));
        assert_eq!(shadow.held, vec![true, true, true]);
        assert_eq!(store.used("a", "y", 7), 150);
    }

    #[test]
    fn settle_refunds_and_charges_excess() {
        let store = MemoryStore::default();
        let c = charge("a", 100, 1000);
        assert!(reserve(&store, std::slice::from_ref(&c), true).admitted());
        assert!(settle_one(&store, &c, 40, 7));
        assert_eq!(store.used("a", "n", 7), 40, "unused reservation refunded");
        let c2 = charge("a", 10, 1000);
        assert!(reserve(&store, std::slice::from_ref(&c2), true).admitted());
        assert!(settle_one(&store, &c2, 35, 7));
        assert_eq!(store.used("a", "n", 7), 75, "excess charged");
    }

    #[test]
    fn settle_after_a_window_rollover_only_charges_excess_to_the_new_window() {
        let store = MemoryStore::default();
        let c = charge("a", 100, 1000);
        assert!(reserve(&store, std::slice::from_ref(&c), true).admitted());
        assert!(settle_one(&store, &c, 30, 8));
        assert_eq!(store.used("a", "n", 8), 0, "refund of an old window's reservation is moot");
        assert!(settle_one(&store, &c, 130, 8));
        assert_eq!(store.used("a", "n", 8), 30, "excess goes to the current window");
    }

    #[test]
    fn cas_conflicts_are_retried_and_counted() {
        let store = MemoryStore::default();
        assert!(reserve(&store, &[charge("a", 1, 100)], true).admitted());
        store.conflicts.set(5);
        let r = reserve(&store, &[charge("a", 1, 100), named("a", "m", 2, 100)], true);
        assert!(r.admitted());
        assert_eq!(r.retries, 5);
        assert_eq!((store.used("a", "n", 7), store.used("a", "m", 7)), (2, 2), "exactly one increment each");
    }

    #[test]
    fn endless_conflicts_skip_the_record_instead_of_looping() {
        let store = MemoryStore::default();
        assert!(reserve(&store, &[charge("a", 1, 100)], true).admitted());
        store.conflicts.set(MAX_CAS_RETRIES + 10);
        let r = reserve(&store, &[charge("a", 1, 100), named("a", "m", 1, 100)], true);
        assert!(r.admitted());
        assert_eq!((r.skipped, r.held[0], r.held[1]), (2, false, false));
    }

    #[test]
    fn interleaved_reservations_never_exceed_the_limit() {
        // Two "workers" alternately read and write the same record; CAS makes one of them
        // retry, and the total admitted never passes the limit.
        let store = MemoryStore::default();
        let mut admitted = 0;
        for i in 0..200 {
            if i % 3 == 0 {
                store.conflicts.set(1);
            }
            if reserve(&store, &[charge("a", 7, 500), named("a", "rpm", 1, 1000)], true).admitted() {
                admitted += 7;
            }
        }
        assert_eq!(admitted, store.used("a", "n", 7));
        assert_eq!(admitted / 7, store.used("a", "rpm", 7));
        assert!(admitted <= 500 && admitted > 500 - 7);
    }
}
