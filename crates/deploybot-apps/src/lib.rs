//! `apps.yaml`: which repository deploys to which hosts, and how.
//!
//! - [`load`](AppsConfig::load) / [`parse`](AppsConfig::parse): read and
//!   validate the file; every problem is reported as `file:line:column: message`.
//! - [`plan_push`](AppsConfig::plan_push): which apps a GitHub push deploys, and
//!   why the others do not.
//! - [`app_for`](AppsConfig::app_for): the app that pairs a repo with a host
//!   (manual deploys).
//!
//! Architecture invariant: this crate is pure: no I/O besides reading the file
//! it is asked to load, no async, no knowledge of HTTP or storage.

#![forbid(unsafe_code)]

mod file;
mod matching;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

pub use deploybot_wire::DeploySpec;
pub use matching::{PairingError, PushPlan, Skipped};

/// The default for `deploy.timeout`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30 * 60;

/// A validated apps.yaml.
#[derive(Debug, Clone, Default)]
pub struct AppsConfig {
    apps: Vec<App>,
}

/// One app of apps.yaml, validated.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    /// `owner/name`, compared without regard to case as GitHub does.
    pub repo: String,
    pub hosts: Vec<String>,
    pub deploy_on_push: bool,
    /// Branch patterns; `None` means every branch, empty means none (also
    /// what an app that lists `tags` and omits `branches` gets).
    pub branches: Option<Vec<glob::Pattern>>,
    /// Tag patterns; empty means tag pushes never deploy.
    pub tags: Vec<glob::Pattern>,
    pub deploy: DeploySpec,
    /// The app's own webhook secret (from the variable `webhook_secret_env`
    /// names): deliveries for this app must be signed with it.
    pub webhook_secret: Option<AppSecret>,
    /// `deploy.secret_env`: variables whose values are secrets, read from
    /// the controller's environment or credentials. They reach the agent
    /// with each job it is handed, and are never stored with the job.
    pub secrets: BTreeMap<String, AppSecret>,
}

/// A secret read from the environment; masked in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSecret(String);

impl AppSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppSecret(***)")
    }
}

impl App {
    pub fn deploys_repo(&self, repo: &str) -> bool {
        self.repo.eq_ignore_ascii_case(repo)
    }
}

/// Why apps.yaml could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", DisplayProblems(.0))]
    Invalid(Vec<Problem>),
}

/// The value of the secret `name`: the credential file
/// `$CREDENTIALS_DIRECTORY/name` (without its final newline), else the
/// environment variable `name`.
pub fn controller_secret(name: &str) -> Option<String> {
    let from_credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|dir| std::path::Path::new(&dir).join(name))
        .and_then(|path| std::fs::read_to_string(path).ok())
        .map(|value| value.strip_suffix('\n').unwrap_or(&value).to_owned());
    from_credentials.or_else(|| std::env::var(name).ok())
}

/// One thing wrong in apps.yaml, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

struct DisplayProblems<'a>(&'a [Problem]);

impl fmt::Display for DisplayProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl AppsConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, AppsError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AppsError::Read {
            path: origin.clone(),
            source,
        })?;
        Self::parse(&text, &origin)
    }

    /// Validates `text`; `origin` names the file in error messages. Secrets
    /// it names are read from the controller's credentials (a file of that
    /// name in `$CREDENTIALS_DIRECTORY`, as systemd's `LoadCredential=`
    /// provides them), else from its environment.
    pub fn parse(text: &str, origin: &str) -> Result<Self, AppsError> {
        Self::parse_with_env(text, origin, &controller_secret)
    }

    /// [`parse`](Self::parse), reading the variables secrets are named by
    /// from `env`.
    pub fn parse_with_env(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, AppsError> {
        file::parse(text, origin, env).map(|apps| AppsConfig { apps })
    }

    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|app| app.name == name)
    }

    /// Every host some app deploys to.
    pub fn hosts(&self) -> BTreeSet<&str> {
        self.apps
            .iter()
            .flat_map(|app| app.hosts.iter().map(String::as_str))
            .collect()
    }

    /// What to tell an agent registering for `host` that no app deploys
    /// to: it would otherwise wait for jobs that never come.
    pub fn unserved_host_warning(&self, host: &str) -> Option<String> {
        let hosts = self.hosts();
        if hosts.contains(host) {
            return None;
        }
        let known: Vec<&str> = hosts.into_iter().take(10).collect();
        let known = if known.is_empty() {
            "it lists no host".to_owned()
        } else {
            format!("its hosts: {}", known.join(", "))
        };
        Some(format!(
            "no app in apps.yaml deploys to {host}, so this agent gets no jobs until one does \
             (is --hostname right? {known})"
        ))
    }

    /// Names of the apps that deploy to `host`.
    pub fn apps_on_host(&self, host: &str) -> Vec<String> {
        self.apps
            .iter()
            .filter(|app| app.hosts.iter().any(|h| h == host))
            .map(|app| app.name.clone())
            .collect()
    }
}
