//! Jobs: deploying, retrying, cancelling, agents' reports, and what a
//! heartbeat hands out or frees.

use deploybot_store::{Claim, Enqueued, HeldJobs, NewJob, ReportOutcome, StatusReport, StoreError};
use deploybot_wire::{AgentStatus, Job, JobStatus, Timestamp};

use super::{Actor, Queue};

impl Queue {
    /// Queues a job someone asked for (`POST /v1/jobs`), unless an identical
    /// one is open. Called in the job's creation span.
    pub async fn deploy(&self, job: NewJob, by: &Actor) -> Result<Enqueued, StoreError> {
        let enqueued = self.store.enqueue(job).await?;
        if enqueued.created {
            let job = &enqueued.job;
            let target = format!("job {} ({} on {})", job.id, job.app, job.host);
            self.audit(by, "deploy", target).await;
            self.job_queued(job);
        }
        Ok(enqueued)
    }

    /// Queues attempt n+1 of a finished job. Called in the new job's
    /// creation span.
    pub async fn retry(
        &self,
        job_id: String,
        new_id: String,
        traceparent: Option<String>,
        by: &Actor,
    ) -> Result<Enqueued, StoreError> {
        let enqueued = self
            .store
            .retry_job(job_id.clone(), new_id, traceparent)
            .await?;
        if enqueued.created {
            let target = format!("job {job_id} → new attempt {}", enqueued.job.id);
            self.audit(by, "retry", target).await;
            self.job_queued(&enqueued.job);
        }
        Ok(enqueued)
    }

    /// A new job is committed: its host's agent may take it now.
    fn job_queued(&self, job: &Job) {
        self.dispatch.job_enqueued(&job.host);
        self.metrics.job_created(&job.app, job.source.as_str());
        tracing::info!("job queued");
    }

    /// Cancels a pending job, or asks the agent of a running one to stop it.
    pub async fn cancel(&self, job_id: String, by: &Actor) -> Result<Job, StoreError> {
        let job = self.store.cancel_job(job_id).await?;
        let target = format!("job {} ({} on {})", job.id, job.app, job.host);
        self.audit(by, "cancel", target).await;
        if job.status == JobStatus::Running {
            self.dispatch.cancel_requested(&job.host);
            tracing::info!(job = %job.id, host = %job.host, "cancel requested");
        } else {
            self.live.job_changed(&job);
            self.metrics.job_finished(&job);
            tracing::info!(job = %job.id, "job cancelled before it ran");
        }
        Ok(job)
    }

    /// Applies an agent's report on its job.
    pub async fn report(
        &self,
        job_id: String,
        report: StatusReport,
    ) -> Result<ReportOutcome, StoreError> {
        let outcome = self.store.report_status(job_id, report).await?;
        if let ReportOutcome::Updated(job) = &outcome {
            tracing::info!(job = %job.id, agent = job.assigned_agent.as_deref(), status = %job.status, "job finished");
            // The host is free: a long-poll of its agent held meanwhile can
            // take the next pending job now instead of at the end of its wait.
            self.job_ended(job);
            // The report is a sign of life, and the agent is idle from now
            // on: `hosts` must not show it busy until its next heartbeat.
            if job.status.is_final()
                && let Some(agent) = &job.assigned_agent
            {
                self.presence.beat(agent, AgentStatus::Idle);
            }
        }
        Ok(outcome)
    }

    /// Hands the host's next pending job to its agent, if the dispatch hint
    /// says there may be one.
    pub async fn claim(&self, agent: &str, host: &str) -> Result<Option<Job>, StoreError> {
        let Some(mark) = self.dispatch.check(host) else {
            return Ok(None);
        };
        match self
            .store
            .claim_job(agent.to_owned(), host.to_owned())
            .await?
        {
            Claim::Job(job) => {
                // Also a moment of the job's own trace (with OpenTelemetry):
                // when, and to which agent, it went.
                let span = tracing::info_span!("hand_out_job", job = %job.id, agent = %agent, host = %host);
                crate::trace::continue_trace(&span, job.traceparent.as_deref());
                span.in_scope(|| tracing::info!("job handed out"));
                self.live.job_changed(&job);
                self.metrics.job_started(&job);
                Ok(Some(*job))
            }
            Claim::HostBusy => Ok(None),
            Claim::NothingPending => {
                self.dispatch.found_nothing(host, mark);
                Ok(None)
            }
        }
    }

    /// The host's running jobs someone asked to cancel.
    pub async fn cancels_for(&self, host: &str) -> Result<Vec<String>, StoreError> {
        if !self.dispatch.may_cancel(host) {
            return Ok(Vec::new());
        }
        let ids = self.store.cancel_requests(host.to_owned()).await?;
        if ids.is_empty() {
            self.dispatch.cancels_handled(host);
        }
        Ok(ids)
    }

    /// Frees the host's job leased to this agent if the agent does not list
    /// it as running: the answer that handed it out never reached the agent
    /// (its controller died, or the connection broke), or the agent
    /// restarted without registering again. Otherwise the job would stay
    /// `running`, its lease renewed by the agent's heartbeats, and block the
    /// host for good.
    pub async fn free_unheld_jobs(
        &self,
        agent: &str,
        host: &str,
        running: Vec<String>,
        arrived: Timestamp,
    ) -> Result<(), StoreError> {
        let lost = self
            .store
            .lose_unheld_jobs(HeldJobs {
                agent_id: agent.to_owned(),
                host: host.to_owned(),
                running,
                claimed_before: arrived,
                reason: "agent lost: the agent is not running this job (the answer that handed it out never reached it, or it restarted)".to_owned(),
            })
            .await?;
        for job in &lost {
            tracing::warn!(job = %job.id, agent = %agent, "job lost: its agent does not have it");
            self.job_ended(job);
        }
        Ok(())
    }

    /// The running jobs of agents silent since `silent_since` become `lost`.
    pub async fn expire_leases(
        &self,
        silent_since: Timestamp,
        reason: String,
    ) -> Result<(), StoreError> {
        for job in self.store.expire_leases(silent_since, reason).await? {
            tracing::warn!(job = %job.id, host = %job.host, agent = job.assigned_agent.as_deref(), "job lost: its agent went silent");
            self.metrics.lease_expiries.inc();
            self.job_ended(&job);
        }
        Ok(())
    }
}
