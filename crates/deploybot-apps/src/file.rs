//! The apps.yaml syntax: deserialization with source locations, then the
//! checks serde cannot do (names, duplicates, globs, durations).

use std::collections::{BTreeMap, HashSet};

use deploybot_wire::names;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::{App, AppSecret, AppsError, DEFAULT_TIMEOUT_SECS, DeploySpec, Problem};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    apps: Vec<RawApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: Spanned<String>,
    repo: Spanned<String>,
    hosts: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "default_true")]
    deploy_on_push: bool,
    #[serde(default)]
    branches: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    #[serde(default)]
    deploy: Option<RawDeploy>,
    /// Name of the environment variable holding this app's webhook secret.
    #[serde(default)]
    webhook_secret_env: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeploy {
    command: Spanned<Vec<String>>,
    #[serde(default)]
    workdir: Option<Spanned<String>>,
    #[serde(default = "empty_env")]
    env: Spanned<BTreeMap<String, String>>,
    /// Variable → the name of the controller's variable (or credential)
    /// holding its value.
    #[serde(default = "empty_env")]
    secret_env: Spanned<BTreeMap<String, String>>,
    #[serde(default)]
    timeout: Option<Spanned<RawTimeout>>,
}

/// `timeout: 10m` or `timeout: 600` (seconds).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawTimeout {
    Seconds(u64),
    Text(String),
}

fn empty_env() -> Spanned<BTreeMap<String, String>> {
    Spanned::new(BTreeMap::new(), Location::UNKNOWN, Location::UNKNOWN)
}

fn default_true() -> bool {
    true
}

/// Longest `deploy.timeout` accepted: a day.
const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

struct Checker<'a> {
    origin: &'a str,
    /// Reads the controller's environment (secrets named by apps.yaml).
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, at: Location, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.origin.to_owned(),
            line: at.line(),
            column: at.column(),
            message: message.into(),
        });
    }
}

pub(crate) fn parse(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<App>, AppsError> {
    if text.trim().is_empty() {
        return Err(AppsError::Invalid(vec![Problem {
            file: origin.to_owned(),
            line: 1,
            column: 1,
            message: "the file is empty; it needs an `apps:` list".to_owned(),
        }]));
    }
    // YAML indents with spaces only; the parser's own message for a tab
    // points at the line before it.
    let tabs: Vec<Problem> = text
        .lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let indent = &line[..line.len() - line.trim_start().len()];
            let column = indent.find('\t')?;
            Some(Problem {
                file: origin.to_owned(),
                line: n as u64 + 1,
                column: column as u64 + 1,
                message: "a tab in the indentation: YAML indents with spaces only".to_owned(),
            })
        })
        .collect();
    if !tabs.is_empty() {
        return Err(AppsError::Invalid(tabs));
    }
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|err| {
        let (line, column) = err
            .location()
            .map(|at| (at.line(), at.column()))
            .unwrap_or((1, 1));
        let message = first_line(&err.without_snippet().to_string());
        AppsError::Invalid(vec![Problem {
            file: origin.to_owned(),
            line,
            column,
            message: explain_shape(text, line, column, &message).unwrap_or(message),
        }])
    })?;

    let mut checker = Checker {
        origin,
        env,
        problems: Vec::new(),
    };
    let mut seen_names = HashSet::new();
    let mut apps = Vec::with_capacity(raw.apps.len());
    for raw_app in raw.apps {
        if let Some(app) = check_app(&mut checker, &mut seen_names, raw_app) {
            apps.push(app);
        }
    }
    if checker.problems.is_empty() {
        Ok(apps)
    } else {
        Err(AppsError::Invalid(checker.problems))
    }
}

fn is_env_name(key: &str) -> bool {
    key.starts_with(|ch: char| ch.is_ascii_alphabetic() || ch == '_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `acme/web` of `https://github.com/acme/web(.git)` or
/// `git@github.com:acme/web.git`; `None` for anything else.
fn repo_of_url(repo: &str) -> Option<String> {
    let path = repo
        .strip_prefix("https://")
        .or_else(|| repo.strip_prefix("http://"))
        .and_then(|rest| rest.split_once('/').map(|(_, path)| path))
        .or_else(|| {
            repo.strip_prefix("git@")
                .and_then(|rest| rest.split_once(':').map(|(_, p)| p))
        })?;
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    names::check_repo(path).ok().map(|()| path.to_owned())
}

/// A person's words for the parser's "expected sequence/mapping start":
/// which key wanted a list (with the value rewritten as one) or a mapping.
fn explain_shape(text: &str, line: u64, column: u64, message: &str) -> Option<String> {
    let wanted = match message {
        "expected sequence start" => "list",
        "expected mapping start" => "mapping",
        _ => return None,
    };
    let source = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let column = usize::try_from(column).ok()?.checked_sub(1)?;
    // The key is on the line, before the value: `    command: ./deploy.sh --fast`.
    let (key, value) = match source
        .get(..column)
        .and_then(|head| head.trim_end().strip_suffix(':'))
    {
        Some(head) => (
            head.trim().trim_start_matches("- "),
            source.get(column..)?.trim(),
        ),
        // At the start of the file: the top level itself.
        None if line == 1 && wanted == "mapping" => {
            return Some(
                "the file must start with `apps:`, the list of apps (`apps:` then `  - name: web` …)"
                    .to_owned(),
            );
        }
        None => return None,
    };
    if key.is_empty() {
        return None;
    }
    Some(if wanted == "list" {
        let items: Vec<String> = value
            .split_whitespace()
            .map(|item| format!("{item:?}"))
            .collect();
        let example = if items.is_empty() {
            "[\"…\"]".to_owned()
        } else {
            format!("[{}]", items.join(", "))
        };
        format!("`{key}` must be a list, e.g. `{key}: {example}`")
    } else {
        format!("`{key}` must be a mapping of names to values")
    })
}

/// serde-saphyr appends its own location to messages; we print ours in front.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message);
    match line.find(" at line ") {
        Some(cut) => line[..cut].to_owned(),
        None => line.to_owned(),
    }
}

fn check_app(c: &mut Checker, seen: &mut HashSet<String>, raw: RawApp) -> Option<App> {
    let before = c.problems.len();
    let name = raw.name.value;
    // How the name appears in messages: escaped, so a name with a line break
    // cannot split a problem over two lines.
    let label = name.escape_debug().to_string();
    if let Err(why) = names::check_app_name(&name) {
        c.report(raw.name.referenced, why);
    } else if !seen.insert(name.clone()) {
        c.report(
            raw.name.referenced,
            format!("duplicate app name {name:?}: app names must be unique"),
        );
    }
    if let Some(short) = repo_of_url(&raw.repo.value) {
        c.report(
            raw.repo.referenced,
            format!(
                "app {label}: repo is the repository's owner/name, not its URL: write `repo: {short}`"
            ),
        );
    } else if let Err(why) = names::check_repo(&raw.repo.value) {
        c.report(raw.repo.referenced, format!("app {label}: {why}"));
    }

    if raw.hosts.value.is_empty() {
        c.report(
            raw.hosts.referenced,
            format!("app {label}: hosts is empty; list at least one host"),
        );
    }
    let mut hosts: Vec<String> = Vec::with_capacity(raw.hosts.value.len());
    for host in raw.hosts.value {
        if let Err(why) = names::check_hostname(&host.value) {
            c.report(host.referenced, format!("app {label}: {why}"));
        } else if hosts.contains(&host.value) {
            c.report(
                host.referenced,
                format!("app {label}: host {:?} is listed twice", host.value),
            );
        } else {
            hosts.push(host.value);
        }
    }

    let tags = compile_patterns(c, &label, "tags", raw.tags);
    // An app that lists tags and omits branches deploys releases: a branch
    // push must not supersede them. Only an app with neither follows every
    // branch.
    let branches = match raw.branches {
        Some(patterns) => Some(compile_patterns(c, &label, "branches", patterns)),
        None if !tags.is_empty() => Some(Vec::new()),
        None => None,
    };

    let (deploy, secrets) = match raw.deploy {
        Some(deploy) => {
            let secrets = check_secret_env(c, &label, &deploy.env.value, &deploy.secret_env);
            (check_deploy(c, &label, deploy), secrets)
        }
        None => {
            c.report(
                raw.name.referenced,
                format!("app {label}: missing `deploy` section (it needs at least `command`)"),
            );
            (None, BTreeMap::new())
        }
    };

    let webhook_secret = raw.webhook_secret_env.and_then(|var| {
        let value = is_env_name(&var.value)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "app {label}: webhook_secret_env {:?} must be letters, digits and '_', not starting with a digit",
                    var.value
                )
            })
            .and_then(|()| {
                (c.env)(&var.value)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        format!(
                            "app {label}: webhook_secret_env names {}, which is not set in the controller's environment (nor a credential)",
                            var.value
                        )
                    })
            });
        match value {
            Ok(secret) => Some(AppSecret(secret)),
            Err(why) => {
                c.report(var.referenced, why);
                None
            }
        }
    });

    if c.problems.len() > before {
        return None;
    }
    Some(App {
        webhook_secret,
        secrets,
        name,
        repo: raw.repo.value,
        hosts,
        deploy_on_push: raw.deploy_on_push,
        branches,
        tags,
        deploy: deploy?,
    })
}

/// `deploy.secret_env`: each variable's value, read from the controller's
/// environment (or credentials) variable it names.
fn check_secret_env(
    c: &mut Checker,
    app: &str,
    env: &BTreeMap<String, String>,
    raw: &Spanned<BTreeMap<String, String>>,
) -> BTreeMap<String, AppSecret> {
    let mut secrets = BTreeMap::new();
    for (name, source) in &raw.value {
        let problem = if !is_env_name(name) {
            Some(format!(
                "app {app}: deploy.secret_env name {name:?} must be letters, digits and '_', not starting with a digit"
            ))
        } else if name.starts_with("DEPLOYBOT_") {
            Some(format!(
                "app {app}: deploy.secret_env name {name:?}: DEPLOYBOT_* variables are set by the agent"
            ))
        } else if env.contains_key(name) {
            Some(format!(
                "app {app}: {name} is in both deploy.env and deploy.secret_env; keep it in one"
            ))
        } else if !is_env_name(source) {
            Some(format!(
                "app {app}: deploy.secret_env {name}: {source:?} must name a variable: letters, digits and '_'"
            ))
        } else {
            match (c.env)(source).filter(|v| !v.is_empty()) {
                Some(value) => {
                    secrets.insert(name.clone(), AppSecret(value));
                    None
                }
                None => Some(format!(
                    "app {app}: deploy.secret_env {name} names {source}, which is not set in the controller's environment (nor a credential)"
                )),
            }
        };
        if let Some(problem) = problem {
            c.report(raw.referenced, problem);
        }
    }
    secrets
}

fn compile_patterns(
    c: &mut Checker,
    app: &str,
    key: &str,
    raw: Vec<Spanned<String>>,
) -> Vec<glob::Pattern> {
    raw.into_iter()
        .filter_map(|pattern| match glob::Pattern::new(&pattern.value) {
            Ok(compiled) if !pattern.value.is_empty() => Some(compiled),
            Ok(_) => {
                c.report(
                    pattern.referenced,
                    format!("app {app}: empty {key} pattern"),
                );
                None
            }
            Err(err) => {
                c.report(
                    pattern.referenced,
                    format!(
                        "app {app}: bad {key} pattern {:?}: {}",
                        pattern.value, err.msg
                    ),
                );
                None
            }
        })
        .collect()
}

fn check_deploy(c: &mut Checker, app: &str, raw: RawDeploy) -> Option<DeploySpec> {
    let before = c.problems.len();
    let command = raw.command.value;
    if command.is_empty() || command[0].is_empty() {
        c.report(
            raw.command.referenced,
            format!("app {app}: deploy.command needs at least the program to run"),
        );
    }
    if command.iter().any(|arg| arg.contains('\0')) {
        c.report(
            raw.command.referenced,
            format!("app {app}: deploy.command cannot contain NUL bytes"),
        );
    }
    let workdir = raw.workdir.map(|workdir| {
        if !workdir.value.starts_with('/') {
            c.report(
                workdir.referenced,
                format!(
                    "app {app}: deploy.workdir {:?} must be an absolute path",
                    workdir.value
                ),
            );
        }
        workdir.value
    });
    let env = raw.env.value;
    for key in env.keys() {
        if !is_env_name(key) {
            c.report(
                raw.env.referenced,
                format!(
                    "app {app}: deploy.env name {key:?} must be letters, digits and '_', not starting with a digit"
                ),
            );
        } else if key.starts_with("DEPLOYBOT_") {
            c.report(
                raw.env.referenced,
                format!(
                    "app {app}: deploy.env name {key:?}: DEPLOYBOT_* variables are set by the agent"
                ),
            );
        }
    }
    let timeout_secs = match raw.timeout {
        None => DEFAULT_TIMEOUT_SECS,
        Some(timeout) => {
            let secs = match &timeout.value {
                RawTimeout::Seconds(secs) => Ok(*secs),
                RawTimeout::Text(text) => humantime::parse_duration(text)
                    .map(|d| d.as_secs())
                    .map_err(|err| {
                        format!("{text:?} is not a duration like 90s, 10m or 1h: {err}")
                    }),
            };
            match secs {
                Ok(secs) if (1..=MAX_TIMEOUT_SECS).contains(&secs) => secs,
                Ok(_) => {
                    c.report(
                        timeout.referenced,
                        format!("app {app}: deploy.timeout must be between 1s and 24h"),
                    );
                    0
                }
                Err(why) => {
                    c.report(
                        timeout.referenced,
                        format!("app {app}: deploy.timeout {why}"),
                    );
                    0
                }
            }
        }
    };
    (c.problems.len() == before).then_some(DeploySpec {
        command,
        workdir,
        env,
        timeout_secs,
    })
}
