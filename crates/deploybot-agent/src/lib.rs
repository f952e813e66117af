//! The DeployBot agent: runs on each host, asks the controller for work and
//! runs deploy commands.
//!
//! Map of this crate:
//! - [`run`] (in `agent.rs`): register, then the heartbeat loop: a long-poll
//!   that renews the lease, receives jobs and cancels; drains on shutdown.
//! - `job.rs`: one job in its own task: spawn, supervise (timeout, cancel,
//!   lost lease), upload the output; `report.rs`: its outcome and report.
//! - `runner.rs`: starting the command (argv, no shell, its own process
//!   group) and killing the whole group.
//! - `output.rs`: reading stdout and stderr as lines; `redact.rs`: hiding
//!   secrets in them; `uploader.rs` and `buffer.rs`: batching and retrying
//!   log uploads.
//! - `client.rs`: the controller's HTTP API and the agent token it sends;
//!   `backoff.rs`: retry delays; `identity.rs`: `state_dir/agent.json` (the
//!   agent's id and token).
//! - `state_lock.rs`: one agent per state directory; `orphans.rs`: the
//!   records of running deploys, and killing what a killed agent left.
//! - `policy.rs`: the host's policy file: which apps may deploy here, and
//!   commands that replace the controller's.
//!
//! Architecture invariants: the agent speaks to the controller only through
//! the `deploybot-wire` types; a job's fields reach the deploy command only
//! as environment variables; a job is reported only after all its output is
//! uploaded, and never once the controller has taken it away (404/409); a
//! call refused with 401 is sent again after the agent registered again,
//! never dropped; tokens never appear in logs or `Debug` output.

#![forbid(unsafe_code)]

mod agent;
mod backoff;
mod buffer;
mod client;
mod error;
mod identity;
mod job;
mod orphans;
mod output;
mod policy;
mod redact;
mod report;
mod runner;
mod state_lock;
mod uploader;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use client::Token;
pub use error::AgentError;
pub use policy::{Policy, PolicyError};
pub use reqwest::Url;

/// The environment variable the binary reads the enrollment token from.
/// Deploy commands do not inherit it.
pub const ENROLLMENT_TOKEN_ENV: &str = "DEPLOYBOT_ENROLLMENT_TOKEN";

/// How long each heartbeat waits at the controller for a job.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(25);
/// Between SIGTERM and SIGKILL when a deploy is stopped.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
/// On shutdown, how long a running deploy may go on before it is stopped.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The controller's base URL, e.g. `http://127.0.0.1:8080`; a path
    /// prefix (`http://proxy/deploybot/`) is kept.
    pub controller: Url,
    /// The host this agent deploys to, as apps.yaml names it.
    pub hostname: String,
    /// Where the agent keeps `agent.json`, its lock and the records of
    /// running deploys (created if missing; one agent per directory).
    pub state_dir: PathBuf,
    pub capabilities: Vec<String>,
    /// Long-poll wait of each heartbeat. Keep it well under the controller's
    /// lease timeout (60 s by default): heartbeats are what renew the lease.
    pub poll_wait: Duration,
    /// SIGTERM → SIGKILL grace when a deploy is stopped.
    pub kill_grace: Duration,
    /// On shutdown, how long to let a running deploy finish.
    pub shutdown_grace: Duration,
    /// Sent when registering. `None` for a controller in open mode, or for
    /// an agent whose state directory holds an agent token from an earlier
    /// registration (used until the controller refuses it).
    pub enrollment_token: Option<Token>,
    /// Which apps may deploy here and how; `None` runs every job as the
    /// controller specifies it.
    pub policy: Option<Policy>,
    /// Extra trusted root certificates (PEM) for an HTTPS controller whose
    /// certificate the system's roots do not vouch for (e.g. a private CA).
    pub ca_cert: Option<PathBuf>,
}

impl AgentConfig {
    /// A config with no capabilities, no enrollment token, no policy and the
    /// default durations.
    pub fn new(
        controller: Url,
        hostname: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        AgentConfig {
            controller,
            hostname: hostname.into(),
            state_dir: state_dir.into(),
            capabilities: Vec::new(),
            poll_wait: DEFAULT_POLL_WAIT,
            kill_grace: DEFAULT_KILL_GRACE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            enrollment_token: None,
            policy: None,
            ca_cert: None,
        }
    }
}

/// Runs the agent until `shutdown` resolves and the running deploy (if any)
/// has finished or been stopped and reported.
///
/// An unreachable controller is waited for, never an error: the error cases
/// are a controller URL that cannot work, a registration the controller
/// refuses at start (unless an agent token saved by an earlier run lets the
/// agent carry on), and a state directory that cannot be written or that
/// another agent uses.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    agent::run(config, shutdown).await
}

/// This machine's hostname, or `localhost` when it has none we can read.
pub fn default_hostname() -> String {
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return name.to_owned();
        }
    }
    let uname = rustix::system::uname();
    match uname.nodename().to_str().map(str::trim) {
        Ok(name) if !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hostname_is_never_empty() {
        let name = default_hostname();
        assert!(!name.is_empty());
        assert_eq!(name, name.trim());
    }
}
