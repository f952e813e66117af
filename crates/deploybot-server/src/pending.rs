//! Why a pending job waits, when it is for want of an agent: said on the
//! job (API and CLI) so that nobody waits in silence for a host that has no
//! agent, or whose agent has gone quiet.

use std::collections::HashMap;
use std::time::Duration;

use deploybot_wire::{Agent, AgentStatus, Job, JobStatus, Timestamp};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::queue::Queue;

/// The reason a job for `host` waits, given the host's agent as the
/// controller sees it now (`None`: no agent registered for the host).
pub fn reason(host: &str, agent: Option<&Agent>, now: Timestamp) -> Option<String> {
    let Some(agent) = agent else {
        return Some(format!(
            "no agent has registered for {host}; the job waits for one"
        ));
    };
    if agent.status != AgentStatus::Offline {
        return None;
    }
    Some(match agent.last_heartbeat {
        Some(seen) => format!(
            "the agent of {host} has been silent for {}s; the job waits for it",
            (now - seen).whole_seconds().max(0)
        ),
        None => format!("the agent of {host} has never been heard from; the job waits for it"),
    })
}

/// Sets `pending_reason` on the pending jobs among `jobs` (one read of the
/// agents, only when some job is pending).
pub async fn annotate(
    queue: &Queue,
    offline_after: Duration,
    jobs: &mut [Job],
) -> Result<(), ApiError> {
    if !jobs.iter().any(|job| job.status == JobStatus::Pending) {
        return Ok(());
    }
    let mut agents = queue.store().agents().await?;
    let mut by_host: HashMap<String, Agent> = HashMap::with_capacity(agents.len());
    for mut agent in agents.drain(..) {
        queue.presence().refresh(&mut agent, offline_after);
        by_host.insert(agent.hostname.clone(), agent);
    }
    let now = OffsetDateTime::now_utc();
    for job in jobs.iter_mut().filter(|j| j.status == JobStatus::Pending) {
        job.pending_reason = reason(&job.host, by_host.get(&job.host), now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(status: AgentStatus, seen_secs_ago: Option<i64>, now: Timestamp) -> Agent {
        Agent {
            id: "a1".into(),
            hostname: "web-01".into(),
            capabilities: Default::default(),
            status,
            registered_at: now - time::Duration::hours(1),
            last_heartbeat: seen_secs_ago.map(|s| now - time::Duration::seconds(s)),
        }
    }

    #[test]
    fn a_job_waits_for_a_missing_or_silent_agent_and_says_so() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            reason("edge-01", None, now).as_deref(),
            Some("no agent has registered for edge-01; the job waits for one")
        );
        let silent = agent(AgentStatus::Offline, Some(75), now);
        assert_eq!(
            reason("web-01", Some(&silent), now).as_deref(),
            Some("the agent of web-01 has been silent for 75s; the job waits for it")
        );
        // An agent that is there: the job waits its turn, nothing to say.
        for status in [AgentStatus::Idle, AgentStatus::Busy, AgentStatus::Online] {
            assert_eq!(
                reason("web-01", Some(&agent(status, Some(1), now)), now),
                None
            );
        }
    }
}
