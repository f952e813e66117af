//! What a job waits for, said on the job (API and CLI) so that nobody
//! waits in silence: a pending job's host has no agent, or a silent one; a
//! running job's agent has not been heard from since a heartbeat was due.

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

/// An agent heartbeats at least every long-poll (25 s by default): past
/// this, a heartbeat is overdue.
const OVERDUE_AFTER: Duration = Duration::from_secs(30);

/// Seconds since `agent` was heard from, once a heartbeat is overdue (at
/// most half of `offline_after` is waited for one, so that silence is said
/// well before the agent counts as offline) and while it is not offline.
pub fn silent_secs(agent: &Agent, offline_after: Duration, now: Timestamp) -> Option<u64> {
    let seen = agent.last_heartbeat?;
    let silent = u64::try_from((now - seen).whole_seconds()).ok()?;
    let overdue = OVERDUE_AFTER.min(offline_after / 2).as_secs().max(1);
    (agent.status != AgentStatus::Offline && silent >= overdue).then_some(silent)
}

/// Sets `pending_reason` on the pending jobs among `jobs`, and
/// `agent_silent_secs` on the running ones (one read of the agents, only
/// when some job is open).
pub async fn annotate(
    queue: &Queue,
    offline_after: Duration,
    jobs: &mut [Job],
) -> Result<(), ApiError> {
    if !jobs
        .iter()
        .any(|job| matches!(job.status, JobStatus::Pending | JobStatus::Running))
    {
        return Ok(());
    }
    let mut agents = queue.store().agents().await?;
    let mut by_host: HashMap<String, Agent> = HashMap::with_capacity(agents.len());
    for mut agent in agents.drain(..) {
        queue.presence().refresh(&mut agent, offline_after);
        by_host.insert(agent.hostname.clone(), agent);
    }
    let now = OffsetDateTime::now_utc();
    for job in jobs.iter_mut() {
        let agent = by_host.get(&job.host);
        match job.status {
            JobStatus::Pending => job.pending_reason = reason(&job.host, agent, now),
            JobStatus::Running => {
                job.agent_silent_secs = agent
                    .filter(|agent| job.assigned_agent.as_deref() == Some(agent.id.as_str()))
                    .and_then(|agent| silent_secs(agent, offline_after, now));
            }
            _ => {}
        }
    }
    Ok(())
}

/// [`annotate`] for one job.
pub async fn annotate_one(
    queue: &Queue,
    offline_after: Duration,
    job: Job,
) -> Result<Job, ApiError> {
    let mut one = [job];
    annotate(queue, offline_after, &mut one).await?;
    let [job] = one;
    Ok(job)
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
        // Heard from within the long-poll: not silent; past it: silent.
        let lease = Duration::from_secs(60);
        assert_eq!(
            silent_secs(&agent(AgentStatus::Busy, Some(20), now), lease, now),
            None
        );
        assert_eq!(
            silent_secs(&agent(AgentStatus::Busy, Some(44), now), lease, now),
            Some(44)
        );
        // Offline already: the job is (or is about to be) lost; not "silent".
        assert_eq!(
            silent_secs(&agent(AgentStatus::Offline, Some(75), now), lease, now),
            None
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
