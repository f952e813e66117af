//! What every handler shares.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use deploybot_apps::AppsConfig;
use deploybot_store::Store;

use crate::auth::Auth;
use crate::dispatch::Dispatch;
use crate::live::Live;
use crate::presence::Presence;
use crate::settings::Secret;

/// Cheap to clone and small: one `Arc`. Every held long-poll keeps a copy
/// in its request's state, so its size counts 10,000 times over.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    pub auth: Auth,
    pub metrics: crate::metrics::SharedMetrics,
    /// `/metrics` needs a read token.
    pub metrics_auth: bool,
    /// `/metrics` is served on its own address, not with the API.
    pub metrics_elsewhere: bool,
    pub apps: Arc<AppsHandle>,
    pub presence: Arc<Presence>,
    pub dispatch: Arc<Dispatch>,
    /// Webhook HMAC keys: the current secret, then the previous one.
    pub webhook_secrets: Vec<Secret>,
    /// Reverse proxies whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Agents silent this long are offline and lose their running job.
    pub lease_timeout: Duration,
    pub live: Live,
    /// Becomes `true` when the controller stops: held long-polls and streams end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    /// A running job became `lost` without its agent's report (the agent
    /// restarted, was revoked, went silent, or never got the job): count it,
    /// show it on the live streams, and free its host for the next job.
    pub fn job_lost(&self, job: &deploybot_wire::Job) {
        self.metrics.job_finished(job);
        self.live.job_changed(job);
        self.dispatch.job_enqueued(&job.host);
    }
}

/// The current apps.yaml, swapped whole on reload.
pub struct AppsHandle {
    current: RwLock<Arc<AppsConfig>>,
}

impl AppsHandle {
    pub fn new(config: AppsConfig) -> Self {
        AppsHandle {
            current: RwLock::new(Arc::new(config)),
        }
    }

    /// A snapshot: a request sees one version of the config throughout.
    pub fn get(&self) -> Arc<AppsConfig> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn replace(&self, config: AppsConfig) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
    }
}
