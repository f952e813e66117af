//! What a job's end is reported as, and reporting it.
//!
//! A report is retried for as long as the controller is unreachable: a
//! deploy that ran must not end up `lost` because the network blinked.

use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use deploybot_wire::{Job, JobStatus, UpdateJobStatusRequest};

use crate::backoff::Backoff;
use crate::client::{Client, TraceParent};
use crate::job::JobSettings;
use crate::orphans::Leftover;
use crate::output::Tail;

/// How long the report of a previous run's deploy may take: the agent does
/// not start before it is done.
const LEFTOVER_REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a job ended, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) status: JobStatus,
    pub(crate) exit_code: Option<i32>,
    pub(crate) error: Option<String>,
}

impl Outcome {
    pub(crate) fn failed(exit_code: Option<i32>, error: String) -> Self {
        Outcome {
            status: JobStatus::Failed,
            exit_code,
            error: Some(error),
        }
    }
}

pub(crate) fn exited(status: ExitStatus, tail: &Tail) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome {
            status: JobStatus::Success,
            exit_code: Some(0),
            error: None,
        },
        (Some(code), _) if tail.is_empty() => {
            Outcome::failed(Some(code), format!("exited with code {code}"))
        }
        (Some(code), _) => Outcome::failed(Some(code), tail.text()),
        (None, signal) => {
            let signal = signal.map_or_else(|| "?".to_owned(), |s| s.to_string());
            Outcome::failed(None, with_tail(format!("killed by signal {signal}"), tail))
        }
    }
}

pub(crate) fn with_tail(mut reason: String, tail: &Tail) -> String {
    if !tail.is_empty() {
        reason.push('\n');
        reason.push_str(&tail.text());
    }
    reason
}

/// `45s`, `10m`, `1h30m`: how apps.yaml spells timeouts.
pub(crate) fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut text = String::new();
    for (value, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s")] {
        if value > 0 {
            let _ = write!(text, "{value}{unit}");
        }
    }
    if text.is_empty() {
        text.push_str("0s");
    }
    text
}

/// Reports the outcome until the controller has it: transient failures are
/// retried for as long as it takes, and so is a refused agent token (401),
/// once the agent has registered again; a refusal (409, 404) ends it.
pub(crate) async fn report(
    settings: &JobSettings,
    job_id: &str,
    lease: Option<i64>,
    traceparent: Option<&TraceParent>,
    outcome: Outcome,
) {
    let request = UpdateJobStatusRequest {
        status: outcome.status,
        error: outcome.error,
        exit_code: outcome.exit_code,
        agent_id: Some(settings.agent_id.clone()),
        lease,
    };
    let mut backoff = Backoff::default();
    loop {
        match settings
            .client
            .update_status(job_id, traceparent, &request)
            .await
        {
            Ok(()) => {
                tracing::info!(status = %request.status, exit_code = request.exit_code, "deploy reported");
                return;
            }
            Err(err) if err.is_unauthorized() => {
                tracing::warn!(job = %job_id, "report refused: the agent token is no longer valid; waiting for the agent to register again");
                settings.client.renewed().await;
            }
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err, "cannot report the deploy yet; retrying");
                backoff.wait().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "the controller refused the deploy's report");
                return;
            }
        }
    }
}

/// Reports the deploys a killed run of this agent left (see `orphans`),
/// once each: a controller that cannot take the report now marks the job
/// lost when the agent registers, which says as much.
pub(crate) async fn leftovers(client: &Client, leftovers: Vec<Leftover>) {
    for leftover in leftovers {
        let request = UpdateJobStatusRequest {
            status: JobStatus::Failed,
            error: Some(leftover.error()),
            exit_code: None,
            agent_id: Some(leftover.record.agent_id.clone()),
            lease: leftover.record.lease,
        };
        let job = &leftover.record.job_id;
        match tokio::time::timeout(
            LEFTOVER_REPORT_TIMEOUT,
            client.update_status(job, None, &request),
        )
        .await
        {
            Ok(Ok(())) => {
                tracing::info!(%job, killed = leftover.killed, "reported the deploy the agent's previous run left");
            }
            Ok(Err(err)) => {
                tracing::info!(%job, error = %err, "the controller did not take the report of the previous run's deploy");
            }
            Err(_) => {
                tracing::warn!(%job, "cannot report the previous run's deploy: no answer");
            }
        }
    }
}

/// Turns down a job the agent will not run (it is draining, or already busy),
/// so it fails visibly now instead of waiting for its lease to expire.
pub(crate) async fn refuse(settings: JobSettings, job: Job, reason: String) {
    tracing::warn!(job = %job.id, %reason, "turning down a job");
    let traceparent = TraceParent::of(&job);
    let outcome = Outcome::failed(None, reason);
    report(&settings, &job.id, job.lease, traceparent.as_ref(), outcome).await;
}

/// Answers the cancel of a job the controller thinks runs here but this agent
/// never heard of (its hand-out was lost with a dropped heartbeat): without
/// this report the job would stay `running` on the host for as long as this
/// agent heartbeats. No lease: we never had it; the agent id vouches for us.
pub(crate) async fn disown(settings: JobSettings, job_id: String) {
    tracing::warn!(job = %job_id, "cancel of a job this agent is not running; reporting it cancelled");
    let outcome = Outcome {
        status: JobStatus::Cancelled,
        exit_code: None,
        error: Some("the agent was not running this job".to_owned()),
    };
    report(&settings, &job_id, None, None, outcome).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_apps_yaml() {
        assert_eq!(human(Duration::from_secs(1)), "1s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(3661)), "1h1m1s");
        assert_eq!(human(Duration::ZERO), "0s");
    }

    #[test]
    fn exit_statuses_become_outcomes() {
        let tail = Tail::default();
        assert_eq!(
            exited(ExitStatus::from_raw(0), &tail).status,
            JobStatus::Success
        );
        let failed = exited(ExitStatus::from_raw(3 << 8), &tail);
        assert_eq!(failed.exit_code, Some(3));
        assert_eq!(failed.error.as_deref(), Some("exited with code 3"));
        let killed = exited(ExitStatus::from_raw(libc::SIGKILL), &tail);
        assert_eq!(killed.exit_code, None);
        assert_eq!(killed.error.as_deref(), Some("killed by signal 9"));
    }
}
