//! Which controller and token a command uses, and the file `deploybot
//! login` writes.
//!
//! Precedence, highest first: `--url` / `--token` / `--ca-cert`, then
//! `DEPLOYBOT_URL` / `DEPLOYBOT_TOKEN` / `DEPLOYBOT_CA_CERT`, then the config file (`$XDG_CONFIG_HOME/deploybot/
//! cli.toml`, else `~/.config/deploybot/cli.toml`), then the default URL.
//! The URL and the token are resolved separately: a token from the
//! environment works with the URL of the file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::GlobalArgs;
use super::client::{CliError, Kind, Result};

pub const URL_ENV: &str = "DEPLOYBOT_URL";
pub const TOKEN_ENV: &str = "DEPLOYBOT_TOKEN";
pub const CA_CERT_ENV: &str = "DEPLOYBOT_CA_CERT";
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The config file: where the controller is, the token for it, and the CA
/// that signed its certificate when that is a private one.
#[derive(Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// Never shows the token.
impl fmt::Debug for CliConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CliConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// The controller a command talks with, and how.
pub struct Target {
    pub url: String,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

/// The config file's path: `$XDG_CONFIG_HOME/deploybot/cli.toml` when that
/// is an absolute path (the XDG spec ignores relative ones), else
/// `$HOME/.config/deploybot/cli.toml`; `None` without either.
pub fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|home| home.is_absolute())
                .map(|home| home.join(".config"))
        })?;
    Some(base.join("deploybot").join("cli.toml"))
}

/// A variable's value; unset, empty and non-UTF-8 all mean none.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// URL, token and CA certificate from flags, environment, file and
/// default, in that order, each on its own.
pub fn resolve(flags: &GlobalArgs) -> Result<Target> {
    let url = flags.url.clone().or_else(|| env(URL_ENV));
    let token = flags.token.clone().or_else(|| env(TOKEN_ENV));
    let ca_cert = flags
        .ca_cert
        .clone()
        .or_else(|| env(CA_CERT_ENV).map(PathBuf::from));
    // The file is read only when it may have something to say.
    let file = match path() {
        Some(path) if url.is_none() || token.is_none() || ca_cert.is_none() => {
            load(&path)?.unwrap_or_default()
        }
        _ => CliConfig::default(),
    };
    Ok(Target {
        url: url.or(file.url).unwrap_or_else(|| DEFAULT_URL.to_owned()),
        token: token.or(file.token).map(|t| bare_token(&t).to_owned()),
        ca_cert: ca_cert.or(file.ca_cert),
    })
}

/// The token itself, also when pasted as a header value (`Bearer dbt_…`).
fn bare_token(given: &str) -> &str {
    let given = given.trim();
    match given.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => given,
    }
}

/// The file at `path`; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<CliConfig>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(CliError::new(
                Kind::Failed,
                format!("cannot read {}: {err}", path.display()),
            ));
        }
    };
    warn_if_shared(path);
    toml::from_str(&text).map(Some).map_err(|err| {
        CliError::new(
            Kind::Failed,
            format!("{} is not a valid config file: {err}", path.display()),
        )
        .with_hint("fix it, or run `deploybot login` to write it again")
    })
}

/// The file holds a token: say so when others may read it.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} holds a token and others may read it; run chmod 600 on it",
                path.display()
            );
        }
    }
}

/// Writes `config` to `path`, readable by its owner only (0600, its
/// directory 0700), replacing any previous file at once (a crash leaves
/// the old file or the new one, never half of one).
pub fn save(path: &Path, config: &CliConfig) -> Result<()> {
    let failed = |what: &str, err: &dyn fmt::Display| {
        CliError::new(Kind::Failed, format!("cannot {what}: {err}"))
    };
    let text = toml::to_string(config).map_err(|err| failed("encode the config", &err))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(|err| failed(&format!("create {}", dir.display()), &err))?;
    let temporary = path.with_extension("toml.tmp");
    write_private(&temporary, text.as_bytes())
        .map_err(|err| failed(&format!("write {}", temporary.display()), &err))?;
    std::fs::rename(&temporary, path).map_err(|err| {
        let _ = std::fs::remove_file(&temporary);
        failed(&format!("write {}", path.display()), &err)
    })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // A leftover temporary file keeps its old mode: set it again.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_pasted_with_its_scheme_is_the_token() {
        assert_eq!(bare_token("Bearer dbt_api_x"), "dbt_api_x");
        assert_eq!(bare_token(" bearer   dbt_api_x \n"), "dbt_api_x");
        assert_eq!(bare_token("dbt_api_x"), "dbt_api_x");
    }

    #[test]
    fn the_file_round_trips_and_debug_hides_the_token() {
        let dir = std::env::temp_dir().join(format!("deploybot-cli-config-{}", std::process::id()));
        let path = dir.join("deploybot").join("cli.toml");
        let config = CliConfig {
            url: Some("http://deploy.internal:8080".into()),
            token: Some("dbt_api_secret".into()),
            ca_cert: None,
        };
        save(&path, &config).unwrap();
        assert_eq!(load(&path).unwrap(), Some(config.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{config:?}").contains("secret"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
