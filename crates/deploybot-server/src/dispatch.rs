//! Which hosts may have pending jobs or cancel requests, and the long-polls
//! waiting for them.
//!
//! The hints let a heartbeat skip the database when there is nothing for its
//! host; the per-host [`Notify`] wakes a held long-poll the moment a job for
//! its host is committed or its running job is cancelled.
//!
//! This is only a hint, rebuilt from the database at start. It may say "maybe"
//! for a host with nothing pending (the claim then finds nothing and clears
//! it), but never "no" for a host with a pending job: a host is marked after
//! every committed enqueue, and cleared only if no enqueue marked it while the
//! claim that found nothing was running.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Dispatch {
    marks: Mutex<Marks>,
    /// Hosts whose running job someone asked to cancel.
    cancels: Mutex<HashSet<String>>,
    /// One wake-up per host, created when a long-poll first waits on it.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

#[derive(Debug, Default)]
struct Marks {
    /// Host → the mark of its latest enqueue; compared before clearing.
    by_host: HashMap<String, u64>,
    /// Marks are never reused, even after a host's entry is removed, so a
    /// stale [`Mark`] can never match a newer enqueue.
    last: u64,
}

/// What [`Dispatch::check`] saw; hand it back to [`Dispatch::found_nothing`].
#[derive(Debug, Clone, Copy)]
pub struct Mark(u64);

impl Dispatch {
    pub fn new(
        hosts_with_pending: impl IntoIterator<Item = String>,
        hosts_with_cancels: impl IntoIterator<Item = String>,
    ) -> Self {
        Dispatch {
            marks: Mutex::new(Marks {
                by_host: hosts_with_pending.into_iter().map(|h| (h, 0)).collect(),
                last: 0,
            }),
            cancels: Mutex::new(hosts_with_cancels.into_iter().collect()),
            waiters: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        lock(&self.marks)
    }

    /// A job for `host` was committed (or the host was freed and may have
    /// one): mark it and wake its long-poll.
    pub fn job_enqueued(&self, host: &str) {
        {
            let mut marks = self.lock();
            marks.last += 1;
            let mark = marks.last;
            marks.by_host.insert(host.to_owned(), mark);
        }
        self.wake(host);
    }

    /// The running job of `host` was asked to stop: tell its agent now.
    pub fn cancel_requested(&self, host: &str) {
        lock(&self.cancels).insert(host.to_owned());
        self.wake(host);
    }

    /// `true` when `host` may have a cancel request to deliver.
    pub fn may_cancel(&self, host: &str) -> bool {
        lock(&self.cancels).contains(host)
    }

    /// The host's cancel requests were found all handled.
    pub fn cancels_handled(&self, host: &str) {
        lock(&self.cancels).remove(host);
    }

    /// What a long-poll for `host` waits on. Call `enable()` on the
    /// `notified()` future before checking for work, so no wake-up is lost.
    pub fn waiter(&self, host: &str) -> Arc<Notify> {
        lock(&self.waiters)
            .entry(host.to_owned())
            .or_default()
            .clone()
    }

    /// Wakes every held long-poll, whatever its host (the controller is
    /// stopping: each then sees `stopping` set and answers).
    pub fn wake_all(&self) {
        for notify in lock(&self.waiters).values() {
            notify.notify_waiters();
        }
    }

    fn wake(&self, host: &str) {
        if let Some(notify) = lock(&self.waiters).get(host) {
            notify.notify_waiters();
        }
    }

    /// `Some` when `host` may have a pending job.
    pub fn check(&self, host: &str) -> Option<Mark> {
        self.lock().by_host.get(host).copied().map(Mark)
    }

    /// A claim started after `check` returned `mark` found nothing pending.
    pub fn found_nothing(&self, host: &str, mark: Mark) {
        let mut marks = self.lock();
        if marks.by_host.get(host) == Some(&mark.0) {
            marks.by_host.remove(host);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values: a panic elsewhere cannot leave them half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enqueue_during_a_claim_keeps_the_host_marked() {
        let dispatch = Dispatch::new(["h1".to_owned()], []);
        let mark = dispatch.check("h1").unwrap();
        dispatch.job_enqueued("h1");
        dispatch.found_nothing("h1", mark);
        assert!(dispatch.check("h1").is_some());

        let mark = dispatch.check("h1").unwrap();
        dispatch.found_nothing("h1", mark);
        assert!(dispatch.check("h1").is_none());
        assert!(dispatch.check("h2").is_none());
    }

    #[test]
    fn a_stale_mark_never_clears_a_later_enqueue() {
        let dispatch = Dispatch::default();
        dispatch.job_enqueued("h1");
        let stale = dispatch.check("h1").unwrap();
        dispatch.found_nothing("h1", stale);
        // The host was cleared and marked again: the old mark must not match.
        let fresh = dispatch.check("h1");
        assert!(fresh.is_none());
        dispatch.job_enqueued("h1");
        dispatch.found_nothing("h1", stale);
        assert!(dispatch.check("h1").is_some());
    }

    #[test]
    fn waking_all_wakes_every_registered_long_poll() {
        let dispatch = Dispatch::default();
        let (a, b) = (dispatch.waiter("h1"), dispatch.waiter("h2"));
        let (woken_a, woken_b) = (a.notified(), b.notified());
        let (mut woken_a, mut woken_b) = (std::pin::pin!(woken_a), std::pin::pin!(woken_b));
        woken_a.as_mut().enable();
        woken_b.as_mut().enable();

        dispatch.wake_all();

        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(woken_a.as_mut().poll(&mut cx).is_ready());
        assert!(woken_b.as_mut().poll(&mut cx).is_ready());
    }
}
