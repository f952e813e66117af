//! Which agents exist and when each was last seen.
//!
//! Heartbeats are the most frequent request. Their timestamps are soft state:
//! kept here, saved to the database in one batch per second, and never worth
//! an fsync of their own. After a crash at most a second of last-seen times is
//! lost, which changes nothing: an agent is offline only after the lease
//! timeout (a minute by default). The agent registry itself is durable: this
//! map is rebuilt from the database at start and updated after each
//! registration commits.

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

    /// Records a committed registration.
    pub fn registered(&self, agent: &Agent) {
        self.lock().insert(
            agent.id.clone(),
            Seen {
                hostname: agent.hostname.clone(),
                status: agent.status,
                last_seen: agent.last_heartbeat,
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

    /// Applies what only this map knows (fresher last-seen) and derives
    /// `offline` for agents silent longer than `offline_after`.
    pub fn refresh(&self, agent: &mut Agent, offline_after: Duration) {
        if let Some(seen) = self.lock().get(&agent.id) {
            agent.last_heartbeat = seen.last_seen.max(agent.last_heartbeat);
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
