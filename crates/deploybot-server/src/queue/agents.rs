//! Agents: registering, revoking, and learning of one another instance
//! registered.

use std::time::Duration;

use deploybot_store::{NewRegistration, Registered, StoreError};
use deploybot_wire::{Agent, AgentStatus, Job};

use super::{Actor, Queue};

/// Why a host cannot be forgotten.
#[derive(Debug, thiserror::Error)]
pub enum ForgetRefused {
    #[error("{host} is deployed to by {}: remove it from apps.yaml first", apps.join(", "))]
    Listed { host: String, apps: Vec<String> },
    #[error("no agent has registered for {host}: there is nothing to forget")]
    NoAgent { host: String },
    #[error(
        "the agent of {host} is not silent (its status is {status}): stop it first; a host is forgotten only once no agent uses it"
    )]
    InUse { host: String, status: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The agent to forget with `host`, which the apps `listed_by` deploy to,
/// given its agent `agent` (its status as seen now); or why not.
pub fn may_forget(
    host: &str,
    listed_by: Vec<String>,
    agent: Option<Agent>,
) -> Result<Agent, ForgetRefused> {
    if !listed_by.is_empty() {
        return Err(ForgetRefused::Listed {
            host: host.to_owned(),
            apps: listed_by,
        });
    }
    match agent {
        None => Err(ForgetRefused::NoAgent {
            host: host.to_owned(),
        }),
        Some(agent) if agent.status != AgentStatus::Offline => Err(ForgetRefused::InUse {
            host: host.to_owned(),
            status: agent.status.as_str(),
        }),
        Some(agent) => Ok(agent),
    }
}

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

    /// Forgets a host no app lists and no agent uses any more (its agent
    /// is silent beyond `offline_after`): its agent record goes, so the
    /// host leaves the hosts list. Returns the forgotten agent.
    pub async fn forget_host(
        &self,
        host: &str,
        listed_by: Vec<String>,
        offline_after: Duration,
        by: &Actor,
    ) -> Result<Agent, ForgetRefused> {
        let mut agent = self
            .store
            .agents()
            .await?
            .into_iter()
            .find(|agent| agent.hostname == host);
        if let Some(agent) = &mut agent {
            self.presence.refresh(agent, offline_after);
        }
        let agent = may_forget(host, listed_by, agent)?;
        self.store.forget_agent(agent.id.clone()).await?;
        self.agent_revoked(&agent.id);
        self.audit(
            by,
            "forget_host",
            format!("host {host} (agent {})", agent.id),
        )
        .await;
        tracing::info!(host, agent = %agent.id, by = %by.name, "host forgotten");
        Ok(agent)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(status: AgentStatus) -> Agent {
        Agent {
            id: "a1".into(),
            hostname: "old-01".into(),
            capabilities: Default::default(),
            status,
            registered_at: time::OffsetDateTime::now_utc(),
            last_heartbeat: None,
        }
    }

    #[test]
    fn only_a_host_no_app_lists_and_no_live_agent_uses_is_forgotten() {
        let offline = agent(AgentStatus::Offline);
        assert_eq!(
            may_forget("old-01", vec![], Some(offline.clone()))
                .unwrap()
                .id,
            "a1"
        );
        let listed = may_forget("old-01", vec!["web".into()], Some(offline)).unwrap_err();
        assert_eq!(
            listed.to_string(),
            "old-01 is deployed to by web: remove it from apps.yaml first"
        );
        assert!(matches!(
            may_forget("old-01", vec![], None),
            Err(ForgetRefused::NoAgent { .. })
        ));
        for status in [AgentStatus::Idle, AgentStatus::Busy, AgentStatus::Online] {
            assert!(matches!(
                may_forget("old-01", vec![], Some(agent(status))),
                Err(ForgetRefused::InUse { .. })
            ));
        }
    }
}
