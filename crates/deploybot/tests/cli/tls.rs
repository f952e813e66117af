//! HTTPS: `deploybot server --tls-cert --tls-key`, and an agent that trusts
//! the controller's private CA with `--ca-cert`.

use std::path::{Path, PathBuf};

use deploybot_wire::JobStatus;
use reqwest::StatusCode;
use tokio::task::block_in_place;

use crate::common::{
    ADMIN_TOKEN, AgentProcess, Api, Server, agent_command, app_entry, controller_command, sha,
    write_apps, write_script,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cli/fixtures/tls")
        .join(name)
}

/// A client that trusts the test CA and sends the admin token.
fn trusting_client() -> reqwest::Client {
    let ca = std::fs::read(fixture("ca.pem")).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_serves_https_and_an_agent_trusting_its_ca_deploys_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(&script, "echo 'over TLS'\n");
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let mut cmd = controller_command(root, "127.0.0.1:0", "10s");
    cmd.arg("--tls-cert")
        .arg(fixture("server.pem"))
        .arg("--tls-key")
        .arg(fixture("server.key"));
    let server = block_in_place(|| Server::start(cmd));
    assert!(server.address.starts_with("https://"), "{}", server.address);
    let api = Api {
        address: server.address.clone(),
        client: trusting_client(),
    };

    // A client that does not trust the CA is refused; plain HTTP gets nothing.
    let untrusting = reqwest::Client::new().get(api.url("/health")).send().await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    let plain = api.address.replace("https://", "http://");
    let plain = reqwest::Client::new()
        .get(format!("{plain}/health"))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true));
    assert_eq!(api.get("/health").await.status(), StatusCode::OK);

    let mut agent_cmd = agent_command(root, &api.address, "web-01", "2s");
    agent_cmd.arg("--ca-cert").arg(fixture("ca.pem"));
    let agent = block_in_place(|| AgentProcess::start(agent_cmd));
    api.wait_agent_idle("web-01", &agent.id).await;

    let job_id = api
        .push_one("tls-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    let job = api.wait_status(&job_id, JobStatus::Success).await;
    assert_eq!(job.assigned_agent.as_deref(), Some(agent.id.as_str()));
}

#[tokio::test]
async fn a_certificate_without_its_key_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    write_apps(dir.path(), &[]);
    let mut cmd = controller_command(dir.path(), "127.0.0.1:0", "10s");
    cmd.arg("--tls-cert").arg(fixture("server.pem"));

    let finished = crate::common::run(cmd);

    assert!(!finished.status.success());
    assert!(finished.stderr.contains("--tls-key"), "{}", finished.stderr);
}
