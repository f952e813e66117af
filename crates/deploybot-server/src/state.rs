//! What every handler shares.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use deploybot_apps::AppsConfig;

use crate::auth::Auth;
use crate::queue::Queue;
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
    /// Every state change goes through it; reads through `queue.store()`.
    pub queue: Arc<Queue>,
    pub auth: Arc<Auth>,
    pub metrics: crate::metrics::SharedMetrics,
    /// `/metrics` needs a read token.
    pub metrics_auth: bool,
    /// `/metrics` is served on its own address, not with the API.
    pub metrics_elsewhere: bool,
    pub apps: Arc<AppsHandle>,
    /// Webhook HMAC keys: the current secret, then the previous one.
    pub webhook_secrets: Vec<Secret>,
    /// Reverse proxies whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Agents silent this long are offline and lose their running job.
    pub lease_timeout: Duration,
    /// Bytes of a job's output stored at most.
    pub max_job_output: u64,
    /// How far back the kept history goes: an older push deploys nothing,
    /// as a replay of it could not be recognised.
    pub history_kept: Duration,
    /// Memory that request bodies being read may hold, all together.
    pub body_budget: crate::body::BodyBudget,
    /// Becomes `true` when the controller stops: held long-polls and streams end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
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
