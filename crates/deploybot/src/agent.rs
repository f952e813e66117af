//! `deploybot agent`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use deploybot_agent::{AgentConfig, Policy, Token};

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
    /// The enrollment token to register with, if the controller requires
    /// one [env: DEPLOYBOT_ENROLLMENT_TOKEN]. Prefer the variable or
    /// --enrollment-token-file: a command line is visible to every user of
    /// the host. Once registered, the agent keeps its own token in the state
    /// directory and needs the enrollment token again only if that token is
    /// refused.
    #[arg(long, value_name = "TOKEN", conflicts_with = "enrollment_token_file")]
    enrollment_token: Option<String>,
    /// Read the enrollment token from this file (trimmed), e.g. a systemd
    /// credential. Wins over DEPLOYBOT_ENROLLMENT_TOKEN.
    #[arg(long, value_name = "PATH")]
    enrollment_token_file: Option<PathBuf>,
    /// A TOML file listing the apps that may deploy on this host, optionally
    /// with the command each runs instead of the controller's [default: every job runs].
    #[arg(long, env = "DEPLOYBOT_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Trust this PEM CA certificate (bundle) for an HTTPS controller, on top
    /// of the system's roots (e.g. a private CA or a self-signed certificate).
    #[arg(long, env = "DEPLOYBOT_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

impl AgentArgs {
    /// The config, with the enrollment token and policy files read: a
    /// mistake in either stops the agent before it starts.
    pub fn into_config(self) -> anyhow::Result<AgentConfig> {
        // The variable is read here rather than by clap, which would count
        // it as a conflict with --enrollment-token-file: the controller
        // reads the same variable, so hosts running both may well set it.
        let enrollment_token = match (self.enrollment_token, &self.enrollment_token_file) {
            (Some(token), _) => non_empty(token),
            (None, Some(path)) => Some(read_token(path)?),
            (None, None) => match std::env::var(deploybot_agent::ENROLLMENT_TOKEN_ENV) {
                Ok(token) => non_empty(token),
                Err(std::env::VarError::NotPresent) => None,
                Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!(
                    "{} is not valid UTF-8",
                    deploybot_agent::ENROLLMENT_TOKEN_ENV
                ),
            },
        };
        let policy = self.policy.as_deref().map(Policy::load).transpose()?;
        let mut config = AgentConfig::new(
            self.controller,
            self.hostname
                .unwrap_or_else(deploybot_agent::default_hostname),
            self.state_dir,
        );
        config.capabilities = self.capabilities;
        config.poll_wait = self.poll_wait;
        config.kill_grace = self.kill_grace;
        config.shutdown_grace = self.shutdown_grace;
        config.enrollment_token = enrollment_token.map(Token::new);
        config.policy = policy;
        config.ca_cert = self.ca_cert;
        Ok(config)
    }
}

/// An empty token (`DEPLOYBOT_ENROLLMENT_TOKEN=`) means none.
fn non_empty(token: String) -> Option<String> {
    Some(token.trim().to_owned()).filter(|token| !token.is_empty())
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the enrollment token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the enrollment token file {} is empty",
        path.display()
    );
    Ok(token.to_owned())
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::logging::init();
    let config = args.into_config()?;
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
