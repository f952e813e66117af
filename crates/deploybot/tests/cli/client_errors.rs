//! How client commands fail: one line of error, a hint, and the documented
//! exit code; short job ids that match one job, several or none.

use std::path::Path;

use deploybot_wire::{CreatedToken, JobResponse};
use tokio::task::block_in_place;

use crate::common::{
    ADMIN_TOKEN, Finished, Server, WEB_APPS_YAML, client, deploybot, run, web_server_command, write,
};

fn cli(dir: &Path, server: &Server, args: &[&str]) -> Finished {
    let mut cmd = client(dir, &server.address);
    cmd.args(args);
    block_in_place(|| run(cmd))
}

fn web_server(dir: &Path) -> Server {
    write(dir.join("apps.yaml"), WEB_APPS_YAML);
    block_in_place(|| Server::start(web_server_command(dir)))
}

/// A pending job for `host` (the test servers run no agent).
fn queue(dir: &Path, server: &Server, host: &str) -> String {
    let out = cli(
        dir,
        server,
        &[
            "deploy", "--repo", "acme/web", "--ref", "main", "--host", host, "-o", "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_str::<JobResponse>(&out.stdout)
        .unwrap()
        .job
        .id
}

#[test]
fn an_unreachable_controller_exits_3_naming_its_url() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = client(dir.path(), &url);
    cmd.arg("jobs");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "error: cannot reach the controller at {url} (connection refused)\n\
             hint: is it running? set --url or DEPLOYBOT_URL\n"
        )
    );
    assert_eq!(out.stdout, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_exit_4_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let server = web_server(root);

    let bad = cli(
        root,
        &server,
        &["jobs", "--token", "dbt_api_not-a-real-token"],
    );
    assert_eq!(bad.status.code(), Some(4), "{bad:?}");
    assert!(
        bad.stderr
            .starts_with("error: the controller refused the token: token not recognised\nhint: "),
        "{bad:?}"
    );
    assert!(bad.stderr.contains("deploybot login"), "{bad:?}");

    let mut none = client(root, &server.address);
    none.env_remove("DEPLOYBOT_TOKEN").arg("jobs");
    let none = block_in_place(|| run(none));
    assert_eq!(none.status.code(), Some(4), "{none:?}");
    assert!(none.stderr.contains("needs a token"), "{none:?}");

    // A read token may list but not deploy: the controller's reason, exit 4.
    let made = cli(
        root,
        &server,
        &[
            "tokens", "create", "--name", "ro", "--role", "read", "-o", "json",
        ],
    );
    let reader: CreatedToken = serde_json::from_str(&made.stdout).unwrap();
    let listed = cli(root, &server, &["--token", &reader.token, "jobs"]);
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    let denied = cli(
        root,
        &server,
        &[
            "deploy",
            "--repo",
            "acme/web",
            "--ref",
            "main",
            "--host",
            "web-01",
            "--token",
            &reader.token,
        ],
    );
    assert_eq!(denied.status.code(), Some(4), "{denied:?}");
    let first_line = denied.stderr.lines().next().unwrap_or_default();
    assert!(
        first_line.starts_with("error: ")
            && first_line.ends_with("(role read) cannot deploy; it needs role deploy or admin"),
        "{denied:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_job_ids_resolve_like_git_short_shas() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let server = web_server(root);
    let first = queue(root, &server, "web-01");
    let second = queue(root, &server, "web-02");
    let shared = first
        .chars()
        .zip(second.chars())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        shared > 0,
        "UUIDv7 ids made together share a prefix: {first} {second}"
    );

    // Unique: one character past the shared prefix.
    let unique = &first[..shared + 1];
    let shown = cli(root, &server, &["job", unique, "-o", "json"]);
    assert_eq!(shown.status.code(), Some(0), "{shown:?}");
    let shown: JobResponse = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown.job.id, first);
    // Upper case is the same id.
    let upper = cli(
        root,
        &server,
        &["job", &unique.to_uppercase(), "-o", "json"],
    );
    assert_eq!(upper.status.code(), Some(0), "{upper:?}");

    // The short id tables print: the id's last 8 characters.
    let tail = &first[first.len() - 8..];
    let by_tail = cli(root, &server, &["job", tail, "-o", "json"]);
    assert_eq!(by_tail.status.code(), Some(0), "{by_tail:?}");
    let by_tail: JobResponse = serde_json::from_str(&by_tail.stdout).unwrap();
    assert_eq!(by_tail.job.id, first);
    let table = cli(root, &server, &["jobs"]);
    assert!(
        table
            .stdout
            .lines()
            .any(|line| line.starts_with(&format!("{tail}  "))),
        "{table:?}"
    );

    // Ambiguous: both candidates named, exit 5.
    let ambiguous = cli(root, &server, &["cancel", &first[..shared]]);
    assert_eq!(ambiguous.status.code(), Some(5), "{ambiguous:?}");
    assert!(
        ambiguous.stderr.starts_with(&format!(
            "error: job id {} is ambiguous: 2 jobs start or end with it:\n",
            &first[..shared]
        )),
        "{ambiguous:?}"
    );
    assert!(ambiguous.stderr.contains(&first) && ambiguous.stderr.contains(&second));
    assert!(
        ambiguous.stderr.contains("hint: give more characters"),
        "{ambiguous:?}"
    );

    // None, by prefix or by full id: not found, exit 5.
    let none = cli(root, &server, &["job", "ffffffff"]);
    assert_eq!(none.status.code(), Some(5), "{none:?}");
    assert!(
        none.stderr.starts_with("error: job ffffffff not found\n"),
        "{none:?}"
    );
    let full = "ffffffff-ffff-7fff-bfff-ffffffffffff";
    let none = cli(root, &server, &["logs", "--job", full]);
    assert_eq!(none.status.code(), Some(5), "{none:?}");
    assert_eq!(none.stderr, format!("error: job {full} not found\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_api_errors_have_their_own_codes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let server = web_server(root);

    // Usage: no --ref; --host or --app missing; logs without a job.
    for args in [
        &["deploy", "--repo", "acme/web", "--host", "web-01"][..],
        &["deploy", "--repo", "acme/web", "--ref", "main"],
        &["logs"],
        &["jobs", "--status", "done"],
        &["tokens", "create", "--name", "x", "--role", "root"],
    ] {
        let out = cli(root, &server, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    // --url and friends belong to client commands only.
    let mut cmd = deploybot(root);
    cmd.args(["--url", "http://x", "config", "example"]);
    assert_eq!(run(cmd).status.code(), Some(2));

    // The controller refuses the request: its message, exit 6.
    let refused = cli(
        root,
        &server,
        &[
            "deploy", "--repo", "acme/web", "--ref", "main", "--host", "db-01",
        ],
    );
    assert_eq!(refused.status.code(), Some(6), "{refused:?}");
    assert!(refused.stderr.starts_with("error: "), "{refused:?}");
    assert!(
        refused.stderr.contains("web-01"),
        "names the app's hosts: {refused:?}"
    );
    assert!(
        refused.stderr.contains("(422 Unprocessable Entity)"),
        "{refused:?}"
    );

    // An app that does not exist: not found, the apps named.
    let unknown = cli(root, &server, &["deploy", "--app", "nope", "--ref", "main"]);
    assert_eq!(unknown.status.code(), Some(5), "{unknown:?}");
    assert_eq!(
        unknown.stderr,
        "error: no app named nope\nhint: the apps are: web\n"
    );

    // The usage line shows both ways to name what to deploy.
    let usage = cli(
        root,
        &server,
        &["deploy", "--host", "web-01", "--ref", "main"],
    );
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    assert!(
        usage.stderr.contains(
            "Usage: deploybot deploy --app APP --ref REF [--host HOST] [--sha SHA] [--wait]\n       \
             deploybot deploy --repo REPO --host HOST --ref REF"
        ),
        "{usage:?}"
    );
    // `logs` without a job says how to name one.
    let logs = cli(root, &server, &["logs"]);
    assert!(
        logs.stderr.contains("which job? `deploybot logs ID`"),
        "{logs:?}"
    );
}

// A filter on a name the controller does not know says so (exit 5, the
// known names as a hint) instead of printing nothing or following forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_on_unknown_apps_and_hosts_say_they_do_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let server = web_server(root);

    for args in [
        &["jobs", "--app", "nope"][..],
        &["logs", "-f", "--app", "nope"],
    ] {
        let out = cli(root, &server, args);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {out:?}");
        assert_eq!(
            out.stderr, "error: no app named \"nope\" on this controller\nhint: its apps: web\n",
            "{args:?}"
        );
    }
    let host = cli(root, &server, &["logs", "-f", "--host", "web-99"]);
    assert_eq!(host.status.code(), Some(5), "{host:?}");
    assert!(
        host.stderr
            .starts_with("error: no host named \"web-99\" on this controller\nhint: its hosts: "),
        "{host:?}"
    );
    // A known app with no jobs yet is simply empty.
    let empty = cli(root, &server, &["jobs", "--app", "web"]);
    assert_eq!(empty.status.code(), Some(0), "{empty:?}");
}

// The usual ways of pasting the wrong thing get an answer that says what
// to give instead; a token pasted with its `Bearer ` scheme just works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_urls_and_tokens_are_explained_or_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let server = web_server(root);
    let plain = server.address.clone();
    let port = plain.rsplit(':').next().unwrap();

    let https = cli(
        root,
        &server,
        &["--url", &plain.replace("http://", "https://"), "status"],
    );
    assert_eq!(https.status.code(), Some(3), "{https:?}");
    assert_eq!(
        https.stderr,
        format!(
            "error: the controller at https://127.0.0.1:{port} speaks plain HTTP, not HTTPS\n\
             hint: use http://127.0.0.1:{port}/\n"
        )
    );
    for page in ["/v1", "/docs", "/v1/"] {
        let out = cli(
            root,
            &server,
            &["--url", &format!("{plain}{page}"), "status"],
        );
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert_eq!(
            out.stderr,
            format!(
                "error: \"{plain}{page}\" is a page of the controller, not its base URL\n\
                 hint: give the controller's base URL: {plain}/\n"
            )
        );
    }
    let mut cmd = client(root, &server.address);
    cmd.env("DEPLOYBOT_TOKEN", format!("Bearer {ADMIN_TOKEN}"))
        .arg("status");
    let bearer = block_in_place(|| run(cmd));
    assert_eq!(bearer.status.code(), Some(0), "{bearer:?}");
}

// A deploy to a host nobody serves says so at once, not after a silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_to_a_host_without_an_agent_says_it_waits_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let server = web_server(root);

    let out = cli(
        root,
        &server,
        &[
            "deploy", "--repo", "acme/web", "--ref", "main", "--host", "web-02",
        ],
    );

    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.get(1).copied(),
        Some("no agent has registered for web-02; the job waits for one"),
        "{out:?}"
    );
}
