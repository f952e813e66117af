//! Hiding secrets in deploy output before it leaves the host.
//!
//! A deploy script that echoes its environment (or a tool that prints its
//! configuration on error) must not put credentials into the controller's log
//! store, where everyone who can read deploys can see them. We cannot know
//! every secret, so we hide the values of variables whose *names* say they
//! are secret, from the job's `deploy.env` and from the agent's own
//! environment (which the deploy command inherits).

use std::ffi::OsString;

/// Name suffixes (compared case-insensitively) that mark a secret.
const SECRET_SUFFIXES: [&str; 4] = ["_TOKEN", "_SECRET", "_PASSWORD", "_KEY"];
/// Shorter values would hide ordinary words and digits all over the output.
const MIN_SECRET_CHARS: usize = 4;
pub(crate) const MASK: &str = "***";

#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    /// Longest first, so a secret containing another is hidden whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// Collects the secret values among `vars`.
    pub(crate) fn new<N, V>(vars: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: AsRef<str>,
        V: Into<String>,
    {
        let mut secrets: Vec<String> = vars
            .into_iter()
            .filter(|(name, _)| is_secret_name(name.as_ref()))
            .map(|(_, value)| value.into())
            .filter(|value| value.chars().count() >= MIN_SECRET_CHARS)
            .collect();
        sort(&mut secrets);
        Redactor { secrets }
    }

    /// Also hides `values` whatever their names: the agent's own tokens.
    pub(crate) fn with_secrets(mut self, values: impl IntoIterator<Item = String>) -> Self {
        self.secrets.extend(
            values
                .into_iter()
                .filter(|value| value.chars().count() >= MIN_SECRET_CHARS),
        );
        sort(&mut self.secrets);
        self
    }

    /// Secrets from the agent's own environment plus `extra` (a job's env).
    /// Variables that are not valid UTF-8 cannot appear in our (lossily
    /// decoded) output as themselves, so they are skipped.
    pub(crate) fn from_env_and<'a>(
        extra: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        let own = std::env::vars_os().filter_map(|(name, value): (OsString, OsString)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        });
        let extra = extra
            .into_iter()
            .map(|(name, value)| (name.clone(), value.clone()));
        Redactor::new(own.chain(extra))
    }

    /// The length in bytes of the longest secret (0 with none).
    pub(crate) fn longest(&self) -> usize {
        self.secrets.first().map_or(0, String::len)
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), MASK);
            }
        }
        text
    }
}

fn sort(secrets: &mut Vec<String>) {
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    secrets.dedup();
}

fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_SUFFIXES.iter().any(|suffix| upper.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_values_of_secret_names_only() {
        let redactor = Redactor::new([
            ("GITHUB_TOKEN", "ghp_abcdef"),
            ("db_password", "hunter22"),
            ("Signing_Key", "k3y-material"),
            ("APP_SECRET", "s3cr3t"),
            ("SHORT_KEY", "abc"),
            ("PATH", "/usr/bin"),
            ("TOKEN_FILE", "/run/token"),
        ]);
        let line = "ghp_abcdef hunter22 k3y-material s3cr3t abc /usr/bin /run/token";
        assert_eq!(
            redactor.redact(line),
            "*** *** *** *** abc /usr/bin /run/token"
        );
    }

    #[test]
    fn longer_secrets_win_over_their_substrings() {
        let redactor = Redactor::new([("A_TOKEN", "abcd"), ("B_TOKEN", "abcdefgh")]);
        assert_eq!(redactor.redact("x abcdefgh y abcd"), "x *** y ***");
    }

    #[test]
    fn the_agents_tokens_are_hidden_whatever_their_names() {
        let redactor = Redactor::new([("A_TOKEN", "abcd")])
            .with_secrets(["abcdefgh".to_owned(), "xyz".to_owned()]);
        assert_eq!(redactor.redact("abcdefgh abcd xyz"), "*** *** xyz");
    }

    #[test]
    fn a_jobs_variables_join_the_agents_own() {
        // (The agent's own environment: tests/own_env_redaction.rs.)
        let job_env = [("DEPLOY_KEY".to_owned(), "job-secret".to_owned())];
        let redactor = Redactor::from_env_and(job_env.iter().map(|(n, v)| (n, v)));
        assert_eq!(redactor.redact("job-secret"), MASK);
    }
}
