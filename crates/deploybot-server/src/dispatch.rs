//! Which hosts may have pending jobs: lets a heartbeat skip the database when
//! there is nothing for its host.
//!
//! This is only a hint, rebuilt from the database at start. It may say "maybe"
//! for a host with nothing pending (the claim then finds nothing and clears
//! it), but never "no" for a host with a pending job: a host is marked after
//! every committed enqueue, and cleared only if no enqueue marked it while the
//! claim that found nothing was running.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Dispatch {
    /// Host → how many times it was marked; compared before clearing.
    pending: Mutex<HashMap<String, u64>>,
}

/// What [`Dispatch::check`] saw; hand it back to [`Dispatch::found_nothing`].
#[derive(Debug, Clone, Copy)]
pub struct Mark(u64);

impl Dispatch {
    pub fn new(hosts_with_pending: impl IntoIterator<Item = String>) -> Self {
        Dispatch {
            pending: Mutex::new(hosts_with_pending.into_iter().map(|h| (h, 0)).collect()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A job for `host` was committed.
    pub fn job_enqueued(&self, host: &str) {
        let mut pending = self.lock();
        match pending.get_mut(host) {
            Some(marks) => *marks += 1,
            None => {
                pending.insert(host.to_owned(), 1);
            }
        }
    }

    /// `Some` when `host` may have a pending job.
    pub fn check(&self, host: &str) -> Option<Mark> {
        self.lock().get(host).copied().map(Mark)
    }

    /// A claim started after `check` returned `mark` found nothing pending.
    pub fn found_nothing(&self, host: &str, mark: Mark) {
        let mut pending = self.lock();
        if pending.get(host) == Some(&mark.0) {
            pending.remove(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enqueue_during_a_claim_keeps_the_host_marked() {
        let dispatch = Dispatch::new(["h1".to_owned()]);
        let mark = dispatch.check("h1").unwrap();
        dispatch.job_enqueued("h1");
        dispatch.found_nothing("h1", mark);
        assert!(dispatch.check("h1").is_some());

        let mark = dispatch.check("h1").unwrap();
        dispatch.found_nothing("h1", mark);
        assert!(dispatch.check("h1").is_none());
        assert!(dispatch.check("h2").is_none());
    }
}
