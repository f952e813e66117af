//! `deploybot deploy --wait`, `retry --wait` and `logs -f` against a real
//! controller and agent: exit codes by how the jobs end, and a follow that
//! survives a controller restart without losing or repeating a line.

use std::path::Path;

use deploybot_wire::{JobResponse, JobStatus};
use tokio::task::block_in_place;

use crate::common::{
    AgentProcess, DEADLINE, Finished, Following, Server, agent_command, app_entry, client,
    controller_command, port_of, run, send_signal, wait_for_file_sh, write, write_apps,
    write_script,
};

const LEASE: &str = "10s";

fn cli(dir: &Path, server: &Server, args: &[&str]) -> Finished {
    let mut cmd = client(dir, &server.address);
    cmd.args(args);
    block_in_place(|| run(cmd))
}

/// A controller with app `web` (acme/web → web-01) running `script`, and
/// web-01's agent, idle.
async fn controller_with_agent(root: &Path, script_body: &str) -> (Server, AgentProcess) {
    let script = root.join("deploy.sh");
    write_script(&script, script_body);
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let server = block_in_place(|| Server::start(controller_command(root, "127.0.0.1:0", LEASE)));
    let agent = block_in_place(|| {
        AgentProcess::start(agent_command(root, &server.address, "web-01", "2s"))
    });
    server.wait_agent_idle("web-01", &agent.id).await;
    (server, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deploy_exits_1_and_its_retry_too() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (server, _agent) = controller_with_agent(
        root,
        "echo 'migrating'\necho 'fatal: no database' >&2\nexit 3\n",
    )
    .await;

    let deploy = [
        "deploy", "--repo", "acme/web", "--ref", "main", "--host", "web-01",
    ];
    let out = cli(root, &server, &[&deploy[..], &["--wait"]].concat());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    // Each stream in order; stdout and stderr are read apart, so either
    // may come first.
    let mut output = lines[1..3].to_vec();
    output.sort_unstable();
    assert_eq!(output, ["fatal: no database", "migrating"], "{out:?}");
    assert!(
        lines[3].starts_with("web-01: failed after ") && lines[3].contains("(exit 3)"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("error: the deploy to web-01 failed\n"),
        "{out:?}"
    );
    // The hint names the job, ready to paste.
    let failed: Vec<deploybot_wire::Job> =
        serde_json::from_str(&cli(root, &server, &["jobs", "-o", "json"]).stdout).unwrap();
    assert!(
        out.stderr.contains(&format!(
            "hint: `deploybot logs {id}` shows its output; `deploybot retry {id}` runs it again",
            id = failed[0].id
        )),
        "{out:?}"
    );

    // As JSON: the final job, and still exit 1.
    let jobs: Vec<deploybot_wire::Job> =
        serde_json::from_str(&cli(root, &server, &["jobs", "-o", "json"]).stdout).unwrap();
    let out = cli(
        root,
        &server,
        &["retry", &jobs[0].id[..13], "--wait", "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let retried: JobResponse = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(retried.job.status, JobStatus::Failed);
    assert_eq!(retried.job.attempt, 2);
    assert_eq!(retried.job.retry_of.as_deref(), Some(jobs[0].id.as_str()));
    assert_eq!(retried.job.exit_code, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_cancelled_while_waiting_for_an_agent_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_apps(
        root,
        &[app_entry(
            "web",
            "acme/web",
            "web-01",
            Path::new("/bin/true"),
            None,
        )],
    );
    // No agent: the job stays pending until cancelled.
    let server = block_in_place(|| Server::start(controller_command(root, "127.0.0.1:0", LEASE)));
    let mut cmd = client(root, &server.address);
    cmd.args([
        "deploy", "--repo", "acme/web", "--ref", "main", "--host", "web-01", "--wait",
    ]);
    let mut waiting = Following::spawn(cmd);
    let queued = waiting
        .stdout
        .wait_for(0, "queued job ", DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));
    let id = queued.split_whitespace().nth(2).unwrap().to_owned();

    // The same deploy again is that job, not a new one.
    let again = cli(
        root,
        &server,
        &[
            "deploy", "--repo", "acme/web", "--ref", "main", "--host", "web-01", "-o", "json",
        ],
    );
    let again: JobResponse = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        (again.created, again.job.id.as_str()),
        (Some(false), id.as_str())
    );

    let cancelled = cli(root, &server, &["cancel", &id[..13]]);
    assert_eq!(cancelled.status.code(), Some(0), "{cancelled:?}");
    assert_eq!(cancelled.stdout, format!("cancelled job {id} on web-01\n"));
    let status = block_in_place(|| waiting.wait());
    assert_eq!(status.code(), Some(1), "{}", waiting.stderr.text());
    assert!(
        waiting.stdout.text().ends_with(&format!(
            "web-01: cancelled, job {id}: cancelled before it ran"
        )),
        "{}",
        waiting.stdout.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_waiting_exits_130_and_says_how_to_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_apps(
        root,
        &[app_entry(
            "web",
            "acme/web",
            "web-01",
            Path::new("/bin/true"),
            None,
        )],
    );
    let server = block_in_place(|| Server::start(controller_command(root, "127.0.0.1:0", LEASE)));
    let mut cmd = client(root, &server.address);
    cmd.args([
        "deploy", "--repo", "acme/web", "--ref", "main", "--host", "web-01", "--wait",
    ]);
    let mut waiting = Following::spawn(cmd);
    let queued = waiting
        .stdout
        .wait_for(0, "queued job ", DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));
    let id = queued.split_whitespace().nth(2).unwrap().to_owned();

    send_signal(waiting.pid, "INT");
    let status = block_in_place(|| waiting.wait());
    assert_eq!(status.code(), Some(130), "{}", waiting.stderr.text());
    assert_eq!(
        waiting.stderr.text(),
        format!("interrupted\nhint: the job goes on; `deploybot cancel {id}` stops it")
    );
    // It does go on.
    let job = server.get_job(&id).await;
    assert_eq!(job.status, JobStatus::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_survives_a_controller_restart_without_losing_or_repeating_lines() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gate = root.join("gate");
    let (mut server, _agent) = controller_with_agent(
        root,
        &format!(
            "echo 'out 1'\necho 'out 2'\n{wait}echo 'out 3'\necho 'out 4'\n",
            wait = wait_for_file_sh(&gate)
        ),
    )
    .await;
    let created = cli(
        root,
        &server,
        &[
            "deploy", "--repo", "acme/web", "--ref", "main", "--host", "web-01", "-o", "json",
        ],
    );
    let job: JobResponse = serde_json::from_str(&created.stdout).unwrap();
    let mut cmd = client(root, &server.address);
    cmd.args(["logs", "-f", "--job", &job.job.id]);
    let mut following = Following::spawn(cmd);
    following
        .stdout
        .wait_for(0, "out 2", DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));

    // The controller dies mid-deploy and comes back on the same port; the
    // deploy goes on meanwhile.
    let address = server.address.clone();
    block_in_place(|| server.kill9());
    following
        .stderr
        .wait_for(0, "log stream interrupted", DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));
    let listen = format!("127.0.0.1:{}", port_of(&address));
    let _server = block_in_place(|| Server::start(controller_command(root, &listen, LEASE)));
    write(&gate, "");

    let status = block_in_place(|| following.wait());
    assert_eq!(status.code(), Some(0), "{}", following.stderr.text());
    let stdout = following.stdout.text();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..4], ["out 1", "out 2", "out 3", "out 4"], "{stdout}");
    assert!(lines[4].starts_with("web-01: success after "), "{stdout}");
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(
        following.stderr.text().contains("log stream reconnected"),
        "{}",
        following.stderr.text()
    );
}
