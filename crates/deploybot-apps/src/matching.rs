//! Deciding what a push or a manual request deploys.

use std::fmt;

use glob::{MatchOptions, Pattern};

use crate::{App, AppsConfig};

/// `*` stops at `/` (as in GitHub Actions' branch filters); `**` crosses it.
const GIT_REF_GLOB: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// What a push deploys.
#[derive(Debug, Default)]
pub struct PushPlan<'a> {
    /// Apps whose hosts get a job.
    pub targets: Vec<&'a App>,
    /// Apps of the pushed repo that do not deploy this push, with the reason.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub app: String,
    pub reason: String,
}

impl PushPlan<'_> {
    /// One sentence on why nothing is deployed (when `targets` is empty).
    pub fn no_match_reason(&self, repo: &str, git_ref: &str) -> String {
        if self.skipped.is_empty() {
            return format!("no app in apps.yaml deploys repo {repo}");
        }
        let reasons: Vec<String> = self
            .skipped
            .iter()
            .map(|s| format!("app {}: {}", s.app, s.reason))
            .collect();
        format!("push to {git_ref} deploys nothing: {}", reasons.join("; "))
    }
}

enum PushedRef<'r> {
    Branch(&'r str),
    Tag(&'r str),
    Other,
}

fn classify(git_ref: &str) -> PushedRef<'_> {
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        PushedRef::Branch(branch)
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        PushedRef::Tag(tag)
    } else {
        PushedRef::Other
    }
}

fn matches_any(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches_with(name, GIT_REF_GLOB))
}

fn list(patterns: &[Pattern]) -> String {
    let names: Vec<&str> = patterns.iter().map(Pattern::as_str).collect();
    format!("[{}]", names.join(", "))
}

/// Why a manual deploy names no app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingError {
    UnknownRepo {
        repo: String,
    },
    UnknownApp {
        app: String,
    },
    OtherRepo {
        app: String,
        repo: String,
    },
    HostNotPaired {
        repo: String,
        host: String,
        hosts: Vec<String>,
    },
    Ambiguous {
        repo: String,
        host: String,
        apps: Vec<String>,
    },
}

impl fmt::Display for PairingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairingError::UnknownRepo { repo } => {
                write!(f, "no app in apps.yaml deploys repo {repo}")
            }
            PairingError::UnknownApp { app } => write!(f, "no app named {app:?} in apps.yaml"),
            PairingError::OtherRepo { app, repo } => {
                write!(f, "app {app} deploys repo {repo}, not this one")
            }
            PairingError::HostNotPaired { repo, host, hosts } => write!(
                f,
                "no app deploys repo {repo} to host {host}; its apps deploy to: {}",
                hosts.join(", ")
            ),
            PairingError::Ambiguous { repo, host, apps } => write!(
                f,
                "repo {repo} deploys to host {host} through several apps ({}); name one with `app`",
                apps.join(", ")
            ),
        }
    }
}

impl std::error::Error for PairingError {}

impl App {
    /// What pushes the app deploys, in one phrase (`config check` and
    /// `explain` print it, so an omitted key's meaning is said).
    pub fn push_rule(&self) -> String {
        if !self.deploy_on_push {
            return "deploys no pushes (deploy_on_push is off)".into();
        }
        let tags = if self.tags.is_empty() {
            "no tags".to_owned()
        } else {
            format!("tags {}", list(&self.tags))
        };
        match &self.branches {
            None => format!("deploys pushes to every branch and {tags}"),
            Some(patterns) if patterns.is_empty() && self.tags.is_empty() => {
                "deploys no pushes (branches is empty and no tags are listed)".into()
            }
            Some(patterns) if patterns.is_empty() => {
                format!("deploys {tags} only, no branch pushes (it lists tags and no branches)")
            }
            Some(patterns) => format!("deploys pushes to branches {} and {tags}", list(patterns)),
        }
    }
}

impl AppsConfig {
    /// The apps a push of `git_ref` (`refs/heads/…` or `refs/tags/…`) to
    /// `repo` deploys, and why the repo's other apps don't.
    pub fn plan_push(&self, repo: &str, git_ref: &str) -> PushPlan<'_> {
        let mut plan = PushPlan::default();
        for app in self.apps.iter().filter(|app| app.deploys_repo(repo)) {
            let skip = |reason: String| Skipped {
                app: app.name.clone(),
                reason,
            };
            if !app.deploy_on_push {
                plan.skipped.push(skip("deploy_on_push is off".into()));
                continue;
            }
            match classify(git_ref) {
                PushedRef::Branch(branch) => match &app.branches {
                    Some(patterns) if patterns.is_empty() => {
                        plan.skipped.push(skip(format!(
                            "branch {branch} not deployed: {}",
                            app.push_rule()
                        )));
                    }
                    Some(patterns) if !matches_any(patterns, branch) => {
                        plan.skipped.push(skip(format!(
                            "branch {branch} matches none of branches {}",
                            list(patterns)
                        )));
                    }
                    _ => plan.targets.push(app),
                },
                PushedRef::Tag(tag) if app.tags.is_empty() => {
                    plan.skipped.push(skip(format!(
                        "tag {tag} not deployed: the app lists no tags patterns"
                    )));
                }
                PushedRef::Tag(tag) if !matches_any(&app.tags, tag) => {
                    plan.skipped.push(skip(format!(
                        "tag {tag} matches none of tags {}",
                        list(&app.tags)
                    )));
                }
                PushedRef::Tag(_) => plan.targets.push(app),
                PushedRef::Other => {
                    plan.skipped
                        .push(skip(format!("{git_ref} is neither a branch nor a tag")));
                }
            }
        }
        plan
    }

    /// The app that deploys `repo` to `host`; `app` picks one by name when
    /// several do.
    pub fn app_for(&self, repo: &str, host: &str, app: Option<&str>) -> Result<&App, PairingError> {
        if let Some(name) = app {
            let found = self.app(name).ok_or_else(|| PairingError::UnknownApp {
                app: name.to_owned(),
            })?;
            if !found.deploys_repo(repo) {
                return Err(PairingError::OtherRepo {
                    app: found.name.clone(),
                    repo: found.repo.clone(),
                });
            }
            if !found.hosts.iter().any(|h| h == host) {
                return Err(PairingError::HostNotPaired {
                    repo: repo.to_owned(),
                    host: host.to_owned(),
                    hosts: found.hosts.clone(),
                });
            }
            return Ok(found);
        }
        let of_repo: Vec<&App> = self.apps.iter().filter(|a| a.deploys_repo(repo)).collect();
        if of_repo.is_empty() {
            return Err(PairingError::UnknownRepo {
                repo: repo.to_owned(),
            });
        }
        let paired: Vec<&App> = of_repo
            .iter()
            .copied()
            .filter(|a| a.hosts.iter().any(|h| h == host))
            .collect();
        match paired.as_slice() {
            [one] => Ok(one),
            [] => {
                let mut hosts: Vec<String> = of_repo
                    .iter()
                    .flat_map(|a| a.hosts.iter().cloned())
                    .collect();
                hosts.sort();
                hosts.dedup();
                Err(PairingError::HostNotPaired {
                    repo: repo.to_owned(),
                    host: host.to_owned(),
                    hosts,
                })
            }
            several => Err(PairingError::Ambiguous {
                repo: repo.to_owned(),
                host: host.to_owned(),
                apps: several.iter().map(|a| a.name.clone()).collect(),
            }),
        }
    }
}
