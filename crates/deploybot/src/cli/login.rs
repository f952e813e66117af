//! `deploybot login`: check a token against a controller, then save both.

use std::io::{IsTerminal, Read, Write};

use deploybot_wire::Job;

use super::GlobalArgs;
use super::client::{CliError, Client, Kind, Result};
use super::config::{self, CliConfig};

/// The token to log in with: from stdin (`--token-stdin`), `--token` or
/// `DEPLOYBOT_TOKEN`, else asked for on the terminal without echo. Runs
/// before the async runtime, so that Ctrl-C at the prompt simply ends it.
pub fn read_token(global: &GlobalArgs, token_stdin: bool) -> Result<String> {
    let token = if token_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|err| {
            CliError::new(
                Kind::Failed,
                format!("cannot read the token from stdin: {err}"),
            )
        })?;
        text
    } else if let Some(token) = global
        .token
        .clone()
        .or_else(|| std::env::var(config::TOKEN_ENV).ok())
        .filter(|t| !t.trim().is_empty())
    {
        token
    } else if std::io::stdin().is_terminal() {
        prompt("token: ")?
    } else {
        return Err(CliError::new(Kind::Usage, "no token to log in with")
            .with_hint("pass --token-stdin and pipe it in, or set DEPLOYBOT_TOKEN"));
    };
    let token = token.trim().to_owned();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(CliError::new(
            Kind::Usage,
            "the token is empty or has spaces in it",
        ));
    }
    Ok(token)
}

/// Checks `token` with a read (`GET /v1/jobs?limit=1`) and saves it with
/// the URL (and the CA certificate, if one is given).
pub async fn login(global: GlobalArgs, token: String) -> Result<()> {
    let target = config::resolve(&GlobalArgs {
        token: Some(token.clone()),
        ..global
    })?;
    let client = Client::new(&target)?;
    let _: Vec<Job> = client
        .get(&["v1", "jobs"], &[("limit", Some("1".to_owned()))])
        .await?;
    let path = config::path().ok_or_else(|| {
        CliError::new(
            Kind::Failed,
            "cannot tell where to save the login: neither XDG_CONFIG_HOME nor HOME is set",
        )
    })?;
    // Absolute: later commands run from other directories.
    let ca_cert = target
        .ca_cert
        .map(|path| std::fs::canonicalize(&path).unwrap_or(path));
    config::save(
        &path,
        &CliConfig {
            url: Some(client.base().to_owned()),
            token: Some(token),
            ca_cert,
        },
    )?;
    outln!(
        "logged in to {}; saved to {} (readable by you only)",
        client.base(),
        path.display()
    );
    Ok(())
}

/// Asks on stderr, reads a line from the terminal with echo off.
fn prompt(question: &str) -> Result<String> {
    let failed =
        |err: std::io::Error| CliError::new(Kind::Failed, format!("cannot read the token: {err}"));
    eprint!("{question}");
    std::io::stderr().flush().map_err(failed)?;
    let mut line = String::new();
    {
        let _quiet = EchoOff::new();
        std::io::stdin().read_line(&mut line).map_err(failed)?;
    }
    eprintln!();
    Ok(line)
}

/// The terminal on stdin stops echoing until this is dropped.
struct EchoOff {
    #[cfg(unix)]
    saved: Option<rustix::termios::Termios>,
}

impl EchoOff {
    fn new() -> EchoOff {
        #[cfg(unix)]
        {
            use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
            let stdin = std::io::stdin();
            let saved = tcgetattr(&stdin).ok().filter(|termios| {
                let mut quiet = termios.clone();
                quiet.local_modes.remove(LocalModes::ECHO);
                tcsetattr(&stdin, OptionalActions::Now, &quiet).is_ok()
            });
            EchoOff { saved }
        }
        #[cfg(not(unix))]
        EchoOff {}
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            // Restores the settings read in `new`.
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}
