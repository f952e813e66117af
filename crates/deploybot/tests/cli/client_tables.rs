//! The client commands as people and scripts read them: golden tables
//! (insta snapshots, ids and times replaced by placeholders) and `-o json`
//! read back as the API's wire types, against a real controller with a
//! real agent.

use std::path::Path;

use deploybot_wire::{
    Agent, AppsResponse, AuditResponse, CreatedToken, Delivery, DeliveryVerdict, ExplainResponse,
    HostsResponse, Job, JobResponse, JobStatus, TokenRole, TokensResponse,
};
use tokio::task::block_in_place;

use crate::common::{
    AgentProcess, Finished, Server, agent_command, client, controller_command, normalize_output,
    run, sha, write, write_script,
};

/// `web` deploys acme/web to web-01 and web-02; `docs` the same repository,
/// release branches only, to web-01.
fn write_two_apps(dir: &Path, script: &Path) {
    let script = script.display().to_string();
    write(
        dir.join("apps.yaml"),
        &format!(
            "apps:\n\
             \x20 - name: web\n    repo: acme/web\n    hosts: [web-01, web-02]\n    deploy:\n      command: [{script:?}]\n\
             \x20 - name: docs\n    repo: acme/web\n    hosts: [web-01]\n    branches: [\"release/*\"]\n    deploy:\n      command: [{script:?}]\n"
        ),
    );
}

/// `deploybot ARGS…` against `server`, to completion.
fn cli(dir: &Path, server: &Server, args: &[&str]) -> Finished {
    let mut cmd = client(dir, &server.address);
    cmd.args(args);
    block_in_place(|| run(cmd))
}

/// Like [`cli`], asserting exit 0; returns stdout.
fn ok(dir: &Path, server: &Server, args: &[&str]) -> String {
    let out = cli(dir, server, args);
    assert_eq!(out.status.code(), Some(0), "deploybot {args:?}: {out:?}");
    out.stdout
}

/// `-o json` read back as `T`.
fn json<T: serde::de::DeserializeOwned>(dir: &Path, server: &Server, args: &[&str]) -> T {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let stdout = ok(dir, server, &args);
    serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!(
            "deploybot {args:?}: not a {}: {err}\n{stdout}",
            std::any::type_name::<T>()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_for_people_and_json_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(
        &script,
        // stdout only: the agent reads stdout and stderr apart, so lines of
        // the two have no fixed order.
        "echo \"deploying $DEPLOYBOT_APP to $DEPLOYBOT_HOST\"\necho 'warming caches'\necho done\n",
    );
    write_two_apps(root, &script);
    let server = block_in_place(|| Server::start(controller_command(root, "127.0.0.1:0", "10s")));
    let agent = block_in_place(|| {
        AgentProcess::start(agent_command(root, &server.address, "web-01", "2s"))
    });
    server.wait_agent_idle("web-01", &agent.id).await;

    // web-01 has an agent: deployed and waited for. web-02 has none: pending.
    let deployed = ok(
        root,
        &server,
        &[
            "deploy",
            "--app",
            "web",
            "--host",
            "web-01",
            "--ref",
            "main",
            "--sha",
            &sha(1),
            "--wait",
        ],
    );
    insta::assert_snapshot!("deploy_wait", normalize_output(&deployed, root));
    let pending: JobResponse = json(
        root,
        &server,
        &[
            "deploy",
            "--repo",
            "acme/web",
            "--ref",
            "main",
            "--host",
            "web-02",
            "--sha",
            &sha(2),
        ],
    );
    assert_eq!(pending.created, Some(true));
    assert_eq!(pending.job.status, JobStatus::Pending);
    let pushed = server
        .push_repo("delivery-1", "acme/other", "refs/heads/main", &sha(3))
        .await;
    assert_eq!(pushed.verdict, DeliveryVerdict::NoMatch, "{pushed:?}");
    let token: CreatedToken = json(
        root,
        &server,
        &[
            "tokens",
            "create",
            "--name",
            "ci-web",
            "--role",
            "deploy",
            "--app",
            "web",
            "--expires-in",
            "30d",
        ],
    );
    assert!(token.token.starts_with("dbt_api_"), "{token:?}");
    assert_eq!(token.info.role, TokenRole::Deploy);
    assert_eq!(token.info.apps.as_deref(), Some(&["web".to_owned()][..]));
    server.wait_agent_idle("web-01", &agent.id).await;

    // Tables.
    for (name, args) in [
        ("jobs", &["jobs"][..]),
        ("hosts", &["hosts"]),
        ("agents", &["agents"]),
        ("apps", &["apps"]),
        (
            "explain",
            &["explain", "--repo", "acme/web", "--ref", "refs/heads/main"],
        ),
        ("deliveries", &["deliveries"]),
        ("tokens", &["tokens", "list"]),
        ("audit", &["audit"]),
    ] {
        let stdout = ok(root, &server, args);
        insta::assert_snapshot!(name, normalize_output(&stdout, root));
    }
    let shown = ok(root, &server, &["job", &pending.job.id]);
    insta::assert_snapshot!("job", normalize_output(&shown, root));

    // The same as JSON, read back as the wire types.
    let jobs: Vec<Job> = json(root, &server, &["jobs"]);
    let statuses: Vec<(&str, JobStatus)> =
        jobs.iter().map(|j| (j.host.as_str(), j.status)).collect();
    assert_eq!(
        statuses,
        [
            ("web-02", JobStatus::Pending),
            ("web-01", JobStatus::Success)
        ]
    );
    let failed: Vec<Job> = json(root, &server, &["jobs", "--status", "failed"]);
    assert!(failed.is_empty(), "{failed:?}");
    let one: JobResponse = json(root, &server, &["job", &jobs[1].id]);
    assert_eq!(one.job, jobs[1]);
    let hosts: HostsResponse = json(root, &server, &["hosts"]);
    let web02 = hosts.hosts.iter().find(|h| h.hostname == "web-02").unwrap();
    assert_eq!((web02.agent_id.as_deref(), web02.pending_jobs), (None, 1));
    let agents: Vec<Agent> = json(root, &server, &["agents"]);
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].id, agent.id);
    let apps: AppsResponse = json(root, &server, &["apps"]);
    let names: Vec<&str> = apps.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["web", "docs"]);
    let explained: ExplainResponse = json(
        root,
        &server,
        &["explain", "--repo", "acme/web", "--ref", "main"],
    );
    assert_eq!(explained.git_ref, "refs/heads/main");
    assert_eq!(explained.targets.len(), 1);
    assert_eq!(explained.skipped[0].app, "docs");
    let deliveries: Vec<Delivery> = json(root, &server, &["deliveries"]);
    assert_eq!(deliveries[0].delivery_id, "delivery-1");
    let tokens: TokensResponse = json(root, &server, &["tokens"]);
    assert_eq!(tokens.tokens, std::slice::from_ref(&token.info));
    let audit: AuditResponse = json(root, &server, &["audit", "--limit", "2"]);
    assert_eq!(audit.entries.len(), 2);
    assert_eq!(audit.entries[0].action, "create_token");

    // Revoking, as JSON too.
    let revoked: deploybot_wire::TokenInfo =
        json(root, &server, &["tokens", "revoke", &token.info.id]);
    assert!(revoked.revoked_at.is_some(), "{revoked:?}");
    // An agent is named by its hostname too.
    let lost: Vec<Job> = json(root, &server, &["agents", "revoke", "web-01"]);
    assert!(lost.is_empty(), "an idle agent held no job: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_output_cannot_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    // Colour, a window title, a bell, a carriage return and a C1 CSI.
    write_script(
        &script,
        "printf 'red \\033[31mtext\\033[0m title \\033]0;pwned\\007 cr\\rback \\302\\2332J tab\\tok\\n'\n",
    );
    write_two_apps(root, &script);
    let server = block_in_place(|| Server::start(controller_command(root, "127.0.0.1:0", "10s")));
    let agent = block_in_place(|| {
        AgentProcess::start(agent_command(root, &server.address, "web-01", "2s"))
    });
    server.wait_agent_idle("web-01", &agent.id).await;

    let waited = ok(
        root,
        &server,
        &[
            "deploy", "--repo", "acme/web", "--ref", "main", "--host", "web-01", "--app", "web",
            "--wait",
        ],
    );
    let escaped = "red \\x1b[31mtext\\x1b[0m title \\x1b]0;pwned\\x07 cr\\rback \\x9b2J tab\tok";
    assert!(waited.lines().any(|l| l == escaped), "{waited}");
    let jobs: Vec<Job> = json(root, &server, &["jobs"]);
    let stored = ok(root, &server, &["logs", &jobs[0].id]);
    assert_eq!(stored, format!("{escaped}\n"));
    for out in [&waited, &stored] {
        assert!(
            !out.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "a control character reached stdout: {out:?}"
        );
    }
    // Scripts get the text as it was.
    let raw: deploybot_wire::JobLogsResponse = json(root, &server, &["logs", "--job", &jobs[0].id]);
    assert!(raw.lines[0].text.contains("\x1b[31m"), "{raw:?}");
}

#[tokio::test]
async fn status_shows_the_controller_on_one_screen() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::write(dir.path().join("apps.yaml"), crate::common::WEB_APPS_YAML);
    let server = crate::common::Server::start(crate::common::web_server_command(dir.path()));
    server
        .push("status-1", "refs/heads/main", &crate::common::sha(1))
        .await;

    let mut cmd = crate::common::client(dir.path(), &server.address);
    cmd.arg("status");
    let shown = crate::common::run(cmd);
    let mut json = crate::common::client(dir.path(), &server.address);
    json.args(["status", "-o", "json"]);
    let json = crate::common::run(json);

    assert!(shown.status.success(), "{shown:?}");
    for line in [
        "database    sqlite, ok",
        "apps        1",
        "agents      0 online of 0",
        "jobs        2 pending, 0 running",
        "failures    none recently",
    ] {
        assert!(shown.stdout.contains(line), "{line:?} missing:\n{shown:?}");
    }
    assert!(
        shown
            .stdout
            .starts_with(&format!("controller  {}", server.address)),
        "{shown:?}"
    );
    let parsed: deploybot_wire::StatusResponse = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(parsed.jobs_pending, 2);
}
