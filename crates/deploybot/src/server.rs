//! `deploybot server`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use deploybot_server::settings::Secret;
use deploybot_server::{Controller, Settings, SettingsLayer};

#[derive(Args)]
pub struct ServerArgs {
    /// TOML config file (see `deploybot config example`).
    #[arg(long, env = "DEPLOYBOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "DEPLOYBOT_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Directory of the embedded SQLite database [default: ./deploybot-data].
    #[arg(long, env = "DEPLOYBOT_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// apps.yaml: which repos deploy to which hosts [default: ./apps.yaml].
    #[arg(long, env = "DEPLOYBOT_APPS", value_name = "FILE")]
    apps: Option<PathBuf>,
    /// Database URL [default: sqlite://<data-dir>/deploybot.db].
    #[arg(
        long,
        env = "DEPLOYBOT_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// An agent silent this long is offline and loses its job [default: 60s].
    #[arg(long, env = "DEPLOYBOT_LEASE_TIMEOUT", value_name = "DURATION")]
    lease_timeout: Option<String>,
    /// Keep the logs of the newest N jobs of each app [default: 50].
    #[arg(long, env = "DEPLOYBOT_LOG_RETENTION_JOBS", value_name = "N")]
    log_retention_jobs: Option<u32>,
    /// Keep the logs of jobs that finished within D days [default: 14].
    #[arg(long, env = "DEPLOYBOT_LOG_RETENTION_DAYS", value_name = "D")]
    log_retention_days: Option<u32>,
    /// No authentication at all (the seed's open mode). Local experiments
    /// only: anyone who reaches the port can deploy.
    #[arg(long, env = "DEPLOYBOT_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "DEPLOYBOT_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "DEPLOYBOT_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Reverse proxies (comma-separated IPs) whose X-Forwarded-For names the client.
    #[arg(long, env = "DEPLOYBOT_TRUSTED_PROXIES", value_name = "IPS")]
    trusted_proxies: Option<String>,
    /// Require a read token for GET /metrics (open by default).
    #[arg(long, env = "DEPLOYBOT_METRICS_AUTH")]
    metrics_auth: bool,
    /// Serve GET /metrics on this address only (e.g. 127.0.0.1:9090).
    #[arg(long, env = "DEPLOYBOT_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,
}

/// Secrets come from the environment or the config file only (a flag would
/// show in `ps`). The webhook secret also answers to the seed's
/// `GITHUB_WEBHOOK_SECRET`.
fn secret_from_env(names: &[&str]) -> Option<Secret> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .map(Secret::new)
}

impl ServerArgs {
    /// The settings these flags, the environment and the config file make.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => SettingsLayer::from_file(path)?,
            None => SettingsLayer::default(),
        };
        let overrides = SettingsLayer {
            listen: self.listen,
            data_dir: self.data_dir,
            apps: self.apps,
            database_url: self.database_url,
            webhook_secret: secret_from_env(&["DEPLOYBOT_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET"]),
            webhook_secret_previous: secret_from_env(&["DEPLOYBOT_WEBHOOK_SECRET_PREVIOUS"]),
            admin_token: secret_from_env(&["DEPLOYBOT_ADMIN_TOKEN"]),
            enrollment_token: secret_from_env(&["DEPLOYBOT_ENROLLMENT_TOKEN"]),
            // A flag can only switch it on; the file may too.
            insecure_no_auth: self.insecure_no_auth.then_some(true),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            trusted_proxies: self.trusted_proxies,
            metrics_auth: self.metrics_auth.then_some(true),
            metrics_listen: self.metrics_listen,
            lease_timeout: self.lease_timeout,
            log_retention_jobs: self.log_retention_jobs,
            log_retention_days: self.log_retention_days,
        };
        Ok(Settings::resolve(overrides.over(file))?)
    }
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    // Dropped last, after the runtime: the spans of the very end are sent.
    let _traces = crate::logging::init_with_traces();
    let settings = args.resolve()?;
    tracing::debug!(?settings, "settings");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let controller = Controller::start(settings).await?;
        let shutdown = crate::signals::shutdown();
        let url = controller.url()?;
        if let Some(token) = controller.bootstrap_admin_token() {
            // Shown once, on the terminal, not in the logs: only its hash is kept.
            eprintln!(
                "\nNo admin token was configured, so this first start made one. It is shown\n\
                 only now; store it safely (it can make and revoke every other token):\n\n    \
                 {token}\n\nUse it as `Authorization: Bearer <token>`, e.g. export DEPLOYBOT_TOKEN={token}\n"
            );
        }
        if let Some(metrics) = controller.metrics_addr() {
            tracing::info!("metrics on http://{metrics}/metrics");
        }
        tracing::info!("listening on {url}");
        controller.run(shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}
