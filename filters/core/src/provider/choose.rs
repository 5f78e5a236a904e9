//! Choosing among equivalent backends by measured latency or by price.
//!
//! Every backend's recent behaviour lives in the proxy's shared data (one record per backend,
//! shared by all workers): an exponentially weighted average of its time to first byte and of
//! its error rate (5xx, 429, resets), updated at the end of each exchange with compare-and-swap.
//!
//! Policy, per request:
//! 1. Backends whose error rate is above `max_error_rate` (once they have enough samples) are
//!    left out; if all are, the one with the lowest error rate is used.
//! 2. One request in twenty (by the request's own draw) goes to a uniformly drawn remaining
//!    backend, so the measurements of the others stay fresh and a recovered backend comes back.
//! 3. Otherwise `latency` takes the lowest average time to first byte (a backend without
//!    measurements first: it must be measured), and `cost` the lowest price for this request:
//!    estimated input tokens × input price + expected output tokens (`max_tokens`, else 256) ×
//!    output price.

use crate::quota::store::SharedStore;

/// Samples before a backend's error rate can take it out.
pub const MIN_SAMPLES: u32 = 5;
/// Weight of a new sample in the averages.
const ALPHA_PER_MILLE: u64 = 200;
/// One request in `EXPLORE` explores.
const EXPLORE: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Latency,
    Cost,
}

/// A candidate with its prices (USD per million tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub backend: usize,
    pub model: Option<String>,
    pub input_price: f64,
    pub output_price: f64,
}

/// What the proxy remembers of one backend: 16 bytes in shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Average time to first byte, µs.
    pub ttfb_us: u64,
    /// Average error rate, parts per million.
    pub error_ppm: u32,
    pub samples: u32,
}

impl Stats {
    pub fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&self.ttfb_us.to_le_bytes());
        let (c, d) = b.split_at_mut(4);
        c.copy_from_slice(&self.error_ppm.to_le_bytes());
        d.copy_from_slice(&self.samples.to_le_bytes());
        out
    }

    /// Anything that is not 16 bytes reads as "no measurements".
    pub fn decode(bytes: &[u8]) -> Stats {
        let Ok(bytes) = <[u8; 16]>::try_from(bytes) else { return Stats::default() };
        let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, c0, c1, c2, c3] = bytes;
        Stats {
            ttfb_us: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            error_ppm: u32::from_le_bytes([b0, b1, b2, b3]),
            samples: u32::from_le_bytes([c0, c1, c2, c3]),
        }
    }

    /// Folds one exchange in: its time to first byte (none for a failure before any byte) and
    /// whether it failed.
    pub fn record(self, ttfb_us: Option<u64>, failed: bool) -> Stats {
        let mix = |old: u64, new: u64| {
            if self.samples == 0 {
                new
            } else {
                (old * (1000 - ALPHA_PER_MILLE) + new * ALPHA_PER_MILLE) / 1000
            }
        };
        Stats {
            ttfb_us: ttfb_us.map_or(self.ttfb_us, |t| if self.ttfb_us == 0 { t } else { mix(self.ttfb_us, t) }),
            error_ppm: mix(u64::from(self.error_ppm), if failed { 1_000_000 } else { 0 }) as u32,
            samples: self.samples.saturating_add(1),
        }
    }

    fn healthy(&self, max_error_ppm: u32) -> bool {
        self.samples < MIN_SAMPLES || self.error_ppm <= max_error_ppm
    }
}

/// Shared-data key of a backend's record.
pub fn key(backend: &str) -> String {
    format!("tollgate.provider.stats.{backend}")
}

pub fn load(store: &dyn SharedStore, backend: &str) -> Stats {
    store.get(&key(backend)).map_or_else(Stats::default, |(bytes, _)| Stats::decode(&bytes))
}

/// Records one exchange (compare-and-swap, a few retries; a lost sample is harmless).
pub fn record(store: &dyn SharedStore, backend: &str, ttfb_us: Option<u64>, failed: bool) {
    let key = key(backend);
    for _ in 0..4 {
        let (current, cas) = store.get(&key).map_or((Stats::default(), 0), |(b, cas)| (Stats::decode(&b), cas));
        if store.set(&key, &current.record(ttfb_us, failed).encode(), cas).is_ok() {
            return;
        }
    }
}

/// The index (in `candidates`) to use. `stats` is in the same order; `draw` is the request's
/// uniform draw; `input_tokens` and `output_tokens` price the request for `cost`.
pub fn pick(
    policy: Policy,
    candidates: &[&Candidate],
    stats: &[Stats],
    max_error_ppm: u32,
    draw: u64,
    input_tokens: u64,
    output_tokens: u64,
) -> usize {
    let healthy: Vec<usize> =
        (0..candidates.len()).filter(|&i| stats.get(i).is_none_or(|s| s.healthy(max_error_ppm))).collect();
    if healthy.is_empty() {
        return (0..candidates.len()).min_by_key(|&i| stats.get(i).map_or(0, |s| s.error_ppm)).unwrap_or(0);
    }
    if draw.is_multiple_of(EXPLORE) && healthy.len() > 1 {
        let at = (draw / EXPLORE) as usize % healthy.len();
        return healthy.get(at).copied().unwrap_or(0);
    }
    let score = |i: usize| -> f64 {
        match policy {
            // Unmeasured first (0), then the fastest.
            Policy::Latency => stats.get(i).map_or(0, |s| if s.samples == 0 { 0 } else { s.ttfb_us.max(1) }) as f64,
            Policy::Cost => candidates
                .get(i)
                .map_or(f64::MAX, |c| c.input_price * input_tokens as f64 + c.output_price * output_tokens as f64),
        }
    };
    healthy.into_iter().min_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::store::MemoryStore;

    fn candidates() -> Vec<Candidate> {
        vec![
            Candidate { backend: 0, model: None, input_price: 3.0, output_price: 15.0 },
            Candidate { backend: 1, model: None, input_price: 0.15, output_price: 0.6 },
        ]
    }

    fn measured(ttfb_us: u64, error_ppm: u32) -> Stats {
        Stats { ttfb_us, error_ppm, samples: 50 }
    }

    #[test]
    fn latency_prefers_the_fastest_healthy_backend_and_explores() {
        let owned = candidates();
        let c: Vec<&Candidate> = owned.iter().collect();
        let stats = [measured(900_000, 0), measured(200_000, 0)];
        let picks: Vec<usize> = (0..1000).map(|d| pick(Policy::Latency, &c, &stats, 200_000, d, 100, 100)).collect();
        let slow = picks.iter().filter(|&&p| p == 0).count();
        assert!((20..=30).contains(&slow), "one in twenty explores, half of those to the slow one: {slow}");
        // An unmeasured backend is measured first.
        assert_eq!(pick(Policy::Latency, &c, &[Stats::default(), measured(1, 0)], 200_000, 1, 0, 0), 0);
        // A failing backend is left out however fast it is.
        let stats = [measured(900_000, 0), measured(100, 600_000)];
        assert!((0..100).all(|d| pick(Policy::Latency, &c, &stats, 200_000, d, 0, 0) == 0));
        // All failing: the least failing one.
        let stats = [measured(1, 900_000), measured(1, 500_000)];
        assert_eq!(pick(Policy::Latency, &c, &stats, 200_000, 1, 0, 0), 1);
    }

    #[test]
    fn cost_prices_the_request() {
        let mut owned = candidates();
        let stats = [measured(1, 0), measured(1, 0)];
        assert_eq!(pick(Policy::Cost, &owned.iter().collect::<Vec<_>>(), &stats, 200_000, 1, 1000, 100), 1);
        // Output-heavy requests can flip the choice when the price shapes differ.
        owned[1] = Candidate { backend: 1, model: None, input_price: 0.1, output_price: 20.0 };
        let c: Vec<&Candidate> = owned.iter().collect();
        assert_eq!(pick(Policy::Cost, &c, &stats, 200_000, 1, 100_000, 10), 1);
        assert_eq!(pick(Policy::Cost, &c, &stats, 200_000, 1, 10, 10_000), 0);
    }

    #[test]
    fn records_average_and_survive_the_store() {
        let store = MemoryStore::default();
        for _ in 0..10 {
            record(&store, "claude", Some(100_000), false);
        }
        record(&store, "claude", None, true);
        let s = load(&store, "claude");
        assert_eq!(s.samples, 11);
        assert_eq!(s.ttfb_us, 100_000);
        assert_eq!(s.error_ppm, 200_000, "one failure after ten successes: 20 %");
        assert_eq!(Stats::decode(&s.encode()), s);
        assert_eq!(Stats::decode(b"short"), Stats::default());
    }
}
