//! Agents: registering, revoking, and learning of one another instance
//! registered.

use deploybot_store::{NewRegistration, Registered, StoreError};
use deploybot_wire::{AgentStatus, Job};

use super::{Actor, Queue};

impl Queue {
    /// Registers an agent, or registers it again with a new token: its
    /// previous token stops working and the jobs its previous session ran
    /// are lost.
    pub async fn register(
        &self,
        registration: NewRegistration,
        by: &Actor,
    ) -> Result<Registered, StoreError> {
        let used_enrollment_token = registration.use_enrollment_token.clone();
        let registered = self.store.register_agent(registration).await?;
        if let Some(used) = used_enrollment_token {
            self.auth.forget_token(&used);
        }
        let agent = &registered.agent;
        self.auth.forget_agent(&agent.id);
        self.presence.registered(agent);
        let target = if registered.replaced {
            format!(
                "agent {} ({}): a new token; the previous one stopped working",
                agent.id, agent.hostname
            )
        } else {
            format!("agent {} ({})", agent.id, agent.hostname)
        };
        self.audit(by, "register", target).await;
        for job in &registered.lost {
            tracing::warn!(job = %job.id, agent = %agent.id, "job lost: its agent restarted");
            self.job_ended(job);
        }
        tracing::info!(agent = %agent.id, host = %agent.hostname, by = %by.name, "agent registered");
        Ok(registered)
    }

    /// Revokes an agent: its token stops working at once, its held
    /// long-poll ends, and the job it ran is lost.
    pub async fn revoke_agent(&self, agent_id: String, by: &Actor) -> Result<Vec<Job>, StoreError> {
        let lost = self.store.revoke_agent(agent_id.clone()).await?;
        self.agent_revoked(&agent_id);
        for job in &lost {
            self.job_ended(job);
        }
        self.audit(by, "revoke_agent", format!("agent {agent_id}"))
            .await;
        tracing::warn!(agent = %agent_id, by = %by.name, "agent revoked");
        Ok(lost)
    }

    pub(super) fn agent_revoked(&self, agent_id: &str) {
        self.auth.forget_agent(agent_id);
        // Its held long-poll, if any, wakes and finds it revoked.
        if let Some(host) = self.presence.revoked(agent_id) {
            self.dispatch.job_enqueued(&host);
        }
    }

    /// Records a heartbeat; the agent's host, or `None` for an agent the
    /// database does not know (or revoked). An agent this instance does
    /// not hold yet registered through another instance sharing the
    /// database (behind a balancer an agent's requests reach them all): it
    /// is looked up and kept.
    pub async fn heartbeat_of_unknown(
        &self,
        agent_id: &str,
        status: AgentStatus,
    ) -> Result<Option<String>, StoreError> {
        let Some(agent) = self.store.agent(agent_id.to_owned()).await? else {
            return Ok(None);
        };
        self.presence.registered(&agent);
        Ok(self.presence.beat(agent_id, status))
    }

    /// Whether the agent is registered and not revoked, as far as this
    /// instance knows.
    pub fn knows_agent(&self, agent_id: &str) -> bool {
        self.presence.knows(agent_id)
    }
}
