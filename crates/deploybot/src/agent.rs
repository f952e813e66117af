//! `deploybot agent`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use deploybot_agent::AgentConfig;

#[derive(Args)]
pub struct AgentArgs {
    /// The controller's base URL.
    #[arg(
        long,
        env = "DEPLOYBOT_CONTROLLER",
        default_value = "http://127.0.0.1:8080"
    )]
    controller: deploybot_agent::Url,
    /// This host's name, as apps.yaml lists it [default: the machine's hostname].
    #[arg(long, env = "DEPLOYBOT_HOSTNAME")]
    hostname: Option<String>,
    /// Where the agent keeps its identity.
    #[arg(
        long,
        env = "DEPLOYBOT_STATE_DIR",
        default_value = "deploybot-agent-state"
    )]
    state_dir: PathBuf,
    /// A capability to advertise (repeatable).
    #[arg(long = "capability", value_name = "NAME")]
    capabilities: Vec<String>,
    /// How long a heartbeat waits for work.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    poll_wait: Duration,
    /// Between SIGTERM and SIGKILL when a deploy is stopped.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    kill_grace: Duration,
    /// On SIGTERM, how long a running deploy may go on before it is stopped.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

impl AgentArgs {
    pub fn into_config(self) -> AgentConfig {
        AgentConfig {
            controller: self.controller,
            hostname: self
                .hostname
                .unwrap_or_else(deploybot_agent::default_hostname),
            state_dir: self.state_dir,
            capabilities: self.capabilities,
            poll_wait: self.poll_wait,
            kill_grace: self.kill_grace,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::logging::init();
    let config = args.into_config();
    tracing::info!(controller = %config.controller, host = %config.hostname, "agent starting");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Signal handlers need the runtime: install them inside it.
    runtime.block_on(async { deploybot_agent::run(config, crate::signals::shutdown()).await })?;
    tracing::info!("agent stopped");
    Ok(())
}
