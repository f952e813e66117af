//! The host's own say over what runs on it: `--policy FILE`.
//!
//! The controller decides which jobs reach a host; the policy decides which
//! of them the agent runs, and how. Only listed apps may deploy here, and an
//! app with a `command` runs that command with the policy's workdir and env
//! instead of the controller's deploy spec, so a compromised controller can
//! neither run commands of its choice nor inject variables (`LD_PRELOAD`)
//! into a command the host trusts. The job's `DEPLOYBOT_*` variables and
//! its timeout still come from the job.
//!
//! The environment of every deploy command is clean: `PATH`, `HOME`, `LANG`
//! and `USER` of the agent's own, plus the names `inherit_env` lists.
//!
//! ```toml
//! inherit_env = ["SSH_AUTH_SOCK", "AWS_PROFILE"]
//!
//! [apps.web]
//! command = ["/srv/deploy-web.sh", "--prod"]
//! workdir = "/srv/web"
//! env = { RAILS_ENV = "production" }
//!
//! [apps.api]
//! ```
//!
//! Every rule is checked while the file is parsed, so a mistake is reported
//! with its line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use deploybot_wire::{Job, names};
use serde::Deserialize;

use crate::runner::Launch;

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    apps: BTreeMap<AppName, AppRule>,
    inherit_env: Vec<String>,
}

/// Why a policy file cannot be used. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the agent policy {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad TOML, an unknown key, or a rule broken; `message` is the TOML
    /// parser's, with the line and column.
    #[error("invalid agent policy {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl Policy {
    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::parse(&text).map_err(|message| PolicyError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    fn parse(text: &str) -> Result<Policy, String> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|err| err.to_string().trim().to_owned())?;
        Ok(Policy {
            apps: file.apps,
            inherit_env: file
                .inherit_env
                .into_iter()
                .map(|EnvName(name)| name)
                .collect(),
        })
    }

    /// Variables of the agent's environment deploy commands get too.
    pub fn inherit_env(&self) -> &[String] {
        &self.inherit_env
    }

    /// The apps that may deploy on this host.
    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.apps.keys().map(|name| name.0.as_str())
    }

    /// What to run for `job` (which brought `secrets`), or why it must not
    /// run here.
    pub(crate) fn launch<'a>(
        &'a self,
        job: &'a Job,
        secrets: &'a BTreeMap<String, String>,
    ) -> Result<Launch<'a>, String> {
        let Some(rule) = self.apps.get(job.app.as_str()) else {
            return Err(format!(
                "refused by agent policy: app {} is not allowed on this host",
                job.app
            ));
        };
        Ok(match &rule.local {
            Some(local) => Launch {
                command: &local.command,
                workdir: local.workdir.as_deref(),
                env: &local.env,
                secrets: None,
                from_policy: true,
            },
            None => Launch::from_spec(&job.deploy, secrets),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    inherit_env: Vec<EnvName>,
    #[serde(default)]
    apps: BTreeMap<AppName, AppRule>,
}

/// A variable name of the agent's environment a deploy may inherit; never
/// one of the agent's own (`DEPLOYBOT_*`).
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct EnvName(String);

impl TryFrom<String> for EnvName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "inherit_env: {name:?} must be letters, digits and '_', not starting with a digit"
            ));
        }
        if name.starts_with("DEPLOYBOT_") || name == "GITHUB_WEBHOOK_SECRET" {
            return Err(format!(
                "inherit_env: {name} is the agent's own setting, never a deploy's"
            ));
        }
        Ok(EnvName(name))
    }
}

/// An app name as apps.yaml spells it: a typo here would otherwise refuse
/// the app's every deploy without a word.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
struct AppName(String);

impl TryFrom<String> for AppName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        names::check_app_name(&name)?;
        Ok(AppName(name))
    }
}

impl std::borrow::Borrow<str> for AppName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRule")]
struct AppRule {
    /// `None`: the controller's deploy spec is used.
    local: Option<LocalCommand>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalCommand {
    command: Vec<String>,
    workdir: Option<PathBuf>,
    env: BTreeMap<String, String>,
}

/// An `[apps.NAME]` table as written. Each field checks itself, so an error
/// points at the value that is wrong.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    command: Option<Argv>,
    workdir: Option<AbsolutePath>,
    env: Option<Env>,
}

impl TryFrom<RawRule> for AppRule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let Some(Argv(command)) = raw.command else {
            // Silently ignoring them would leave the controller's env in
            // place where the file seems to replace it.
            if raw.workdir.is_some() || raw.env.is_some() {
                return Err("`workdir` and `env` are used only with `command`".to_owned());
            }
            return Ok(AppRule { local: None });
        };
        Ok(AppRule {
            local: Some(LocalCommand {
                command,
                workdir: raw.workdir.map(|AbsolutePath(path)| path),
                env: raw.env.map(|Env(env)| env).unwrap_or_default(),
            }),
        })
    }
}

#[derive(Deserialize)]
#[serde(try_from = "Vec<String>")]
struct Argv(Vec<String>);

impl TryFrom<Vec<String>> for Argv {
    type Error = String;

    fn try_from(command: Vec<String>) -> Result<Self, String> {
        match command.first() {
            None => Err("`command` must not be empty".to_owned()),
            Some(program) if program.is_empty() => {
                Err("`command` must start with a program, not \"\"".to_owned())
            }
            Some(_) if command.iter().any(|arg| arg.contains('\0')) => {
                Err("`command` must not contain NUL characters".to_owned())
            }
            Some(_) => Ok(Argv(command)),
        }
    }
}

#[derive(Deserialize)]
#[serde(try_from = "PathBuf")]
struct AbsolutePath(PathBuf);

impl TryFrom<PathBuf> for AbsolutePath {
    type Error = String;

    fn try_from(path: PathBuf) -> Result<Self, String> {
        if !path.is_absolute() {
            return Err(format!(
                "`workdir` must be an absolute path, not {:?}",
                path.display().to_string()
            ));
        }
        Ok(AbsolutePath(path))
    }
}

#[derive(Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
struct Env(BTreeMap<String, String>);

impl TryFrom<BTreeMap<String, String>> for Env {
    type Error = String;

    fn try_from(env: BTreeMap<String, String>) -> Result<Self, String> {
        for (name, value) in &env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!(
                    "`env` name {name:?} must be non-empty without '=' or NUL"
                ));
            }
            if value.contains('\0') {
                return Err(format!("`env` value of {name} must not contain NUL"));
            }
        }
        Ok(Env(env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
# Only these apps may deploy on this host.
[apps.web]
command = ["/srv/deploy-web.sh", "--prod"]
workdir = "/srv/web"
env = { RAILS_ENV = "production" }

[apps.api]
"#;

    #[test]
    fn reads_the_documented_example() {
        let policy = Policy::parse(EXAMPLE).unwrap();
        assert_eq!(policy.apps().collect::<Vec<_>>(), ["api", "web"]);
        let web = policy.apps["web"].local.as_ref().unwrap();
        assert_eq!(web.command, ["/srv/deploy-web.sh", "--prod"]);
        assert_eq!(web.workdir.as_deref(), Some(Path::new("/srv/web")));
        assert_eq!(web.env["RAILS_ENV"], "production");
        assert_eq!(policy.apps["api"].local, None);
    }

    #[test]
    fn an_empty_file_allows_nothing() {
        assert_eq!(Policy::parse("").unwrap().apps().count(), 0);
    }

    #[test]
    fn mistakes_are_refused_with_their_position() {
        for (text, expected) in [
            ("[apps.web\n", "line 1"),
            ("[apps.web]\ncomand = [\"x\"]\n", "unknown field `comand`"),
            ("allow = [\"web\"]\n", "unknown field `allow`"),
            ("[apps.web]\ncommand = []\n", "`command` must not be empty"),
            (
                "[apps.web]\ncommand = [\"\"]\n",
                "must start with a program",
            ),
            (
                "[apps.web]\ncommand = [\"x\"]\nworkdir = \"srv/web\"\n",
                "`workdir` must be an absolute path, not \"srv/web\"",
            ),
            (
                "[apps.web]\nenv = { A = \"b\" }\n",
                "`workdir` and `env` are used only with `command`",
            ),
            (
                "[apps.web]\ncommand = [\"x\"]\nenv = { \"A=B\" = \"c\" }\n",
                "must be non-empty without '='",
            ),
            ("[apps.\"web app\"]\n", "must start with a letter or digit"),
            (
                "[apps.web]\ncommand = \"/srv/deploy.sh\"\n",
                "expected a sequence",
            ),
            (
                "inherit_env = [\"DEPLOYBOT_ENROLLMENT_TOKEN\"]\n",
                "the agent's own setting",
            ),
            ("inherit_env = [\"A-B\"]\n", "must be letters, digits"),
        ] {
            let err = Policy::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.contains("line "), "{text:?}: {err}");
        }
    }

    #[test]
    fn errors_point_at_the_wrong_value() {
        let err = Policy::parse("[apps.web]\n\ncommand = []\n").unwrap_err();
        assert!(
            err.starts_with("TOML parse error at line 3, column 11"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let missing = Policy::load(&path).unwrap_err();
        assert!(matches!(missing, PolicyError::Read { .. }));
        assert!(
            missing.to_string().contains(&*path.to_string_lossy()),
            "{missing}"
        );

        std::fs::write(&path, "[apps.web]\ncommand = []\n").unwrap();
        let invalid = Policy::load(&path).unwrap_err().to_string();
        assert!(
            invalid.starts_with(&format!("invalid agent policy {}: ", path.display())),
            "{invalid}"
        );
        assert!(invalid.contains("`command` must not be empty"), "{invalid}");
    }
}
