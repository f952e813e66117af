//! The controller and its agents end to end, when deploys go wrong: a
//! failing script, an agent killed with SIGKILL mid-deploy, a cancel. Real
//! processes throughout; the deploys' own processes are checked in `/proc`.

use std::time::Duration;

use deploybot_wire::{JobResponse, JobStatus};
use tokio::task::block_in_place;

use crate::common::{
    AgentProcess, DEADLINE, Following, GroupGuard, JobStream, agent_command, app_entry, client,
    controller_and_agent, group_members, is_alive, ok_json, read_pid, run, sha, wait_gone,
    write_apps, write_script,
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
async fn a_job_whose_agent_is_killed_becomes_lost_and_the_restarted_agent_kills_it_and_runs_the_next_one()
 {
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
    // …and the orphaned deploy runs on while no agent is there to stop it.
    assert!(is_alive(pgid), "the orphaned deploy script");

    // The agent comes back (same host, same state directory).
    let restarted = block_in_place(|| {
        AgentProcess::start(agent_command(root, &server.address, "web-01", "2s"))
    });
    assert_eq!(
        restarted.id, agent.id,
        "the same hostname keeps its agent id"
    );
    // Before it registered, it killed what its previous run left running.
    if let Err(err) = wait_gone(&[pgid], pgid, REAP).await {
        panic!("the restarted agent left the orphaned deploy running: {err}");
    }
    assert!(
        restarted
            .log
            .text()
            .contains("a deploy of the agent's previous run is still running; killing it"),
        "{}",
        restarted.log.text()
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
    drop(orphan);
}

// Restarted within the lease, the agent reports the job its previous run
// left (instead of it turning `lost` a minute later), after killing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_after_kill_9_kills_its_leftover_deploy_and_reports_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(
        &script,
        &format!(
            "echo $$ > \"{root}/deploy.pid\"\n\
             sleep 120 &\n\
             echo $! > \"{root}/child.pid\"\n\
             echo 'sleeping'\n\
             wait\n",
            root = root.display(),
        ),
    );
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let (server, mut agent) = block_in_place(|| controller_and_agent(root, "60s", "2s"));
    server.wait_agent_idle("web-01", &agent.id).await;
    let job = server
        .push_one("kill9-restart", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let mut stream = JobStream::open(&server, &job).await;
    stream.wait_for_line("sleeping").await;
    let pgid = read_pid(root.join("deploy.pid"));
    let child = read_pid(root.join("child.pid"));
    let _orphan = GroupGuard(pgid);

    block_in_place(|| agent.kill9());
    assert!(is_alive(child), "the deploy runs on without its agent");
    let _restarted = block_in_place(|| {
        AgentProcess::start(agent_command(root, &server.address, "web-01", "2s"))
    });
    if let Err(err) = wait_gone(&[pgid, child], pgid, REAP).await {
        panic!("the restarted agent left the deploy running: {err}");
    }
    let reported = server.get_job(&job).await;
    assert_eq!(reported.status, JobStatus::Failed, "{reported:?}");
    assert_eq!(
        reported.error.as_deref(),
        Some(
            format!(
                "the agent stopped (killed or crashed) while this deploy was running; \
                 when it started again it killed what was left of the deploy (process group {pgid})"
            )
            .as_str()
        ),
        "{reported:?}"
    );
}

// A dead agent does not look busy for a whole lease: as soon as a
// heartbeat is overdue, `hosts` says the agent is silent and a follow of
// its job says so too, before the job is declared lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_said_to_be_silent_before_its_job_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(
        &script,
        &format!(
            "echo $$ > \"{root}/deploy.pid\"\necho 'sleeping'\nsleep 120\n",
            root = root.display()
        ),
    );
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    // A 20 s lease: a heartbeat is overdue after 10 s.
    let (server, mut agent) = block_in_place(|| controller_and_agent(root, "20s", "2s"));
    server.wait_agent_idle("web-01", &agent.id).await;
    let job = server
        .push_one("silent-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let mut stream = JobStream::open(&server, &job).await;
    stream.wait_for_line("sleeping").await;
    let _orphan = GroupGuard(read_pid(root.join("deploy.pid")));
    let follow = Following::spawn({
        let mut cmd = client(root, &server.address);
        cmd.args(["logs", "-f", &job]);
        cmd
    });
    follow
        .stdout
        .wait_for(0, "sleeping", DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));

    block_in_place(|| agent.kill9());
    let said = follow
        .stdout
        .wait_for(0, "the agent of web-01 has been silent for", DEADLINE)
        .unwrap_or_else(|err| panic!("no silence said: {err}"));
    assert!(
        said.contains("the job becomes lost if it stays silent past the lease timeout"),
        "{said}"
    );
    let hosts = block_in_place(|| {
        let mut cmd = client(root, &server.address);
        cmd.arg("hosts");
        run(cmd)
    });
    let status = stream.wait_for_final().await;
    assert_eq!(status["status"], "lost", "{status}");
    // Said while the job still ran (a follow ends with the job).
    assert!(hosts.stdout.contains("web-01  silent "), "{hosts:?}");
}

#[test]
fn a_second_agent_on_the_same_state_directory_refuses_to_start_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_apps(
        root,
        &[app_entry(
            "web",
            "acme/web",
            "web-01",
            &root.join("deploy.sh"),
            None,
        )],
    );
    let (server, first) = controller_and_agent(root, LEASE, "2s");
    let second = run(agent_command(root, &server.address, "web-01", "2s"));
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert!(
        second.stderr.contains(&format!(
            "is in use by another agent (pid {}); run one agent per state directory (--state-dir)",
            first.pid
        )),
        "{second:?}"
    );
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
