//! `deploybot server`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use deploybot_server::{Controller, Settings, SettingsLayer};

#[derive(Args)]
pub struct ServerArgs {
    /// TOML config file (see `deploybot config example`).
    #[arg(long, env = "DEPLOYBOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsLayer,
}

impl ServerArgs {
    /// The settings these flags, the environment and the config file make.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let layer = SettingsLayer::load(self.config.as_deref(), self.settings, |var| {
            std::env::var(var).ok()
        })?;
        Ok(Settings::resolve(layer)?)
    }
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    crate::serving_connections();
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
