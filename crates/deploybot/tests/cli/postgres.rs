//! The controller on PostgreSQL (`--database-url postgres://…`), end to end:
//! a push deploys through a real agent, and a controller killed with
//! SIGKILL restarts with every job intact. Each test gets a fresh database
//! on the server `DEPLOYBOT_TEST_POSTGRES_URL` names (default: this
//! machine's, as `.ci/postgres.sh` sets it up), created and dropped with psql.

use deploybot_wire::JobStatus;
use tokio::task::block_in_place;

use crate::common::{
    AgentProcess, Database, Server, agent_command, app_entry, controller_command, psql, sha,
    write_apps, write_script,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_push_deploys_and_a_killed_controller_keeps_its_jobs() {
    let Some(db) = Database::create("deploybot_cli") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(&script, "echo 'deployed from postgres'\n");
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let start = || {
        let mut cmd = controller_command(root, "127.0.0.1:0", "10s");
        cmd.args(["--database-url", &db.url]);
        Server::start(cmd)
    };
    let mut server = block_in_place(start);
    let agent = block_in_place(|| {
        AgentProcess::start(agent_command(root, &server.address, "web-01", "2s"))
    });
    server.wait_agent_idle("web-01", &agent.id).await;

    let job_id = server
        .push_one("pg-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let done = server.wait_status(&job_id, JobStatus::Success).await;
    let queued = server
        .push_one("pg-2", "acme/web", "refs/heads/main", &sha(2))
        .await;
    drop(agent);
    server.kill9();

    let server = block_in_place(start);
    let after = server.get_job(&job_id).await;
    assert_eq!(after.status, JobStatus::Success);
    assert_eq!(after.completed_at, done.completed_at);
    // The second push was answered 2xx before the kill: its job is there.
    let second = server.get_job(&queued).await;
    assert_eq!(second.sha.as_deref(), Some(sha(2).as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_fails_while_the_database_is_unreachable_and_recovers_after() {
    let Some(db) = Database::create("deploybot_cli") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    crate::common::write(dir.path().join("apps.yaml"), crate::common::WEB_APPS_YAML);
    let mut cmd = controller_command(dir.path(), "127.0.0.1:0", "10s");
    cmd.args(["--database-url", &db.url]);
    let server = block_in_place(|| Server::start(cmd));
    let ready = |server: &Server| {
        let url = server.url("/ready");
        async move { reqwest::get(url).await.unwrap().status() }
    };
    assert_eq!(ready(&server).await, reqwest::StatusCode::OK);

    // The database goes away: no new connections, the open ones cut.
    psql(
        db.admin_url,
        &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", db.name),
    );
    psql(
        db.admin_url,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ),
    );
    assert_eq!(
        ready(&server).await,
        reqwest::StatusCode::SERVICE_UNAVAILABLE
    );
    let jobs = server.get("/v1/jobs").await;
    assert_eq!(jobs.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);

    // It comes back; the controller recovers by itself.
    psql(
        db.admin_url,
        &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", db.name),
    );
    let deadline = std::time::Instant::now() + crate::common::DEADLINE;
    while ready(&server).await != reqwest::StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.get("/v1/jobs").await.status(),
        reqwest::StatusCode::OK
    );
}
