//! The DeployBot controller.
//!
//! Map of this crate:
//! - [`settings`]: layered settings (defaults, file, env, flags) and `config example`.
//! - [`Controller`]: opens the store, loads apps.yaml, binds the socket; `run`
//!   serves until the shutdown future resolves.
//! - `routes/`: one module per API resource; `routes::router` assembles them.
//! - `webhook`: reading GitHub deliveries; `push_plan`: what a push deploys
//!   (a pure decision).
//! - `presence`: agents' last-seen times (soft state, saved in batches).
//! - `dispatch`: which hosts may have pending jobs or cancels, and the
//!   long-polls waiting for them.
//! - `live`: the broadcast behind the SSE log stream.
//! - `queue`: the domain layer: every state change and what follows it
//!   (dispatch hints, live events, metrics, audit), also other instances'.
//! - `maintenance`: saving heartbeats, expiring leases, pruning logs.
//! - `error`: the one error type and the extractors that use it.
//! - `body`: the memory budget all request bodies share; `unread_body`:
//!   `Connection: close` on answers given before a body was read.
//! - `auth`, `failures`: tokens and roles; the per-address limit on wrong
//!   tokens.
//! - `openapi/`: the document's shared answers, links and SSE events.
//! - `request_id`, `trace`: every request's id and span; W3C trace context
//!   in (`traceparent` headers) and out (jobs' `traceparent`).
//!
//! Architecture invariant: handlers reach the database only through
//! [`deploybot_store::Store`]; in-memory structures are hints or caches
//! rebuilt from the store at start.

#![forbid(unsafe_code)]

mod auth;
mod body;
mod dispatch;
mod error;
mod failures;
mod http_metrics;
mod live;
mod maintenance;
mod metrics;
mod openapi;
mod presence;
mod push_plan;
mod queue;
mod request_id;
mod routes;
mod serve;
pub mod settings;
mod state;
mod tls;
mod trace;
mod unread_body;
mod waiting;
mod webhook;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deploybot_apps::{AppsConfig, AppsError};
use deploybot_store::StoreError;
use tokio::net::TcpListener;

pub use auth::{API_PREFIX, ENROLL_PREFIX, new_token};
pub use settings::{Settings, SettingsError, SettingsLayer};

use dispatch::Dispatch;
use presence::Presence;
use queue::Queue;
use state::{AppState, AppsHandle};

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Settings(#[from] SettingsError),
    #[error("{0}")]
    Apps(#[from] AppsError),
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
}

/// A controller ready to serve: store open, config loaded, socket bound.
pub struct Controller {
    listener: TcpListener,
    /// `/metrics` on its own address, when configured.
    metrics_listener: Option<TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Registered at start, so a SIGHUP right after the readiness line reloads.
    #[cfg(unix)]
    hangups: Option<tokio::signal::unix::Signal>,
    state: AppState,
    stop: tokio::sync::watch::Sender<bool>,
    apps_path: PathBuf,
    apps_required: bool,
    retention: maintenance::Retention,
    bootstrap_admin_token: Option<String>,
    /// Connections served at once; more are answered 503.
    max_connections: usize,
    /// Other instances' changes, since just before the hints were read.
    events: tokio::sync::broadcast::Receiver<deploybot_store::StoreEvent>,
}

/// With no admin token configured and none in the database, makes one: the
/// only way in for a fresh install. Returned to be shown once.
async fn bootstrap_admin(
    store: &dyn deploybot_store::Store,
    auth: &auth::Auth,
) -> Result<Option<String>, StartError> {
    if auth.has_configured_admin() || store.any_admin_token().await? {
        return Ok(None);
    }
    let token = auth::new_token(auth::API_PREFIX);
    let info = store
        .create_token(deploybot_store::NewToken {
            id: auth::new_token_id(),
            hash: auth::hash_token(&token),
            name: "bootstrap admin".to_owned(),
            role: deploybot_wire::TokenRole::Admin,
            apps: None,
            single_use: false,
            expires_at: None,
            hostname: None,
        })
        .await?;
    store
        .record_audit(deploybot_store::NewAudit {
            actor: "controller".to_owned(),
            action: "create_token".to_owned(),
            target: info.id,
            address: None,
            result: "ok: the bootstrap admin token, made on first start".to_owned(),
        })
        .await?;
    Ok(Some(token))
}

fn load_apps(path: &Path, required: bool) -> Result<Option<AppsConfig>, AppsError> {
    match AppsConfig::load(path) {
        Err(AppsError::Read { source, .. })
            if !required && source.kind() == io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        other => other.map(Some),
    }
}

impl Controller {
    pub async fn start(settings: Settings) -> Result<Self, StartError> {
        let apps = match load_apps(&settings.apps, settings.apps_required)? {
            Some(apps) => apps,
            None => {
                tracing::warn!(
                    path = %settings.apps.display(),
                    "no apps.yaml found: starting with no apps (set --apps or DEPLOYBOT_APPS)"
                );
                AppsConfig::default()
            }
        };
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        let store = deploybot_store::open(&settings.database_url).await?;
        routes::health::started(&settings.database_url);
        let agents = store.agents().await?;
        // Subscribed before the hints are read, so a change another instance
        // commits in between is either in what is read or in the events.
        let events = store.events();
        let pending = store.hosts_with_pending_jobs().await?;
        let cancels = store.hosts_with_cancel_requests().await?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        if settings.webhook_secret.is_none() {
            tracing::warn!(
                "no webhook secret configured: GitHub webhooks will be refused until DEPLOYBOT_WEBHOOK_SECRET is set"
            );
        }
        warn_of_weak_secrets(&settings, &apps);
        tracing::info!(
            apps = apps.apps().len(),
            agents = agents.len(),
            hosts_with_pending_jobs = pending.len(),
            database = %deploybot_store::redact_url(&settings.database_url),
            "controller ready"
        );
        let auth = Arc::new(auth::Auth::new(
            settings.insecure_no_auth,
            settings.admin_token.as_ref(),
            settings.enrollment_token.as_ref(),
            settings.auth_failures_per_minute,
        ));
        let bootstrap_admin_token = if settings.insecure_no_auth {
            tracing::warn!(
                "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach {} can deploy, cancel and read everything. Use this for local experiments only.",
                settings.listen
            );
            None
        } else {
            bootstrap_admin(store.as_ref(), &auth).await?
        };
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let metrics = Arc::new(metrics::Metrics::default());
        let queue = Queue::new(
            store,
            Dispatch::new(pending, cancels),
            Presence::new(&agents),
            metrics.clone(),
            auth.clone(),
        );
        let state = AppState::new(state::Shared {
            queue: Arc::new(queue),
            auth,
            metrics,
            metrics_auth: settings.metrics_auth,
            metrics_elsewhere: settings.metrics_listen.is_some(),
            apps: Arc::new(AppsHandle::new(apps)),
            webhook_secrets: settings
                .webhook_secret
                .into_iter()
                .chain(settings.webhook_secret_previous)
                .collect(),
            trusted_proxies: settings.trusted_proxies,
            lease_timeout: settings.lease_timeout,
            body_budget: body::BodyBudget::new(settings.body_memory),
            max_job_output: settings.max_job_output,
            history_kept: std::time::Duration::from_secs(
                u64::from(settings.history_retention_days) * 86_400,
            ),
            stopping,
        });
        #[cfg(unix)]
        let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; apps.yaml reload disabled");
                None
            }
        };
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        Ok(Controller {
            listener,
            metrics_listener,
            tls,
            #[cfg(unix)]
            hangups,
            state,
            stop,
            apps_path: settings.apps,
            apps_required: settings.apps_required,
            retention: maintenance::Retention {
                log_jobs: settings.log_retention_jobs,
                log_days: settings.log_retention_days,
                history_days: settings.history_retention_days,
                history_jobs: settings.history_retention_jobs,
                audit_days: settings.audit_retention_days,
            },
            bootstrap_admin_token,
            max_connections: connection_cap(settings.max_connections),
            events,
        })
    }

    /// The admin token this start made because none existed (first start
    /// without `DEPLOYBOT_ADMIN_TOKEN`). The caller shows it once; it is
    /// never available again.
    pub fn bootstrap_admin_token(&self) -> Option<&str> {
        self.bootstrap_admin_token.as_deref()
    }

    /// The base URL clients use: `http://ADDR`, or `https://ADDR` with TLS.
    pub fn url(&self) -> io::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }

    /// The address `/metrics` is served on, when it has its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves; then stops accepting connections,
    /// answers held long-polls and streams at once, lets in-flight requests
    /// finish and saves the last heartbeats.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let stopping = self.state.stopping.clone();
        let maintenance = tokio::spawn(maintenance::run(
            self.state.clone(),
            self.retention,
            stopping.clone(),
        ));
        tokio::spawn(queue::follow(
            self.state.queue.clone(),
            self.events,
            stopping.clone(),
        ));
        #[cfg(unix)]
        if let Some(hangups) = self.hangups {
            tokio::spawn(reload_on_sighup(
                hangups,
                self.state.clone(),
                self.apps_path.clone(),
                self.apps_required,
                stopping,
            ));
        }
        if let Some(listener) = self.metrics_listener {
            let metrics = routes::metrics_only(self.state.clone());
            let mut stopped = self.state.stopping.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, metrics)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await;
                if let Err(err) = served {
                    tracing::error!(error = %err, "the metrics listener failed");
                }
            });
        }
        let app = routes::service(self.state.clone());
        let stop = self.stop;
        let state = self.state.clone();
        let connections = serve::Connections::new(self.max_connections, &self.state.metrics);
        let served = serve::serve(self.listener, self.tls, app, connections, async move {
            shutdown.await;
            let _ = stop.send(true);
            // After `stopping` is set: a long-poll woken here, or arming
            // its wake-up later, sees it and answers.
            state.queue.stopping();
        })
        .await;
        let _ = maintenance.await;
        served
    }
}

/// Webhook secrets shorter than this are guessable offline from one signed
/// delivery; GitHub suggests a long random string.
const MIN_WEBHOOK_SECRET: usize = 16;

/// Warns of each webhook secret shorter than [`MIN_WEBHOOK_SECRET`].
fn warn_of_weak_secrets(settings: &Settings, apps: &AppsConfig) {
    let configured = [
        ("DEPLOYBOT_WEBHOOK_SECRET", settings.webhook_secret.as_ref()),
        (
            "DEPLOYBOT_WEBHOOK_SECRET_PREVIOUS",
            settings.webhook_secret_previous.as_ref(),
        ),
    ];
    for (name, secret) in configured {
        if let Some(secret) = secret
            && secret.expose().chars().count() < MIN_WEBHOOK_SECRET
        {
            tracing::warn!(
                "the webhook secret {name} is shorter than {MIN_WEBHOOK_SECRET} characters: anyone who sees one signed delivery can guess it; use a long random one (`openssl rand -hex 32`)"
            );
        }
    }
    for app in apps.apps() {
        if let Some(secret) = &app.webhook_secret
            && secret.expose().chars().count() < MIN_WEBHOOK_SECRET
        {
            tracing::warn!(
                app = %app.name,
                "app {}'s webhook secret is shorter than {MIN_WEBHOOK_SECRET} characters: use a long random one (`openssl rand -hex 32`)",
                app.name
            );
        }
    }
}

/// File descriptors kept for everything but client connections: the
/// database pool, the log files, apps.yaml, the listeners.
const DESCRIPTORS_KEPT: u64 = 256;

/// The connection cap: `configured`, lowered to what the process may open.
/// The soft limit on open files is raised to the hard one first (a
/// service manager usually sets both; a shell's soft limit is often 1024).
fn connection_cap(configured: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    let Some(open_files) = limit.current else {
        return configured;
    };
    let room = usize::try_from(open_files.saturating_sub(DESCRIPTORS_KEPT)).unwrap_or(usize::MAX);
    if room < configured {
        tracing::warn!(
            max_connections = configured,
            open_files,
            "the limit on open files allows only {room} connections (raise LimitNOFILE or ulimit -n)"
        );
    }
    configured.min(room).max(1)
}

/// Reloads apps.yaml on SIGHUP; an invalid file keeps the running config.
#[cfg(unix)]
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    state: AppState,
    path: PathBuf,
    required: bool,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            _ = stopped.changed() => return,
        }
        let result = match load_apps(&path, required) {
            Ok(Some(config)) => {
                let count = config.apps().len();
                state.apps.replace(config);
                tracing::info!(path = %path.display(), apps = count, "reloaded apps.yaml");
                format!("ok: {count} apps")
            }
            Ok(None) => {
                tracing::warn!(
                    path = %path.display(),
                    "apps.yaml not found; keeping the previous config"
                );
                "failed: the file is missing; the previous config stays".to_owned()
            }
            Err(err) => {
                tracing::error!(
                    path = %path.display(),
                    "apps.yaml reload failed; keeping the previous config:\n{err}"
                );
                "failed: the file is invalid; the previous config stays".to_owned()
            }
        };
        state
            .queue
            .audit_controller("reload_config", path.display().to_string(), result)
            .await;
    }
}
