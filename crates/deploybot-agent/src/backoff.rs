//! Exponential backoff with full jitter.
//!
//! Full jitter (a uniformly random delay between zero and the current cap)
//! spreads out a fleet of agents that all lost the controller at the same
//! moment, so they do not come back in lockstep when it returns.

use std::time::Duration;

use rand::Rng;

const FIRST: Duration = Duration::from_millis(200);
const CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    ceiling: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { ceiling: FIRST }
    }
}

impl Backoff {
    /// The delay before the next attempt; each call doubles the ceiling up to 30 s.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(CAP);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// After a success the next failure starts small again.
    pub(crate) fn reset(&mut self) {
        self.ceiling = FIRST;
    }

    /// For failures only a person can fix (a refused credential): no quick
    /// retries, which would also count against the controller's limit on
    /// failed authentications per address.
    pub(crate) fn saturate(&mut self) {
        self.ceiling = CAP;
    }

    /// Sleeps for [`next_delay`](Self::next_delay).
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut backoff = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(backoff.ceiling);
            assert!(backoff.next_delay() <= *ceilings.last().unwrap());
        }
        assert_eq!(ceilings[0], FIRST);
        assert_eq!(ceilings[1], FIRST * 2);
        assert_eq!(*ceilings.last().unwrap(), CAP);
        backoff.reset();
        assert_eq!(backoff.ceiling, FIRST);
        backoff.saturate();
        assert_eq!(backoff.ceiling, CAP);
    }
}
