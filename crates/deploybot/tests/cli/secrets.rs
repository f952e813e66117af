//! Secrets of a deploy: apps.yaml names them (`deploy.secret_env`), the
//! controller reads their values from its own environment, and they reach
//! the deploy command with its hand-out only: never stored with the job,
//! never in an API answer, hidden in the output by value.

use tokio::task::block_in_place;

use crate::common::{
    AgentProcess, Server, agent_command, controller_command, sha, write, write_script,
};

const PASSWORD: &str = "s3cret-pw-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_variables_reach_the_deploy_only_and_are_hidden_in_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(
        &script,
        "echo \"pw=$DB_PASSWORD greeting=$GREETING\"\necho \"said: $DB_PASSWORD\" >&2\n",
    );
    write(
        root.join("apps.yaml"),
        &format!(
            "apps:\n  - name: web\n    repo: acme/web\n    hosts: [web-01]\n    deploy:\n      command: [{script:?}]\n      env: {{GREETING: hello}}\n      secret_env: {{DB_PASSWORD: DEPLOY_WEB_DB_PASSWORD}}\n",
            script = script.display().to_string()
        ),
    );
    let mut cmd = controller_command(root, "127.0.0.1:0", "10s");
    cmd.env("DEPLOY_WEB_DB_PASSWORD", PASSWORD);
    let server = block_in_place(|| Server::start(cmd));
    let agent = block_in_place(|| {
        AgentProcess::start(agent_command(root, &server.address, "web-01", "2s"))
    });
    server.wait_agent_idle("web-01", &agent.id).await;

    let job_id = server
        .push_one("secrets-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let job = server
        .wait_job(&job_id, "finished", |job| job.status.is_final())
        .await;
    assert_eq!(job.status, deploybot_wire::JobStatus::Success, "{job:?}");

    let logs = server
        .get(&format!("/v1/jobs/{job_id}/logs"))
        .await
        .text()
        .await
        .unwrap();
    assert!(logs.contains("pw=*** greeting=hello"), "{logs}");
    assert!(logs.contains("said: ***"), "{logs}");
    // No answer holds the value; the app lists the name only.
    for path in [
        format!("/v1/jobs/{job_id}"),
        "/v1/jobs".to_owned(),
        "/v1/status".to_owned(),
        "/v1/hosts".to_owned(),
        "/v1/apps".to_owned(),
        format!("/v1/jobs/{job_id}/logs"),
    ] {
        let text = server.get(&path).await.text().await.unwrap();
        assert!(!text.contains(PASSWORD), "{path}: {text}");
    }
    let apps = server.get("/v1/apps").await.text().await.unwrap();
    assert!(apps.contains(r#""secret_env":["DB_PASSWORD"]"#), "{apps}");
    // Nor does the database, in any of its files.
    drop(agent);
    drop(server);
    for entry in std::fs::read_dir(root.join("data")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let found = bytes
            .windows(PASSWORD.len())
            .any(|window| window == PASSWORD.as_bytes());
        assert!(!found, "the secret is in {}", path.display());
    }
}
