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
    /// An agent silent this long is offline [default: 60s].
    #[arg(long, env = "DEPLOYBOT_LEASE_TIMEOUT", value_name = "DURATION")]
    lease_timeout: Option<String>,
}

/// The webhook secret comes from the environment only (a flag would show in
/// `ps`): `DEPLOYBOT_WEBHOOK_SECRET`, or the seed's `GITHUB_WEBHOOK_SECRET`.
fn webhook_secret_from_env() -> Option<Secret> {
    ["DEPLOYBOT_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .map(Secret::new)
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    init_logging();
    let file = match &args.config {
        Some(path) => SettingsLayer::from_file(path)?,
        None => SettingsLayer::default(),
    };
    let overrides = SettingsLayer {
        listen: args.listen,
        data_dir: args.data_dir,
        apps: args.apps,
        database_url: args.database_url,
        webhook_secret: webhook_secret_from_env(),
        lease_timeout: args.lease_timeout,
    };
    let settings = Settings::resolve(overrides.over(file))?;
    tracing::debug!(?settings, "settings");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let controller = Controller::start(settings).await?;
        let addr = controller.local_addr()?;
        tracing::info!("listening on http://{addr}");
        controller.run(shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
