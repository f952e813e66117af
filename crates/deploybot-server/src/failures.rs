//! Counting wrong tokens per client address, in a table of fixed size.
//!
//! An address that presents more than its allowance of wrong tokens in a
//! [`WINDOW`] is refused (429) until the window ends. The table never grows
//! and every update looks at a handful of slots: an address's slots are
//! chosen by a hash keyed at random per process (so nobody can aim at
//! another's slots), and a full neighbourhood gives up the entry with the
//! fewest failures (the least recent of those): one-off mistakes go before
//! an address that keeps guessing.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once (about 40 bytes each).
const SLOTS: usize = 8192;
/// Slots an address may use, next to each other.
const PROBES: usize = 4;

#[derive(Clone, Copy)]
struct Entry {
    address: IpAddr,
    count: u32,
    /// When its window started.
    since: Instant,
    /// Its latest failure.
    last: Instant,
}

pub struct FailureTable {
    slots: Box<[Option<Entry>]>,
    hasher: std::hash::RandomState,
    /// Wrong tokens an address may present per window; 0: no limit.
    allowed: u32,
}

impl FailureTable {
    pub fn new(allowed: u32) -> Self {
        FailureTable {
            slots: vec![None; SLOTS].into_boxed_slice(),
            hasher: std::hash::RandomState::new(),
            allowed,
        }
    }

    fn neighbourhood(&self, address: IpAddr) -> impl Iterator<Item = usize> {
        let start = self.hasher.hash_one(address) as usize % SLOTS;
        (0..PROBES).map(move |i| (start + i) % SLOTS)
    }

    fn find(&self, address: IpAddr) -> Option<usize> {
        self.neighbourhood(address)
            .find(|&i| self.slots[i].is_some_and(|e| e.address == address))
    }

    /// Counts a wrong token from `address` at `now`.
    pub fn failed(&mut self, address: IpAddr, now: Instant) {
        if let Some(i) = self.find(address) {
            let entry = self.slots[i].as_mut().expect("found");
            if now.duration_since(entry.since) >= WINDOW {
                entry.count = 0;
                entry.since = now;
            }
            entry.count += 1;
            entry.last = now;
            return;
        }
        // A free slot, an expired one, or the one with the fewest failures.
        let slot = self
            .neighbourhood(address)
            .min_by_key(|&i| match self.slots[i] {
                None => (0, 0, now),
                Some(e) if now.duration_since(e.since) >= WINDOW => (1, 0, e.last),
                Some(e) => (2, e.count, e.last),
            })
            .expect("at least one probe");
        self.slots[slot] = Some(Entry {
            address,
            count: 1,
            since: now,
            last: now,
        });
    }

    /// `Some(seconds to wait)` when `address` has used up its wrong tokens.
    pub fn throttled(&self, address: IpAddr, now: Instant) -> Option<u64> {
        if self.allowed == 0 {
            return None;
        }
        let entry = self.slots[self.find(address)?]?;
        let elapsed = now.duration_since(entry.since);
        (entry.count > self.allowed && elapsed < WINDOW)
            .then(|| WINDOW.saturating_sub(elapsed).as_secs() + 1)
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: u32 = 20;

    fn address(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn an_allowance_of_zero_never_throttles() {
        let mut table = FailureTable::new(0);
        let now = Instant::now();
        for _ in 0..1000 {
            table.failed(address(7), now);
        }
        assert_eq!(table.throttled(address(7), now), None);
    }

    #[test]
    fn an_address_is_throttled_past_its_allowance_until_the_window_ends() {
        let mut table = FailureTable::new(ALLOWED);
        let start = Instant::now();
        let a = address(7);
        for _ in 0..ALLOWED {
            table.failed(a, start);
        }
        assert_eq!(table.throttled(a, start), None);
        table.failed(a, start);
        assert_eq!(table.throttled(a, start), Some(61));
        assert_eq!(table.throttled(address(8), start), None);
        let later = start + WINDOW;
        assert_eq!(table.throttled(a, later), None);
        table.failed(a, later);
        assert_eq!(table.throttled(a, later), None);
    }

    #[test]
    fn the_table_never_grows_and_an_active_attacker_stays_throttled() {
        let mut table = FailureTable::new(ALLOWED);
        let start = Instant::now();
        let attacker = address(1);
        for _ in 0..=ALLOWED {
            table.failed(attacker, start);
        }
        // 200,000 other addresses fail once each, over half a minute, while
        // the attacker keeps failing.
        for n in 0..200_000u32 {
            let now = start + Duration::from_micros(u64::from(n) * 150);
            table.failed(address(1_000_000 + n), now);
            if n % 100 == 0 {
                table.failed(attacker, now);
            }
        }
        assert!(table.tracked() <= SLOTS);
        let now = start + Duration::from_secs(30);
        assert!(table.throttled(attacker, now).is_some());
    }
}
