//! Which agents exist and when each was last seen.
//!
//! Heartbeats are the most frequent request. Their timestamps are soft state:
//! kept here, saved to the database in one batch per second, and never worth
//! an fsync of their own. After a crash at most a second of last-seen times is
//! lost, which changes nothing: an agent is offline only after the lease
//! timeout (a minute by default). The agent registry itself is durable: this
//! map is loaded from the database at start, updated after each
//! registration commits (here or, through the store's events, on another
//! instance), and an agent it does not hold is looked up in the database
//! on its first heartbeat: behind a round-robin balancer an agent's
//! requests reach every instance, whichever served its registration.
//!
//! Each instance sees only the heartbeats that reach it. The database holds
//! the newest of them all (every instance saves its own, and a saved time
//! never goes back), so [`Presence::refresh`] shows whichever is newer:
//! this instance's own or the database's.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deploybot_store::Beat;
use deploybot_wire::{Agent, AgentStatus, Timestamp};
use time::OffsetDateTime;

#[derive(Debug, Clone)]
struct Seen {
    hostname: String,
    status: AgentStatus,
    last_seen: Option<Timestamp>,
    /// Seen since the last save.
    dirty: bool,
    /// When this instance last compared the jobs the agent says it runs
    /// with the ones leased to it, and a hash of the list it compared.
    held_checked: Option<(Instant, u64)>,
}

/// How often a heartbeat's list of running jobs is compared with the
/// database, per agent and instance: a job whose hand-out answer was lost
/// blocks its host at most this long, and an agent heartbeating without
/// pause costs one read per interval.
const HELD_CHECK_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Presence {
    agents: Mutex<HashMap<String, Seen>>,
}

impl Presence {
    pub fn new(agents: &[Agent]) -> Self {
        let presence = Presence::default();
        for agent in agents {
            presence.registered(agent);
        }
        presence
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        // The map holds plain values; a panic elsewhere cannot leave it half-updated.
        self.agents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a committed registration, or an agent read from the database.
    pub fn registered(&self, agent: &Agent) {
        self.insert(
            &agent.id,
            &agent.hostname,
            agent.status,
            agent.last_heartbeat,
        );
    }

    /// Records a registration another instance committed just now.
    pub fn registered_elsewhere(&self, agent_id: &str, hostname: &str) {
        self.insert(agent_id, hostname, AgentStatus::Online, Some(now_ms()));
    }

    fn insert(
        &self,
        agent_id: &str,
        hostname: &str,
        status: AgentStatus,
        last_seen: Option<Timestamp>,
    ) {
        self.lock().insert(
            agent_id.to_owned(),
            Seen {
                hostname: hostname.to_owned(),
                status,
                last_seen,
                dirty: false,
                held_checked: None,
            },
        );
    }

    /// Forgets a revoked agent: its heartbeats are unknown from now on.
    /// Returns its host.
    pub fn revoked(&self, agent_id: &str) -> Option<String> {
        self.lock().remove(agent_id).map(|seen| seen.hostname)
    }

    /// Whether the agent is registered (and not revoked).
    pub fn knows(&self, agent_id: &str) -> bool {
        self.lock().contains_key(agent_id)
    }

    /// Records a heartbeat; returns the agent's hostname, or `None` for an
    /// unknown agent.
    pub fn beat(&self, agent_id: &str, status: AgentStatus) -> Option<String> {
        let mut agents = self.lock();
        let seen = agents.get_mut(agent_id)?;
        seen.status = status;
        seen.last_seen = Some(now_ms());
        seen.dirty = true;
        Some(seen.hostname.clone())
    }

    /// Whether the jobs the agent says it runs are due a check against the
    /// database; marks them checked. Due on the first heartbeat this
    /// instance sees from the agent, when the list changes, and every
    /// [`HELD_CHECK_EVERY`].
    pub fn held_check_due(&self, agent_id: &str, running: &[String]) -> bool {
        let mut hasher = std::hash::DefaultHasher::new();
        running.hash(&mut hasher);
        let listed = hasher.finish();
        let mut agents = self.lock();
        let Some(seen) = agents.get_mut(agent_id) else {
            return false;
        };
        let now = Instant::now();
        let due = seen.held_checked.is_none_or(|(at, before)| {
            before != listed || now.duration_since(at) >= HELD_CHECK_EVERY
        });
        if due {
            seen.held_checked = Some((now, listed));
        }
        due
    }

    /// The heartbeats not saved yet, marked saved.
    pub fn take_unsaved(&self) -> Vec<Beat> {
        let mut agents = self.lock();
        agents
            .iter_mut()
            .filter(|(_, seen)| seen.dirty)
            .filter_map(|(id, seen)| {
                seen.dirty = false;
                Some(Beat {
                    agent_id: id.clone(),
                    status: seen.status,
                    at: seen.last_seen?,
                })
            })
            .collect()
    }

    /// Puts beats that could not be saved back, unless newer ones arrived.
    pub fn unsaved_again(&self, beats: Vec<Beat>) {
        let mut agents = self.lock();
        for beat in beats {
            if let Some(seen) = agents.get_mut(&beat.agent_id) {
                seen.dirty = true;
            }
        }
    }

    /// Applies what only this map knows (a heartbeat newer than the saved
    /// one, and what it said) to `agent` as read from the database, and
    /// derives `offline` for agents silent longer than `offline_after`.
    pub fn refresh(&self, agent: &mut Agent, offline_after: Duration) {
        if let Some(seen) = self.lock().get(&agent.id)
            && seen.last_seen > agent.last_heartbeat
        {
            agent.last_heartbeat = seen.last_seen;
            agent.status = seen.status;
        }
        agent.status = effective_status(agent.status, agent.last_heartbeat, offline_after);
    }
}

/// Now, to the millisecond like the stored times.
fn now_ms() -> Timestamp {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now)
}

/// `offline` when the last heartbeat is older than `offline_after`.
pub fn effective_status(
    reported: AgentStatus,
    last_seen: Option<Timestamp>,
    offline_after: Duration,
) -> AgentStatus {
    let fresh = last_seen.is_some_and(|at| OffsetDateTime::now_utc() - at <= offline_after);
    if fresh {
        reported
    } else {
        AgentStatus::Offline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(status: AgentStatus, last_heartbeat: Option<Timestamp>) -> Agent {
        Agent {
            id: "a1".into(),
            hostname: "web-01".into(),
            capabilities: Default::default(),
            status,
            registered_at: now_ms() - time::Duration::minutes(5),
            last_heartbeat,
        }
    }

    const LEASE: Duration = Duration::from_secs(60);

    #[test]
    fn the_newer_of_this_instances_beat_and_the_saved_one_is_shown() {
        let presence = Presence::default();
        assert_eq!(presence.beat("a1", AgentStatus::Idle), None);
        presence.registered(&agent(AgentStatus::Online, Some(now_ms())));
        assert_eq!(
            presence.beat("a1", AgentStatus::Busy).as_deref(),
            Some("web-01")
        );

        // Saved earlier (by any instance): this instance's beat is newer.
        let mut saved = agent(
            AgentStatus::Idle,
            Some(now_ms() - time::Duration::seconds(3)),
        );
        presence.refresh(&mut saved, LEASE);
        assert_eq!(saved.status, AgentStatus::Busy);

        // Another instance saw (and saved) a newer beat: it wins.
        let newer = now_ms() + time::Duration::seconds(1);
        let mut saved = agent(AgentStatus::Online, Some(newer));
        presence.refresh(&mut saved, LEASE);
        assert_eq!(
            (saved.status, saved.last_heartbeat),
            (AgentStatus::Online, Some(newer))
        );
    }

    #[test]
    fn silent_agents_are_offline_and_registrations_elsewhere_are_known() {
        let presence = Presence::default();
        let mut silent = agent(
            AgentStatus::Idle,
            Some(now_ms() - time::Duration::seconds(61)),
        );
        presence.refresh(&mut silent, LEASE);
        assert_eq!(silent.status, AgentStatus::Offline);

        presence.registered_elsewhere("a2", "web-02");
        assert!(presence.knows("a2"));
        assert_eq!(
            presence.beat("a2", AgentStatus::Idle).as_deref(),
            Some("web-02")
        );
        assert_eq!(presence.revoked("a2").as_deref(), Some("web-02"));
        assert!(!presence.knows("a2"));
    }
}
