//! A filter's names checked against what the controller knows, so that a
//! typo (`--app wbe`) says so instead of printing nothing or following a
//! stream that will never carry a line.

use deploybot_wire::AppsResponse;

use super::client::{CliError, Client, Kind, Result};
use super::info;

/// Fails unless the controller's apps.yaml has an app named `app`.
pub async fn check_app(client: &Client, app: &str) -> Result<()> {
    let answer: AppsResponse = client.get(&["v1", "apps"], &[]).await?;
    if answer.apps.iter().any(|known| known.name == app) {
        return Ok(());
    }
    let names: Vec<&str> = answer.apps.iter().map(|a| a.name.as_str()).collect();
    Err(CliError::new(
        Kind::NotFound,
        format!("no app named {app:?} on this controller"),
    )
    .with_hint(format!("its apps: {}", list(&names))))
}

/// Fails unless some app lists `host` or an agent registered for it.
pub async fn check_host(client: &Client, host: &str) -> Result<()> {
    let hosts = info::all_hosts(client).await?;
    if hosts.iter().any(|known| known.hostname == host) {
        return Ok(());
    }
    let names: Vec<&str> = hosts.iter().map(|h| h.hostname.as_str()).collect();
    Err(CliError::new(
        Kind::NotFound,
        format!("no host named {host:?} on this controller"),
    )
    .with_hint(format!("its hosts: {}", list(&names))))
}

fn list(names: &[&str]) -> String {
    const SHOWN: usize = 20;
    match names.len() {
        0 => "none".to_owned(),
        n if n <= SHOWN => names.join(", "),
        n => format!("{}, … ({n} in all)", names[..SHOWN].join(", ")),
    }
}
