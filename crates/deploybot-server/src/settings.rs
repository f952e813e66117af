//! The controller's settings, layered: defaults, then the config file, then
//! `DEPLOYBOT_*` environment variables, then command-line flags.
//!
//! Each setting is declared once, as a field of [`SettingsLayer`]: its doc
//! comment is its `--help`, its clap attribute its flag and variable, its
//! name its key in the config file. Secrets have no flag (a flag shows in
//! `ps`): they come from the file or from the variables [`SECRET_VARS`]
//! names. [`Settings::resolve`] fills in defaults and checks values.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use serde::{Deserialize, Serialize};

/// Name of the SQLite file created in the data directory.
pub const DATABASE_FILE: &str = "deploybot.db";

/// A secret value: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One layer of settings; `None` leaves the value to the layer below. The
/// flags and variables of `deploybot server`, and the format of its config
/// file (TOML).
#[derive(Debug, Clone, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SettingsLayer {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "DEPLOYBOT_LISTEN", value_name = "ADDR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Directory of the embedded SQLite database [default: ./deploybot-data].
    #[arg(long, env = "DEPLOYBOT_DATA_DIR", value_name = "DIR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// apps.yaml: which repos deploy to which hosts [default: ./apps.yaml].
    #[arg(long, env = "DEPLOYBOT_APPS", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<PathBuf>,
    /// Database URL [default: sqlite://<data-dir>/deploybot.db].
    #[arg(
        long,
        env = "DEPLOYBOT_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// The GitHub webhook secret (no flag: DEPLOYBOT_WEBHOOK_SECRET).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<Secret>,
    /// The previous webhook secret, during a rotation.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_previous: Option<Secret>,
    /// A configured admin token.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<Secret>,
    /// A configured enrollment token for agents.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_token: Option<Secret>,
    /// No authentication at all: anyone who reaches the port can deploy,
    /// read every log and make tokens. Local experiments only.
    #[arg(long, env = "DEPLOYBOT_INSECURE_NO_AUTH", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_no_auth: Option<bool>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "DEPLOYBOT_TLS_CERT", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "DEPLOYBOT_TLS_KEY", value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Reverse proxies (comma-separated IPs) whose X-Forwarded-For names the client.
    #[arg(long, env = "DEPLOYBOT_TRUSTED_PROXIES", value_name = "IPS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<String>,
    /// Require a read token for GET /metrics (open by default).
    #[arg(long, env = "DEPLOYBOT_METRICS_AUTH", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_auth: Option<bool>,
    /// Serve GET /metrics on this address only (e.g. 127.0.0.1:9090).
    #[arg(long, env = "DEPLOYBOT_METRICS_LISTEN", value_name = "ADDR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// An agent silent this long is offline and loses its job [default: 60s].
    #[arg(long, env = "DEPLOYBOT_LEASE_TIMEOUT", value_name = "DURATION")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_timeout: Option<String>,
    /// Keep the logs of the newest N jobs of each app [default: 50].
    #[arg(long, env = "DEPLOYBOT_LOG_RETENTION_JOBS", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_retention_jobs: Option<u32>,
    /// Keep the logs of jobs that finished within D days [default: 14].
    #[arg(long, env = "DEPLOYBOT_LOG_RETENTION_DAYS", value_name = "D")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_retention_days: Option<u32>,
    /// Keep finished jobs and webhook deliveries for D days… [default: 90].
    #[arg(long, env = "DEPLOYBOT_HISTORY_RETENTION_DAYS", value_name = "D")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_retention_days: Option<u32>,
    /// …and, however old, the newest N jobs of each app and the newest N
    /// deliveries [default: 1000].
    #[arg(long, env = "DEPLOYBOT_HISTORY_RETENTION_JOBS", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_retention_jobs: Option<u32>,
    /// Keep audit log entries for D days (and the newest 1000) [default: 365].
    #[arg(long, env = "DEPLOYBOT_AUDIT_RETENTION_DAYS", value_name = "D")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_retention_days: Option<u32>,
    /// Client connections served at once; more are answered 503 [default: 50000].
    #[arg(long, env = "DEPLOYBOT_MAX_CONNECTIONS", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// A job's stored output is cut (with a marker line) at this many MiB
    /// [default: 50].
    #[arg(long, env = "DEPLOYBOT_MAX_JOB_OUTPUT_MIB", value_name = "MIB")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_job_output_mib: Option<u32>,
    /// Request bodies being read hold at most this many MiB in all; a body
    /// that needs more is answered 503 [default: 128].
    #[arg(long, env = "DEPLOYBOT_BODY_MEMORY_MIB", value_name = "MIB")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_memory_mib: Option<u32>,
    /// Wrong tokens a client address may present per minute before it is
    /// answered 429 until the minute is over; 0 turns the limit off
    /// [default: 20].
    #[arg(long, env = "DEPLOYBOT_AUTH_FAILURES_PER_MINUTE", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_failures_per_minute: Option<u32>,
}

/// The variables each secret setting is read from, first set wins. The
/// webhook secret also answers to the seed's `GITHUB_WEBHOOK_SECRET`.
pub const SECRET_VARS: [(&str, &[&str]); 4] = [
    (
        "webhook_secret",
        &["DEPLOYBOT_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET"],
    ),
    (
        "webhook_secret_previous",
        &["DEPLOYBOT_WEBHOOK_SECRET_PREVIOUS"],
    ),
    ("admin_token", &["DEPLOYBOT_ADMIN_TOKEN"]),
    ("enrollment_token", &["DEPLOYBOT_ENROLLMENT_TOKEN"]),
];

impl SettingsLayer {
    /// `self` where set, `lower` elsewhere.
    pub fn over(self, lower: SettingsLayer) -> SettingsLayer {
        // Unset settings are left out of the serialized layers, so merging
        // the upper layer's keys into the lower one's is the whole rule.
        let as_map = |layer: &SettingsLayer| match serde_json::to_value(layer) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let mut merged = as_map(&lower);
        merged.extend(as_map(&self));
        serde_json::from_value(serde_json::Value::Object(merged))
            .expect("the keys of two layers make a layer")
    }

    /// The secrets set in the environment `env` (by [`SECRET_VARS`]).
    pub fn secrets_from_env(env: impl Fn(&str) -> Option<String>) -> SettingsLayer {
        let mut secrets = serde_json::Map::new();
        for (key, vars) in SECRET_VARS {
            if let Some(value) = vars
                .iter()
                .find_map(|var| env(var).filter(|v| !v.is_empty()))
            {
                secrets.insert(key.to_owned(), serde_json::Value::String(value));
            }
        }
        serde_json::from_value(serde_json::Value::Object(secrets))
            .expect("secrets are strings, as the layer has them")
    }

    /// Reads a config file.
    pub fn from_file(path: &Path) -> Result<SettingsLayer, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            SettingsError(format!("cannot read config file {}: {err}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|err| SettingsError(format!("config file {}: {err}", path.display())))
    }

    /// The settings of `deploybot server`: `flags` (and the variables clap
    /// read for them) over the secrets in the environment over the config
    /// file, if any.
    pub fn load(
        config: Option<&Path>,
        flags: SettingsLayer,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SettingsLayer, SettingsError> {
        let file = match config {
            Some(path) => SettingsLayer::from_file(path)?,
            None => SettingsLayer::default(),
        };
        Ok(flags.over(SettingsLayer::secrets_from_env(env).over(file)))
    }
}

/// The controller's resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Path of apps.yaml.
    pub apps: PathBuf,
    /// Whether `apps` was configured (a missing file is then an error) or is
    /// the default (a missing file means no apps yet).
    pub apps_required: bool,
    pub database_url: String,
    /// Key of the webhook HMAC; webhooks are refused while it is unset.
    pub webhook_secret: Option<Secret>,
    /// The secret before a rotation, accepted beside the current one until
    /// unset.
    pub webhook_secret_previous: Option<Secret>,
    /// A configured admin token (any string of 16+ characters).
    pub admin_token: Option<Secret>,
    /// A configured enrollment token for agents (16+ characters).
    pub enrollment_token: Option<Secret>,
    /// No authentication at all, for local experiments.
    pub insecure_no_auth: bool,
    /// HTTPS: PEM certificate chain and private key (both or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (for the
    /// audit log and the auth-failure limit).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// `/metrics` needs a read token (it is open by default).
    pub metrics_auth: bool,
    /// Serve `/metrics` on this address, and not on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// An agent silent this long is offline and loses its running job.
    pub lease_timeout: Duration,
    /// Logs are kept for the newest this many jobs of each app…
    pub log_retention_jobs: u32,
    /// …and for every job that finished within this many days.
    pub log_retention_days: u32,
    /// Finished jobs and deliveries are kept this many days…
    pub history_retention_days: u32,
    /// …and the newest this many jobs of each app (and deliveries).
    pub history_retention_jobs: u32,
    /// Audit entries are kept this many days (and the newest 1000).
    pub audit_retention_days: u32,
    /// Client connections served at once (each agent holds one); more are
    /// answered 503. Lowered at start to what the limit on open files allows.
    pub max_connections: usize,
    /// Bytes that request bodies being read may hold in all (a webhook may
    /// be 25 MiB); a body that needs more is answered 503.
    pub body_memory: usize,
    /// Bytes of a job's output stored at most; a marker line says where
    /// the rest was cut.
    pub max_job_output: u64,
    /// Wrong tokens an address may present per minute (0: no limit).
    pub auth_failures_per_minute: u32,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "deploybot-data";
pub const DEFAULT_APPS: &str = "apps.yaml";
pub const DEFAULT_LEASE_TIMEOUT: &str = "60s";
pub const DEFAULT_LOG_RETENTION_JOBS: u32 = 50;
pub const DEFAULT_LOG_RETENTION_DAYS: u32 = 14;
pub const DEFAULT_HISTORY_RETENTION_DAYS: u32 = 90;
pub const DEFAULT_HISTORY_RETENTION_JOBS: u32 = 1000;
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 365;
pub const DEFAULT_MAX_CONNECTIONS: u32 = 50_000;
pub const DEFAULT_BODY_MEMORY_MIB: u32 = 128;
pub const DEFAULT_MAX_JOB_OUTPUT_MIB: u32 = 50;
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: u32 = 20;
/// The largest body a route takes (a webhook), so that one always fits.
const MIN_BODY_MEMORY_MIB: u32 = 25;

impl Settings {
    /// Resolves a layer against the defaults.
    pub fn resolve(layer: SettingsLayer) -> Result<Settings, SettingsError> {
        let listen_text = layer.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse().map_err(|_| {
            SettingsError(format!(
                "listen address {listen_text:?} must be IP:PORT, e.g. 127.0.0.1:8080"
            ))
        })?;
        let data_dir = layer
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let apps_required = layer.apps.is_some();
        let apps = layer.apps.unwrap_or_else(|| PathBuf::from(DEFAULT_APPS));
        let database_url = layer
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join(DATABASE_FILE).display()));
        let lease_text = layer
            .lease_timeout
            .as_deref()
            .unwrap_or(DEFAULT_LEASE_TIMEOUT);
        let lease_timeout = humantime::parse_duration(lease_text)
            .ok()
            .filter(|d| *d >= Duration::from_secs(1))
            .ok_or_else(|| {
                SettingsError(format!(
                    "lease timeout {lease_text:?} must be a duration of at least 1s, e.g. 60s"
                ))
            })?;
        let webhook_secret = layer.webhook_secret.filter(|s| !s.expose().is_empty());
        let webhook_secret_previous = layer
            .webhook_secret_previous
            .filter(|s| !s.expose().is_empty());
        let admin_token = configured_token("admin token", layer.admin_token)?;
        let enrollment_token = configured_token("enrollment token", layer.enrollment_token)?;
        if layer.tls_cert.is_some() != layer.tls_key.is_some() {
            return Err(SettingsError(
                "TLS needs both a certificate (--tls-cert) and its private key (--tls-key)"
                    .to_owned(),
            ));
        }
        let trusted_proxies = layer
            .trusted_proxies
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry.parse().map_err(|_| {
                    SettingsError(format!(
                        "trusted proxy {entry:?} must be an IP address, e.g. 127.0.0.1"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            listen,
            trusted_proxies,
            metrics_auth: layer.metrics_auth.unwrap_or(false),
            metrics_listen: layer
                .metrics_listen
                .as_deref()
                .map(|text| {
                    text.parse().map_err(|_| {
                        SettingsError(format!(
                            "metrics listen address {text:?} must be IP:PORT, e.g. 127.0.0.1:9090"
                        ))
                    })
                })
                .transpose()?,
            data_dir,
            apps,
            apps_required,
            database_url,
            webhook_secret,
            webhook_secret_previous,
            admin_token,
            enrollment_token,
            insecure_no_auth: layer.insecure_no_auth.unwrap_or(false),
            tls_cert: layer.tls_cert,
            tls_key: layer.tls_key,
            lease_timeout,
            log_retention_jobs: layer
                .log_retention_jobs
                .unwrap_or(DEFAULT_LOG_RETENTION_JOBS)
                .max(1),
            log_retention_days: layer
                .log_retention_days
                .unwrap_or(DEFAULT_LOG_RETENTION_DAYS),
            history_retention_days: layer
                .history_retention_days
                .unwrap_or(DEFAULT_HISTORY_RETENTION_DAYS)
                .max(1),
            history_retention_jobs: layer
                .history_retention_jobs
                .unwrap_or(DEFAULT_HISTORY_RETENTION_JOBS)
                .max(1),
            audit_retention_days: layer
                .audit_retention_days
                .unwrap_or(DEFAULT_AUDIT_RETENTION_DAYS)
                .max(1),
            max_connections: layer
                .max_connections
                .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                .max(1) as usize,
            max_job_output: u64::from(
                layer
                    .max_job_output_mib
                    .unwrap_or(DEFAULT_MAX_JOB_OUTPUT_MIB)
                    .max(1),
            ) * 1024
                * 1024,
            auth_failures_per_minute: layer
                .auth_failures_per_minute
                .unwrap_or(DEFAULT_AUTH_FAILURES_PER_MINUTE),
            body_memory: match layer.body_memory_mib.unwrap_or(DEFAULT_BODY_MEMORY_MIB) {
                mib if mib >= MIN_BODY_MEMORY_MIB => mib as usize * 1024 * 1024,
                mib => {
                    return Err(SettingsError(format!(
                        "body memory {mib} MiB is too small: a webhook may be 25 MiB, so at least {MIN_BODY_MEMORY_MIB}"
                    )));
                }
            },
        })
    }
}

/// The shortest configured token: guessing must stay out of reach.
const MIN_CONFIGURED_TOKEN: usize = 16;

fn configured_token(what: &str, token: Option<Secret>) -> Result<Option<Secret>, SettingsError> {
    match token {
        Some(token) if token.expose().is_empty() => Ok(None),
        Some(token)
            if token.expose().len() < MIN_CONFIGURED_TOKEN
                || token.expose().chars().any(|c| c.is_control() || c == ' ') =>
        {
            Err(SettingsError(format!(
                "the {what} must be at least {MIN_CONFIGURED_TOKEN} characters without spaces; \
                 `openssl rand -hex 32` makes a good one"
            )))
        }
        token => Ok(token),
    }
}

/// A commented config file with every setting at its default.
pub fn example_config() -> String {
    format!(
        r#"# deploybot server configuration (TOML).
# Precedence: built-in defaults < this file (--config FILE) < DEPLOYBOT_* environment < flags.

# Address and port to serve the API and webhooks on.   env: DEPLOYBOT_LISTEN   flag: --listen
listen = "{DEFAULT_LISTEN}"

# Directory for the embedded SQLite database ({DATABASE_FILE}), created on first start.
#                                                       env: DEPLOYBOT_DATA_DIR   flag: --data-dir
data_dir = "{DEFAULT_DATA_DIR}"

# apps.yaml: which repository deploys to which hosts, and how. Default: ./{DEFAULT_APPS},
# and when that does not exist the controller starts with no apps. Once set,
# the file must exist.                                  env: DEPLOYBOT_APPS   flag: --apps
# apps = "/etc/deploybot/apps.yaml"

# Database URL. Default: sqlite://<data_dir>/{DATABASE_FILE}
#                                                       env: DEPLOYBOT_DATABASE_URL   flag: --database-url
# database_url = "sqlite:///var/lib/deploybot/{DATABASE_FILE}"
# database_url = "postgres://deploybot:secret@db.internal:5432/deploybot"

# Secret shared with GitHub to sign webhooks (X-Hub-Signature-256). Webhooks are
# refused until it is set. Prefer the environment over this file for secrets.
#                                                       env: DEPLOYBOT_WEBHOOK_SECRET (or GITHUB_WEBHOOK_SECRET)
# webhook_secret = "change-me"
# During a rotation, the previous secret is accepted too until you unset it.
#                                                       env: DEPLOYBOT_WEBHOOK_SECRET_PREVIOUS
# webhook_secret_previous = "old-secret"

# Authentication is on. Every API call needs `Authorization: Bearer <token>`.
# An admin token: when none is set and the database holds none, the controller
# makes one on first start and prints it once.  env: DEPLOYBOT_ADMIN_TOKEN
# admin_token = "at-least-16-characters"
# A token agents enroll with (POST /v1/agents/register). More, single-use or
# expiring, can be made with `POST /v1/tokens` (role "enroll").
#                                                       env: DEPLOYBOT_ENROLLMENT_TOKEN
# enrollment_token = "at-least-16-characters"
# No authentication at all: anyone who reaches the port can deploy, read every
# log and make tokens. Local experiments only.
#                                                       env: DEPLOYBOT_INSECURE_NO_AUTH   flag: --insecure-no-auth
insecure_no_auth = false

# HTTPS: a PEM certificate chain and its private key (both or neither).
# Or serve plain HTTP behind a reverse proxy that terminates TLS (see README).
#   env: DEPLOYBOT_TLS_CERT, DEPLOYBOT_TLS_KEY   flag: --tls-cert, --tls-key
# tls_cert = "/etc/deploybot/tls/cert.pem"
# tls_key = "/etc/deploybot/tls/key.pem"

# Reverse proxies (comma-separated IPs) whose X-Forwarded-For names the real
# client, for the audit log and the per-address limit on auth failures.
#                                                       env: DEPLOYBOT_TRUSTED_PROXIES   flag: --trusted-proxies
# trusted_proxies = "127.0.0.1"

# GET /metrics (Prometheus) is open; set this to require a read token.
#                                                       env: DEPLOYBOT_METRICS_AUTH   flag: --metrics-auth
metrics_auth = false
# Serve /metrics on its own address (and not on `listen`), e.g. for a
# private network only.                                 env: DEPLOYBOT_METRICS_LISTEN   flag: --metrics-listen
# metrics_listen = "127.0.0.1:9090"

# An agent silent for this long is offline, and the job it runs becomes `lost`.
#                                                       env: DEPLOYBOT_LEASE_TIMEOUT   flag: --lease-timeout
lease_timeout = "{DEFAULT_LEASE_TIMEOUT}"

# Deploy logs are kept for the newest N jobs of each app, and for every job
# that finished within D days; older logs are deleted in the background.
#   env: DEPLOYBOT_LOG_RETENTION_JOBS, DEPLOYBOT_LOG_RETENTION_DAYS
#   flag: --log-retention-jobs, --log-retention-days
log_retention_jobs = {DEFAULT_LOG_RETENTION_JOBS}
log_retention_days = {DEFAULT_LOG_RETENTION_DAYS}

# Finished jobs and webhook deliveries are kept for D days, and however old,
# the newest N jobs of each app and the newest N deliveries; audit entries for
# their own D days (and the newest 1000). The newest job and the newest
# successful job of each app on each host are always kept, pending and running
# ones too. A push older than the history kept (by its `pushed_at`) deploys
# nothing: its replay could no longer be recognised.
#   env: DEPLOYBOT_HISTORY_RETENTION_DAYS, DEPLOYBOT_HISTORY_RETENTION_JOBS,
#        DEPLOYBOT_AUDIT_RETENTION_DAYS
#   flag: --history-retention-days, --history-retention-jobs,
#         --audit-retention-days
history_retention_days = {DEFAULT_HISTORY_RETENTION_DAYS}
history_retention_jobs = {DEFAULT_HISTORY_RETENTION_JOBS}
audit_retention_days = {DEFAULT_AUDIT_RETENTION_DAYS}

# Client connections served at once (every agent holds one); more are answered
# 503 with Retry-After. At start it is lowered to what the limit on open files
# allows (the soft limit is raised to the hard one first).
#   env: DEPLOYBOT_MAX_CONNECTIONS   flag: --max-connections
max_connections = {DEFAULT_MAX_CONNECTIONS}

# A job's stored output is cut at this many MiB (a marker line says so): a
# runaway deploy cannot fill the database.
#   env: DEPLOYBOT_MAX_JOB_OUTPUT_MIB   flag: --max-job-output-mib
max_job_output_mib = {DEFAULT_MAX_JOB_OUTPUT_MIB}

# Request bodies being read hold at most this many MiB in all (a webhook may be
# 25 MiB, GitHub's cap); a body that needs more is answered 503 with Retry-After.
#   env: DEPLOYBOT_BODY_MEMORY_MIB   flag: --body-memory-mib
body_memory_mib = {DEFAULT_BODY_MEMORY_MIB}

# Wrong tokens one client address may present per minute; past that it is
# answered 429 with Retry-After until the minute is over (valid tokens from it
# still work). Raise it when many clients share one address; 0 turns it off.
#   env: DEPLOYBOT_AUTH_FAILURES_PER_MINUTE   flag: --auth-failures-per-minute
auth_failures_per_minute = {DEFAULT_AUTH_FAILURES_PER_MINUTE}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let layer: SettingsLayer = toml::from_str(&example_config()).unwrap();
        let from_example = Settings::resolve(layer).unwrap();
        let defaults = Settings::resolve(SettingsLayer::default()).unwrap();
        assert_eq!(from_example.listen, defaults.listen);
        assert_eq!(from_example.data_dir, defaults.data_dir);
        assert_eq!(from_example.database_url, defaults.database_url);
        assert_eq!(from_example.lease_timeout, defaults.lease_timeout);
    }

    #[test]
    fn upper_layers_win() {
        let file = SettingsLayer {
            listen: Some("127.0.0.1:9000".into()),
            data_dir: Some("/from/file".into()),
            ..Default::default()
        };
        let env = SettingsLayer {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let settings = Settings::resolve(env.over(file)).unwrap();
        assert_eq!(settings.listen.port(), 9100);
        assert_eq!(settings.data_dir, PathBuf::from("/from/file"));
        assert_eq!(settings.database_url, "sqlite:///from/file/deploybot.db");
    }

    #[test]
    fn the_example_config_shows_every_setting_with_its_key_flag_and_variable() {
        let example = example_config();
        let command = <SettingsLayer as clap::Args>::augment_args(clap::Command::new("server"));
        let mut keys = Vec::new();
        for arg in command.get_arguments() {
            let key = arg.get_id().as_str().to_owned();
            let flag = format!("--{}", arg.get_long().unwrap());
            let var = arg.get_env().unwrap().to_str().unwrap().to_owned();
            assert!(
                example.contains(&flag),
                "{flag} is not in the example config"
            );
            assert!(example.contains(&var), "{var} is not in the example config");
            keys.push(key);
        }
        for (key, vars) in SECRET_VARS {
            assert!(
                example.contains(vars[0]),
                "{} is not in the example config",
                vars[0]
            );
            keys.push(key.to_owned());
        }
        for key in keys {
            assert!(
                example.contains(&format!("\n{key} = "))
                    || example.contains(&format!("\n# {key} = ")),
                "key {key} is not in the example config"
            );
        }
    }

    #[test]
    fn flags_win_over_the_environments_secrets_which_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deploybot.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nlease_timeout = \"30s\"\nadmin_token = \"from-the-file-0123456789\"\n",
        )
        .unwrap();
        let flags = SettingsLayer {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let env = |var: &str| match var {
            "GITHUB_WEBHOOK_SECRET" => Some("seed-name".to_owned()),
            "DEPLOYBOT_ADMIN_TOKEN" => Some("from-the-env-0123456789".to_owned()),
            _ => None,
        };
        let layer = SettingsLayer::load(Some(&file), flags, env).unwrap();
        let settings = Settings::resolve(layer).unwrap();
        assert_eq!(settings.listen.port(), 9100);
        assert_eq!(settings.lease_timeout, Duration::from_secs(30));
        assert_eq!(
            settings.admin_token.unwrap().expose(),
            "from-the-env-0123456789"
        );
        assert_eq!(settings.webhook_secret.unwrap().expose(), "seed-name");
    }

    #[test]
    fn secrets_are_masked_in_debug_output() {
        let layer = SettingsLayer {
            webhook_secret: Some(Secret::new("hunter2")),
            ..Default::default()
        };
        let settings = Settings::resolve(layer).unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn bad_values_are_explained() {
        let bad_listen = SettingsLayer {
            listen: Some("localhost".into()),
            ..Default::default()
        };
        assert!(
            Settings::resolve(bad_listen)
                .unwrap_err()
                .0
                .contains("IP:PORT")
        );
        let bad_lease = SettingsLayer {
            lease_timeout: Some("soon".into()),
            ..Default::default()
        };
        assert!(
            Settings::resolve(bad_lease)
                .unwrap_err()
                .0
                .contains("lease timeout")
        );
    }
}
