//! The controller and its agents end to end, when deploys go well: a
//! `deploybot server` and `deploybot agent` as child processes, real deploy
//! scripts, and only HTTP (webhooks, the REST API, the SSE log stream)
//! between the test and them.

use deploybot_wire::{JobLogsResponse, JobResponse, JobStatus, LogEntry, LogStream, Timestamp};
use tokio::task::block_in_place;

use crate::common::{
    AgentProcess, JobStream, Server, agent_command, app_entry, controller_and_agent,
    controller_command, find_named, ok_json, port_of, sha, wait_for_file_sh, write, write_apps,
    write_script,
};

/// Long enough that a busy machine never loses a lease by accident; the
/// tests about lost leases set their own.
const LEASE: &str = "10s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_runs_the_script_and_its_lines_stream_live_in_order_then_success() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gate = root.join("gate");
    let script = root.join("deploy.sh");
    write_script(
        &script,
        &format!(
            "echo 'out 1'\necho 'err 1' >&2\n{wait}echo 'out 2'\necho 'err 2' >&2\necho 'out 3'\n",
            wait = wait_for_file_sh(&gate)
        ),
    );
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let (server, agent) = block_in_place(|| controller_and_agent(root, LEASE, "2s"));
    server.wait_agent_idle("web-01", &agent.id).await;

    let job_id = server
        .push_one("e2e-live-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let mut stream = JobStream::open(&server, &job_id).await;
    stream.wait_for_line("out 1").await;
    stream.wait_for_line("err 1").await;
    // Live: the first lines are here while the deploy still runs.
    let running = server.get_job(&job_id).await;
    assert_eq!(running.status, JobStatus::Running, "{running:?}");
    assert!(running.started_at.is_some(), "{running:?}");
    assert!(running.completed_at.is_none(), "{running:?}");
    assert_eq!(running.assigned_agent.as_deref(), Some(agent.id.as_str()));

    write(&gate, "");
    let status = stream.wait_for_final().await;
    assert_eq!(status["status"], "success", "{status}");
    assert_eq!(status["exit_code"], 0, "{status}");
    assert!(status["error"].is_null(), "{status}");

    // Each stream's lines in the order written; the job's line numbers
    // count 1, 2, 3… in stream order; event ids are the entries' ids and grow.
    // The last lines may follow the status event (see
    // `a_slow_sse_reader_gets_every_line_in_order_before_the_final_status`).
    stream.wait_for_line("out 3").await;
    stream.wait_for_line("err 2").await;
    assert_eq!(stream.texts(LogStream::Stdout), ["out 1", "out 2", "out 3"]);
    assert_eq!(stream.texts(LogStream::Stderr), ["err 1", "err 2"]);
    let numbers: Vec<u64> = stream.lines.iter().map(|(_, l)| l.line).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    let mut previous = 0;
    for (id, entry) in &stream.lines {
        assert_eq!(id.as_deref(), Some(entry.id.to_string().as_str()));
        assert!(entry.id > previous, "ids must grow: {:?}", stream.lines);
        previous = entry.id;
        assert_eq!((entry.host.as_str(), entry.app.as_str()), ("web-01", "web"));
    }

    let job = server.get_job(&job_id).await;
    assert_eq!(job.status, JobStatus::Success, "{job:?}");
    assert_eq!(job.exit_code, Some(0), "{job:?}");
    assert_eq!(job.error, None, "{job:?}");
    let (Some(started), Some(completed)) = (job.started_at, job.completed_at) else {
        panic!("started_at and completed_at must be set: {job:?}");
    };
    assert!(job.created_at <= started && started <= completed, "{job:?}");
    assert_eq!(job.assigned_agent.as_deref(), Some(agent.id.as_str()));
    assert_eq!(job.sha.as_deref(), Some(sha(1).as_str()));

    // The stored log is what was streamed (`at` to the millisecond, as
    // stored: see `live_lines_are_exactly_the_stored_lines`).
    let stored = ok_json!(
        server.get(&format!("/v1/jobs/{job_id}/logs")).await,
        JobLogsResponse
    );
    let streamed: Vec<_> = stream
        .lines
        .iter()
        .map(|(_, l)| LogEntry {
            at: to_millisecond(l.at),
            ..l.clone()
        })
        .collect();
    assert_eq!(stored.lines, streamed);
}

fn to_millisecond(at: Timestamp) -> Timestamp {
    at.replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
        .expect("a valid nanosecond")
}

/// An `event: log` sent live must be the entry as stored, so that a client
/// that reads it live, pages it (`GET /v1/jobs/{id}/logs`) or resumes the
/// stream (`Last-Event-ID`) sees the same line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_lines_are_exactly_the_stored_lines() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gate = root.join("gate");
    let script = root.join("deploy.sh");
    write_script(
        &script,
        &format!(
            "{wait}echo 'one'
echo 'two' >&2
",
            wait = wait_for_file_sh(&gate)
        ),
    );
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let (server, agent) = block_in_place(|| controller_and_agent(root, LEASE, "2s"));
    server.wait_agent_idle("web-01", &agent.id).await;

    let job_id = server
        .push_one("e2e-exact-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let mut stream = JobStream::open(&server, &job_id).await;
    // The deploy prints only once the stream is open: its lines come live.
    write(&gate, "");
    let status = stream.wait_for_final().await;
    assert_eq!(status["status"], "success", "{status}");
    stream.wait_for_line("two").await;

    let stored = ok_json!(
        server.get(&format!("/v1/jobs/{job_id}/logs")).await,
        JobLogsResponse
    );
    let streamed: Vec<_> = stream.lines.iter().map(|(_, l)| l.clone()).collect();
    assert_eq!(stored.lines, streamed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_receives_the_job_only_through_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let workdir = root.join("work");
    std::fs::create_dir(&workdir).unwrap();
    let script = root.join("deploy.sh");
    write_script(
        &script,
        "echo \"ref=$DEPLOYBOT_REF name=$DEPLOYBOT_REF_NAME\"\n\
         echo \"sha=${DEPLOYBOT_SHA-(unset)}\"\n\
         echo \"job=$DEPLOYBOT_JOB_ID app=$DEPLOYBOT_APP repo=$DEPLOYBOT_REPO host=$DEPLOYBOT_HOST attempt=$DEPLOYBOT_ATTEMPT\"\n\
         echo \"args=$#\"\n\
         echo \"pwd=$(pwd)\"\n",
    );
    // No `branches`: every branch deploys, whatever its name.
    write_apps(
        root,
        &[app_entry(
            "web",
            "acme/web",
            "web-01",
            &script,
            Some(&workdir),
        )],
    );
    let (server, agent) = block_in_place(|| controller_and_agent(root, LEASE, "2s"));
    server.wait_agent_idle("web-01", &agent.id).await;

    // Valid git refs (`git check-ref-format` allows ; $ { } ` ( ) | & >)
    // that a shell would run commands from.
    let refs = [
        "refs/heads/main;touch${IFS}pwned",
        "refs/heads/x`touch${IFS}pwned`$(touch${IFS}pwned)|touch${IFS}pwned&&touch${IFS}pwned>pwned",
    ];
    for (n, git_ref) in refs.into_iter().enumerate() {
        // One at a time: a newer push would supersede a pending one.
        let job_id = server
            .push_one(&format!("e2e-env-{n}"), "acme/web", git_ref, &sha(n))
            .await;
        let job = server.get_job(&job_id).await;
        assert_eq!(job.git_ref, git_ref, "the ref is stored verbatim");

        let mut stream = JobStream::open(&server, &job_id).await;
        let status = stream.wait_for_final().await;
        assert_eq!(status["status"], "success", "{status}");
        let line = stream.wait_for_line("ref=").await;
        let name = git_ref.strip_prefix("refs/heads/").unwrap();
        assert_eq!(line.text, format!("ref={git_ref} name={name}"));
        assert_eq!(
            stream.wait_for_line("sha=").await.text,
            format!("sha={}", sha(n))
        );
        assert_eq!(
            stream.wait_for_line("job=").await.text,
            format!("job={job_id} app=web repo=acme/web host=web-01 attempt=1")
        );
        assert_eq!(stream.wait_for_line("args=").await.text, "args=0");
        assert_eq!(
            stream.wait_for_line("pwd=").await.text,
            format!("pwd={}", workdir.canonicalize().unwrap().display())
        );
    }

    // A manual deploy of a bare branch name without a sha: the ref is
    // stored as a push's, and the command sees no sha at all (never an
    // empty one that looks like a value).
    let response = server
        .post(
            "/v1/jobs",
            &serde_json::json!({"repo": "acme/web", "ref": "main", "host": "web-01"}),
        )
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let manual = response.json::<JobResponse>().await.unwrap().job;
    assert_eq!(manual.git_ref, "refs/heads/main");
    let mut stream = JobStream::open(&server, &manual.id).await;
    assert_eq!(stream.wait_for_final().await["status"], "success");
    assert_eq!(
        stream.wait_for_line("ref=").await.text,
        "ref=refs/heads/main name=main"
    );
    assert_eq!(stream.wait_for_line("sha=").await.text, "sha=(unset)");

    let pwned = find_named(root, "pwned");
    assert!(pwned.is_empty(), "a ref was run as a command: {pwned:?}");
    assert_eq!(std::fs::read_dir(&workdir).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_long_polling_across_a_controller_restart_takes_the_next_job() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(&script, "echo \"deployed $DEPLOYBOT_SHA\"\n");
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let (mut server, mut agent) = block_in_place(|| controller_and_agent(root, LEASE, "2s"));
    // Idle and heartbeating: its long-poll is held by the controller.
    server.wait_agent_idle("web-01", &agent.id).await;

    let address = server.address.clone();
    server.signal("TERM");
    let exit = block_in_place(|| server.wait_exit());
    assert!(exit.success(), "the controller stops cleanly: {exit}");

    let listen = format!("127.0.0.1:{}", port_of(&address));
    let server = block_in_place(|| Server::start(controller_command(root, &listen, LEASE)));
    assert_eq!(server.address, address);

    let job_id = server
        .push_one("e2e-restart-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let mut stream = JobStream::open(&server, &job_id).await;
    let status = stream.wait_for_final().await;
    assert_eq!(status["status"], "success", "{status}");
    assert_eq!(
        stream.wait_for_line("deployed").await.text,
        format!("deployed {}", sha(1))
    );
    let job = server.get_job(&job_id).await;
    assert_eq!(job.status, JobStatus::Success, "{job:?}");
    assert_eq!(job.assigned_agent.as_deref(), Some(agent.id.as_str()));
    assert!(
        agent.is_running(),
        "the same agent process, never restarted"
    );
    assert_eq!(
        agent.log.text().matches("agent registered").count(),
        1,
        "the new controller knew the agent: no second registration\n{}",
        agent.log.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_behind_a_running_one_is_handed_out_as_soon_as_it_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gate = root.join("gate");
    let web = root.join("web.sh");
    write_script(
        &web,
        &format!(
            "echo 'web started'\n{wait}echo 'web done'\n",
            wait = wait_for_file_sh(&gate)
        ),
    );
    let api = root.join("api.sh");
    write_script(&api, "echo 'api deployed'\n");
    write_apps(
        root,
        &[
            app_entry("web", "acme/web", "web-01", &web, None),
            app_entry("api", "acme/api", "web-01", &api, None),
        ],
    );
    // The controller holds a heartbeat for at most half the lease timeout:
    // 60 s lets the agent's 20 s long-poll be held for all of its 20 s.
    let (server, agent) = block_in_place(|| {
        let server = Server::start(controller_command(root, "127.0.0.1:0", "60s"));
        let agent = AgentProcess::start(agent_command(root, &server.address, "web-01", "20s"));
        (server, agent)
    });
    server.wait_agent_idle("web-01", &agent.id).await;

    let first = server
        .push_one("e2e-queue-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let mut first_stream = JobStream::open(&server, &first).await;
    first_stream.wait_for_line("web started").await;
    let second = server
        .push_one("e2e-queue-2", "acme/api", "refs/heads/main", &sha(2))
        .await;
    let queued = server.get_job(&second).await;
    assert_eq!(
        queued.status,
        JobStatus::Pending,
        "web-01 is busy: {queued:?}"
    );

    write(&gate, "");
    let status = first_stream.wait_for_final().await;
    assert_eq!(status["status"], "success", "{status}");
    let first = server.get_job(&first).await;
    let second = server.wait_status(&second, JobStatus::Success).await;
    let completed = first.completed_at.expect("completed_at");
    let started = second.started_at.expect("started_at");
    let gap = started - completed;
    assert!(
        gap.whole_milliseconds() >= 0,
        "one job at a time on a host: the second started {gap} before the first finished"
    );
    assert!(
        gap.whole_milliseconds() < 2000,
        "the second job was handed out {gap} after the first finished: the held \
         long-poll was not woken by the report"
    );
    assert_eq!(second.assigned_agent.as_deref(), Some(agent.id.as_str()));
}

/// A client that stops reading while a deploy prints a lot (the stream backs
/// up into the controller) still gets every line, in order, and only then
/// the final status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sse_reader_gets_every_line_in_order_before_the_final_status() {
    /// About 10 MB of output: more than the socket buffers and the
    /// controller's per-client queue hold, so the stream really backs up.
    const LINES: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gate = root.join("gate");
    let script = root.join("deploy.sh");
    write_script(
        &script,
        &format!(
            "echo 'ready'\n{wait}\
             awk 'BEGIN {{ pad = sprintf(\"%1000s\", \"\"); for (i = 1; i <= {LINES}; i++) print i pad }}'\n\
             echo 'done'\n",
            wait = wait_for_file_sh(&gate)
        ),
    );
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let (server, agent) = block_in_place(|| controller_and_agent(root, LEASE, "2s"));
    server.wait_agent_idle("web-01", &agent.id).await;

    let job_id = server
        .push_one("e2e-slow-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let mut stream = JobStream::open(&server, &job_id).await;
    // Following live from here on.
    stream.wait_for_line("ready").await;
    write(&gate, "");
    // Not reading while the deploy prints, uploads and is reported.
    server.wait_status(&job_id, JobStatus::Success).await;

    let status = stream.wait_for_final().await;
    assert_eq!(status["status"], "success", "{status}");
    let total = LINES + 2;
    assert_eq!(
        stream.lines_at_final,
        Some(total),
        "the final status came before the last lines"
    );
    let numbers: Vec<u64> = stream.lines.iter().map(|(_, l)| l.line).collect();
    assert!(
        numbers.iter().copied().eq(1..=total as u64),
        "lines missing or out of order"
    );
    for (n, (_, line)) in stream.lines[1..=LINES].iter().enumerate() {
        assert!(
            line.text.starts_with(&format!("{} ", n + 1)),
            "line {}: {:.20}",
            n + 2,
            line.text
        );
    }
}
