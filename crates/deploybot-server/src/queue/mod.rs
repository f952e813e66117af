//! The domain layer: every change of the controller's state, committed
//! through the store and then followed by what must happen because of it.
//!
//! A handler translates HTTP into one call here and the result back; it
//! never writes to the store itself, nor marks dispatch hints, sends live
//! events or counts metrics for a change. Each method below commits one
//! change (a transaction of the store) and only then does its follow-ups:
//! wake the long-polls of the hosts it concerns, tell the SSE streams,
//! count it, forget cached credentials it made stale, record it in the
//! audit log. Other instances' changes (PostgreSQL) arrive as store events
//! and get the same follow-ups ([`Queue::apply`]).
//!
//! - `jobs.rs`: deploy, retry, cancel, report; what a heartbeat hands out
//!   (claims, cancels) and frees (unheld jobs, expired leases).
//! - `deliveries.rs`: recording a webhook delivery and its jobs.
//! - `agents.rs`: registering and revoking agents, learning one another
//!   instance registered.
//! - `tokens.rs`: making and revoking API and enrollment tokens.
//! - `cluster.rs`: other instances' changes.
//!
//! Reads go straight to [`Queue::store`]: they change nothing, so nothing
//! follows them.

mod agents;
mod cluster;
mod deliveries;
mod jobs;
mod tokens;

use std::sync::Arc;

use deploybot_store::{NewAudit, Store};
use deploybot_wire::Job;

use crate::auth::{Auth, Caller};
use crate::dispatch::Dispatch;
use crate::live::Live;
use crate::metrics::SharedMetrics;
use crate::presence::Presence;

pub use agents::ForgetRefused;
pub use cluster::follow;

/// Who asks for a change, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `token:tok_…`, `agent:<id>`, `admin:config`, …
    pub name: String,
    /// The caller's address, when it came over HTTP.
    pub address: Option<String>,
}

impl Actor {
    pub fn new(caller: &Caller, address: Option<String>) -> Self {
        Actor {
            name: caller.actor(),
            address,
        }
    }
}

pub struct Queue {
    store: Arc<dyn Store>,
    dispatch: Dispatch,
    live: Live,
    metrics: SharedMetrics,
    presence: Presence,
    auth: Arc<Auth>,
}

impl Queue {
    pub fn new(
        store: Arc<dyn Store>,
        dispatch: Dispatch,
        presence: Presence,
        metrics: SharedMetrics,
        auth: Arc<Auth>,
    ) -> Self {
        Queue {
            store,
            dispatch,
            live: Live::default(),
            metrics,
            presence,
            auth,
        }
    }

    /// For reads (writes go through this type's methods).
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Agents' last-seen times.
    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// Which hosts may have work, and the long-polls waiting for it.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Job status changes, for SSE streams.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// The controller is stopping: every held long-poll answers now.
    pub fn stopping(&self) {
        self.dispatch.wake_all();
    }

    /// A job ended: by its agent's report, or `lost` without it (the
    /// agent restarted, was revoked, went silent, or never got the job).
    /// Count it, show it on the live streams, and let its host's next job
    /// go out.
    fn job_ended(&self, job: &Job) {
        self.metrics.job_finished(job);
        self.live.job_changed(job);
        self.dispatch.job_enqueued(&job.host);
    }

    /// Records a successful action. The action has happened by then, so a
    /// failure to record it is logged, not turned into an error.
    async fn audit(&self, by: &Actor, action: &str, target: String) {
        let entry = NewAudit {
            actor: by.name.clone(),
            action: action.to_owned(),
            target,
            address: by.address.clone(),
            result: "ok".to_owned(),
        };
        if let Err(err) = self.store.record_audit(entry.clone()).await {
            tracing::error!(error = %err, actor = %entry.actor, action, target = %entry.target, "cannot record an audit entry");
        }
    }

    /// Records what the controller itself did (a config reload).
    pub async fn audit_controller(&self, action: &str, target: String, result: String) {
        let entry = NewAudit {
            actor: "controller".to_owned(),
            action: action.to_owned(),
            target,
            address: None,
            result,
        };
        if let Err(err) = self.store.record_audit(entry).await {
            tracing::error!(error = %err, action, "cannot record an audit entry");
        }
    }
}
