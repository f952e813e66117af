//! The controller and its agents end to end, when deploys go wrong: a
//! failing script, an agent killed with SIGKILL mid-deploy, a cancel. Real
//! processes throughout; the deploys' own processes are checked in `/proc`.

use std::time::Duration;

use deploybot_wire::{JobResponse, JobStatus};
use tokio::task::block_in_place;

use crate::common::{
    AgentProcess, GroupGuard, JobStream, agent_command, app_entry, controller_and_agent,
    group_members, is_alive, ok_json, read_pid, sha, wait_gone, write_apps, write_script,
};

/// Long enough that a busy machine never loses a lease by accident.
const LEASE: &str = "10s";

/// How long a killed deploy's processes may take to disappear (be reaped).
const REAP: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_fails_the_job_with_its_exit_code_and_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(
        &script,
        "echo 'step 1: fetching'\n\
         echo 'step 2: migrating'\n\
         echo 'fatal: migration 42 failed' >&2\n\
         exit 3\n",
    );
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let (server, agent) = block_in_place(|| controller_and_agent(root, LEASE, "2s"));
    server.wait_agent_idle("web-01", &agent.id).await;

    let job_id = server
        .push_one("e2e-fail-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let mut stream = JobStream::open(&server, &job_id).await;
    let status = stream.wait_for_final().await;
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(status["exit_code"], 3, "{status}");
    let tail = [
        "step 1: fetching",
        "step 2: migrating",
        "fatal: migration 42 failed",
    ];
    let error = status["error"].as_str().unwrap_or_default();
    for line in tail {
        assert!(
            error.contains(line),
            "{line:?} missing from the error: {status}"
        );
        stream.wait_for_line(line).await;
    }

    let job = server.get_job(&job_id).await;
    assert_eq!(job.status, JobStatus::Failed, "{job:?}");
    assert_eq!(job.exit_code, Some(3), "{job:?}");
    assert_eq!(job.error.as_deref(), Some(error), "{job:?}");
    assert!(job.completed_at.is_some(), "{job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_agent_is_killed_becomes_lost_and_a_restarted_agent_runs_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    // The first job hangs (until the test kills it); any other succeeds.
    write_script(
        &script,
        &format!(
            "echo $$ > \"{root}/$DEPLOYBOT_SHA.pid\"\n\
             if [ \"$DEPLOYBOT_SHA\" = {first} ]; then echo 'first: sleeping'; sleep 60; fi\n\
             echo \"deployed $DEPLOYBOT_SHA\"\n",
            root = root.display(),
            first = sha(1),
        ),
    );
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    // A lease timeout of 2 s, so the kill is noticed quickly.
    let (server, mut agent) = block_in_place(|| controller_and_agent(root, "2s", "2s"));
    server.wait_agent_idle("web-01", &agent.id).await;

    let first = server
        .push_one("e2e-kill-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let mut first_stream = JobStream::open(&server, &first).await;
    first_stream.wait_for_line("first: sleeping").await;
    // The deploy leads its own process group: the SIGKILL of the agent
    // orphans it. Killed by the test, at the end or on failure.
    let pgid = read_pid(root.join(format!("{}.pid", sha(1))));
    let orphan = GroupGuard(pgid);
    // Queued behind the running job (a running job is never superseded).
    let second = server
        .push_one("e2e-kill-2", "acme/web", "refs/heads/main", &sha(2))
        .await;
    assert_eq!(server.get_job(&second).await.status, JobStatus::Pending);

    block_in_place(|| agent.kill9());
    let status = first_stream.wait_for_final().await;
    assert_eq!(status["status"], "lost", "{status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("agent lost"), "{status}");
    let lost = server.get_job(&first).await;
    assert_eq!(lost.status, JobStatus::Lost, "{lost:?}");
    assert!(lost.completed_at.is_some(), "{lost:?}");
    assert!(
        lost.error
            .as_deref()
            .is_some_and(|e| e.contains("agent lost")),
        "{lost:?}"
    );
    // Nobody runs the queued job meanwhile…
    assert_eq!(server.get_job(&second).await.status, JobStatus::Pending);
    // …and the orphaned deploy runs on: nothing was left to stop it.
    assert!(is_alive(pgid), "the orphaned deploy script");

    // The agent comes back (same host, same state directory).
    let restarted = block_in_place(|| {
        AgentProcess::start(agent_command(root, &server.address, "web-01", "2s"))
    });
    assert_eq!(
        restarted.id, agent.id,
        "the same hostname keeps its agent id"
    );
    let mut second_stream = JobStream::open(&server, &second).await;
    let status = second_stream.wait_for_final().await;
    assert_eq!(status["status"], "success", "{status}");
    assert_eq!(
        second_stream.wait_for_line("deployed").await.text,
        format!("deployed {}", sha(2))
    );
    let done = server.get_job(&second).await;
    assert_eq!(done.status, JobStatus::Success, "{done:?}");
    assert_eq!(done.assigned_agent.as_deref(), Some(restarted.id.as_str()));
    // The lost job stays lost.
    assert_eq!(server.get_job(&first).await.status, JobStatus::Lost);

    orphan.kill();
    if let Err(err) = wait_gone(&[pgid], pgid, REAP).await {
        panic!("the orphaned deploy survived SIGKILL of its group: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_job_cancels_it_and_kills_the_whole_process_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(
        &script,
        &format!(
            "sleep 300 &\n\
             echo $! > \"{root}/grandchild.pid\"\n\
             echo $$ > \"{root}/script.pid\"\n\
             echo 'deploying'\n\
             sleep 300\n\
             echo 'never printed'\n",
            root = root.display(),
        ),
    );
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let (server, agent) = block_in_place(|| controller_and_agent(root, LEASE, "2s"));
    server.wait_agent_idle("web-01", &agent.id).await;

    let job_id = server
        .push_one("e2e-cancel-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let mut stream = JobStream::open(&server, &job_id).await;
    stream.wait_for_line("deploying").await;
    let script_pid = read_pid(root.join("script.pid"));
    let grandchild = read_pid(root.join("grandchild.pid"));
    // Should the test fail, nothing is left behind.
    let _group = GroupGuard(script_pid);
    assert!(is_alive(script_pid) && is_alive(grandchild));
    let members = group_members(script_pid);
    assert!(
        members.contains(&script_pid) && members.contains(&grandchild) && members.len() >= 3,
        "the script, its background and its foreground sleep: {members:?}"
    );

    let answer = ok_json!(
        server
            .post(&format!("/v1/jobs/{job_id}/cancel"), &serde_json::json!({}))
            .await,
        JobResponse
    );
    assert_eq!(answer.job.status, JobStatus::Running, "{answer:?}");
    assert!(answer.job.cancel_requested, "{answer:?}");

    let status = stream.wait_for_final().await;
    assert_eq!(status["status"], "cancelled", "{status}");
    let job = server.get_job(&job_id).await;
    assert_eq!(job.status, JobStatus::Cancelled, "{job:?}");
    assert!(job.completed_at.is_some(), "{job:?}");
    if let Err(err) = wait_gone(&[script_pid, grandchild], script_pid, REAP).await {
        panic!("the cancelled deploy left processes behind: {err}");
    }
    assert!(
        !stream.lines.iter().any(|(_, l)| l.text == "never printed"),
        "{:?}",
        stream.lines
    );
}
