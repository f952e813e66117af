use std::io;
use std::path::PathBuf;

/// Why [`run`](crate::run) gave up.
///
/// Only mistakes a person has to fix end the agent: an unreachable or failing
/// controller is retried for as long as it takes, so it never shows up here.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The controller URL cannot be a base for API paths (e.g. `mailto:`).
    #[error("controller URL {url:?} cannot be used: {why}")]
    InvalidController { url: String, why: &'static str },
    /// The HTTP client could not be built (e.g. no usable TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The `--ca-cert` file cannot be read or holds no certificate.
    #[error("cannot use the CA certificate {}: {why}", path.display())]
    CaCert { path: PathBuf, why: String },
    /// The controller refused to register this agent (4xx): retrying with the
    /// same hostname and capabilities would be refused again.
    #[error("the controller refused to register this agent ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// The controller requires an enrollment token (401), none is configured,
    /// and the state directory holds no agent token to carry on with.
    #[error(
        "the controller requires an enrollment token to register this agent ({message}): set DEPLOYBOT_ENROLLMENT_TOKEN or --enrollment-token-file"
    )]
    EnrollmentTokenMissing { message: String },
    /// The configured enrollment token was refused: 401 (unknown, expired
    /// or used up) or 403 (a valid token, but not an enrollment token).
    #[error("the controller refused the enrollment token ({status}): {message}")]
    EnrollmentTokenRefused { status: u16, message: String },
    /// Another agent (still running) uses this state directory.
    #[error(
        "the state directory {} is in use by another agent{}; run one agent per state directory (--state-dir)",
        path.display(),
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    StateDirInUse { path: PathBuf, pid: Option<u32> },
    /// The state directory cannot be created or locked.
    #[error("cannot use the state directory {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The state directory or the identity file in it could not be written.
    #[error("cannot write the agent identity {}: {source}", path.display())]
    Identity {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
