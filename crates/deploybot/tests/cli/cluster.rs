//! Two controller processes on one PostgreSQL database, as behind a load
//! balancer: an agent long-polling one of them gets, within moments, a job
//! pushed through the other. Skipped with `DEPLOYBOT_TEST_POSTGRES=skip`.

use std::time::{Duration, Instant};

use deploybot_wire::JobStatus;
use tokio::task::block_in_place;

use crate::common::{
    AgentProcess, Database, Server, agent_command, app_entry, controller_command, sha, write_apps,
    write_script,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_one_controller_deploys_at_once_on_an_agent_of_another() {
    let Some(db) = Database::create("deploybot_cli") else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let script = dirs[0].path().join("deploy.sh");
    write_script(&script, "echo 'deployed through the other controller'\n");
    for dir in &dirs {
        write_apps(
            dir.path(),
            &[app_entry("web", "acme/web", "web-01", &script, None)],
        );
    }
    let start = |dir: &std::path::Path| {
        let mut cmd = controller_command(dir, "127.0.0.1:0", "60s");
        cmd.args(["--database-url", &db.url]);
        Server::start(cmd)
    };
    let a = block_in_place(|| start(dirs[0].path()));
    let b = block_in_place(|| start(dirs[1].path()));
    // The agent long-polls A for 25 s at a time.
    let agent = block_in_place(|| {
        AgentProcess::start(agent_command(dirs[0].path(), &a.address, "web-01", "25s"))
    });
    a.wait_agent_idle("web-01", &agent.id).await;

    let pushed = Instant::now();
    let job_id = b
        .push_one("cluster-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let done = b.wait_status(&job_id, JobStatus::Success).await;
    let took = pushed.elapsed();
    assert_eq!(done.assigned_agent.as_deref(), Some(agent.id.as_str()));
    // Woken, not found at the end of a 25 s long-poll; generous for CI.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // Its output, uploaded through A, is read through B.
    let logs = b.get(&format!("/v1/jobs/{job_id}/logs")).await;
    let text = logs.text().await.unwrap();
    assert!(
        text.contains("deployed through the other controller"),
        "{text}"
    );
    drop(agent);
    drop((a, b));
}
