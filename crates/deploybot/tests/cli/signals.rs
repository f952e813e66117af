//! SIGHUP reloads apps.yaml; SIGTERM stops gracefully.
//!
//! Signal handlers are installed before the `listening on` line: the last
//! tests signal the moment that line appears.

use std::path::Path;

use deploybot_wire::DeliveryVerdict;

use crate::common::{ArmedKill, DEADLINE, Server, sha, web_server_command, write};

fn apps_yaml(branches: &str) -> String {
    format!(
        r#"apps:
  - name: web
    repo: acme/web
    hosts: [web-01, web-02]
    branches: {branches}
    deploy:
      command: ["./deploy.sh"]
"#
    )
}

/// Line 4 has an unknown key (`hostz`, column 5).
const INVALID_APPS_YAML: &str = "apps:\n  - name: web\n    repo: acme/web\n    hostz: [web-01]\n";

/// Sends SIGHUP and waits for a log line containing `expect`.
fn hang_up(server: &Server, expect: &str) -> String {
    let mark = server.log.mark();
    server.signal("HUP");
    server
        .log
        .wait_for(mark, expect, DEADLINE)
        .unwrap_or_else(|err| panic!("after SIGHUP: {err}"))
}

fn start(dir: &Path, apps: &str) -> Server {
    write(dir.join("apps.yaml"), apps);
    Server::start(web_server_command(dir))
}

#[tokio::test]
async fn sighup_reloads_apps_yaml_and_an_invalid_file_keeps_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &apps_yaml("[main]"));

    let dev = server.push("hup-1", "refs/heads/dev", &sha(1)).await;
    assert_eq!(dev.verdict, DeliveryVerdict::NoMatch, "{dev:?}");
    assert!(dev.jobs_created.is_empty(), "{dev:?}");

    write(dir.path().join("apps.yaml"), &apps_yaml("[main, dev]"));
    let line = hang_up(&server, "reloaded apps.yaml");
    assert!(line.contains("apps=1"), "{line}");
    let dev = server.push("hup-2", "refs/heads/dev", &sha(2)).await;
    assert_eq!(dev.verdict, DeliveryVerdict::Queued, "{dev:?}");
    assert_eq!(dev.jobs_created.len(), 2, "{dev:?}");

    write(dir.path().join("apps.yaml"), INVALID_APPS_YAML);
    let mark = server.log.mark();
    hang_up(&server, "keeping the previous config");
    server
        .log
        .wait_for(mark, "apps.yaml:4:5: unknown field `hostz`", DEADLINE)
        .unwrap_or_else(|err| panic!("the reload error names the problem: {err}"));
    let dev = server.push("hup-3", "refs/heads/dev", &sha(3)).await;
    assert_eq!(
        dev.verdict,
        DeliveryVerdict::Queued,
        "old config kept: {dev:?}"
    );
    let feature = server.push("hup-4", "refs/heads/feature", &sha(4)).await;
    assert_eq!(feature.verdict, DeliveryVerdict::NoMatch, "{feature:?}");
    server.assert_healthy().await;

    // A later valid file is picked up again.
    write(dir.path().join("apps.yaml"), &apps_yaml("[main]"));
    hang_up(&server, "reloaded apps.yaml");
    let dev = server.push("hup-5", "refs/heads/dev", &sha(5)).await;
    assert_eq!(dev.verdict, DeliveryVerdict::NoMatch, "{dev:?}");
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully_with_exit_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &apps_yaml("[main]"));
    server.assert_healthy().await;

    server.signal("TERM");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}\n{}", server.log.text());
    let log = server.log.text();
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        log.lines().last().unwrap_or("").contains("stopped"),
        "{log}"
    );
}

/// Starts a server and sends `signal` the moment its `listening on` line is
/// read, as a supervisor waiting for readiness would.
fn signal_on_ready(dir: &Path, signal: &str) -> Server {
    write(dir.join("apps.yaml"), &apps_yaml("[main]"));
    let mut server = Server::spawn(web_server_command(dir));
    let armed = ArmedKill::new(server.pid, signal);
    server.wait_ready();
    armed.fire();
    server
}

#[test]
fn sigterm_right_after_the_readiness_line_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = signal_on_ready(dir.path(), "TERM");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}\n{}", server.log.text());
}

#[test]
fn sighup_right_after_the_readiness_line_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let server = signal_on_ready(dir.path(), "HUP");
    server
        .log
        .wait_for(0, "reloaded apps.yaml", DEADLINE)
        .unwrap_or_else(|err| panic!("after SIGHUP: {err}"));
}
