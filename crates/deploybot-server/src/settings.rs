//! The controller's settings, layered: defaults, then the config file, then
//! `DEPLOYBOT_*` environment variables, then command-line flags.
//!
//! The binary turns its flags and environment into a [`SettingsLayer`]; this
//! module reads the file layer and fills in defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Name of the SQLite file created in the data directory.
pub const DATABASE_FILE: &str = "deploybot.db";

/// A secret value: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
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

/// One layer of settings; `None` leaves the value to the layer below.
/// Also the format of the config file (TOML).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsLayer {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub apps: Option<PathBuf>,
    pub database_url: Option<String>,
    pub webhook_secret: Option<Secret>,
    pub webhook_secret_previous: Option<Secret>,
    pub admin_token: Option<Secret>,
    pub enrollment_token: Option<Secret>,
    pub insecure_no_auth: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Comma-separated IP addresses of reverse proxies.
    pub trusted_proxies: Option<String>,
    /// `/metrics` needs a read token.
    pub metrics_auth: Option<bool>,
    /// Serve `/metrics` on this address only.
    pub metrics_listen: Option<String>,
    pub lease_timeout: Option<String>,
    pub log_retention_jobs: Option<u32>,
    pub log_retention_days: Option<u32>,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl SettingsLayer {
    /// `self` where set, `lower` elsewhere.
    pub fn over(self, lower: SettingsLayer) -> SettingsLayer {
        SettingsLayer {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            apps: self.apps.or(lower.apps),
            database_url: self.database_url.or(lower.database_url),
            webhook_secret: self.webhook_secret.or(lower.webhook_secret),
            webhook_secret_previous: self
                .webhook_secret_previous
                .or(lower.webhook_secret_previous),
            admin_token: self.admin_token.or(lower.admin_token),
            enrollment_token: self.enrollment_token.or(lower.enrollment_token),
            insecure_no_auth: self.insecure_no_auth.or(lower.insecure_no_auth),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            metrics_auth: self.metrics_auth.or(lower.metrics_auth),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            lease_timeout: self.lease_timeout.or(lower.lease_timeout),
            log_retention_jobs: self.log_retention_jobs.or(lower.log_retention_jobs),
            log_retention_days: self.log_retention_days.or(lower.log_retention_days),
        }
    }

    /// Reads a config file.
    pub fn from_file(path: &Path) -> Result<SettingsLayer, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            SettingsError(format!("cannot read config file {}: {err}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|err| SettingsError(format!("config file {}: {err}", path.display())))
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
    /// No authentication at all: the seed's open mode, for experiments.
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
# No authentication at all (the seed's open mode): local experiments only.
#                                                       env: DEPLOYBOT_INSECURE_NO_AUTH   flag: --insecure-no-auth
insecure_no_auth = false

# HTTPS: a PEM certificate chain and its private key (both or neither).
# Or serve plain HTTP behind a reverse proxy that terminates TLS (see README).
#                                                       env: DEPLOYBOT_TLS_CERT / _KEY   flag: --tls-cert / --tls-key
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
#                                                       env: DEPLOYBOT_LOG_RETENTION_JOBS / _DAYS
log_retention_jobs = {DEFAULT_LOG_RETENTION_JOBS}
log_retention_days = {DEFAULT_LOG_RETENTION_DAYS}
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
