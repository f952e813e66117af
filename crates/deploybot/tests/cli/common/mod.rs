//! What the CLI tests share, one concern a module:
//! - `process`: running the binary (one-shot commands with a deadline,
//!   signals, following a child's stderr line by line);
//! - `server`: controllers as child processes and HTTP access to them;
//! - `agents`: agents as child processes, deploy scripts and the process
//!   groups they leave;
//! - `sse`: reading the live log stream;
//! - `deploys`: apps.yaml for a test, and waiting for jobs and agents;
//! - `client`: the CLI as a client of a controller, and stable output for
//!   snapshots;
//! - `postgres`: a database of its own per test;
//! - `balancer`: a round-robin HTTP balancer in front of several controllers.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use deploybot_wire::{
    AgentStatus, DeliveryVerdict, HostInfo, HostsResponse, Job, JobResponse, JobStatus, LogEntry,
    LogStream, WebhookResponse, signature,
};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

/// `ok_json!(response, T)`: asserts a 200 answer and reads it as `T`.
macro_rules! ok_json {
    ($response:expr, $ty:ty) => {{
        let text = $crate::common::ok_text($response).await;
        serde_json::from_str::<$ty>(&text)
            .unwrap_or_else(|err| panic!("not a {}: {err}: {text}", stringify!($ty)))
    }};
}
pub(crate) use ok_json;

/// The binary under test, built by Cargo for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_deploybot");

/// How long any child may take to become ready or to finish. Generous (the
/// machine may be busy compiling); a broken binary fails here instead of
/// hanging the suite.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The webhook secret of the test servers.
pub const SECRET: &str = "cli-test-secret";
/// The admin token of the test servers (`DEPLOYBOT_ADMIN_TOKEN`); the test
/// client sends it.
pub const ADMIN_TOKEN: &str = "cli-test-admin-token-0123456789";
/// The enrollment token servers and agents share (`DEPLOYBOT_ENROLLMENT_TOKEN`).
pub const ENROLLMENT_TOKEN: &str = "cli-test-enrollment-token-0123456789";

/// One app, `web`, deploying `acme/web` to two hosts.
pub const WEB_APPS_YAML: &str = r#"apps:
  - name: web
    repo: acme/web
    hosts: [web-01, web-02]
    deploy:
      command: ["./deploy.sh"]
"#;

/// Read by the binary besides the `DEPLOYBOT_*` variables.
const OTHER_ENV: [&str; 1] = ["GITHUB_WEBHOOK_SECRET"];

mod agents;
mod balancer;
mod client;
mod deploys;
mod postgres;
mod process;
mod server;
mod sse;

pub use agents::*;
pub use balancer::*;
pub use client::*;
pub use deploys::*;
pub use postgres::*;
pub use process::*;
pub use server::*;
pub use sse::*;
