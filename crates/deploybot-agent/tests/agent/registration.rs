//! Registering, the identity file, and coming back after the controller
//! forgot the agent.

use std::os::unix::fs::PermissionsExt;

use deploybot_agent::AgentError;
use deploybot_wire::JobStatus;

use crate::support::{Fake, job, start_agent};

#[tokio::test]
async fn registers_and_writes_its_identity_owner_only() {
    let fake = Fake::start().await;
    let agent = start_agent(&fake, |_| {});
    let record = fake
        .wait_for("a heartbeat", |r| !r.heartbeats.is_empty())
        .await;
    assert_eq!(record.registrations.len(), 1);
    assert_eq!(record.registrations[0].hostname, "web-01");
    assert_eq!(
        record.registrations[0].capabilities,
        deploybot_wire::Capabilities::Names(vec!["sh".into()])
    );
    assert_eq!(record.heartbeats[0].agent, "agent-web-01");

    let path = agent.state_dir.join("agent.json");
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        identity,
        serde_json::json!({
            "id": "agent-web-01",
            "hostname": "web-01",
            "controller": fake.url.as_str(),
            "token": "agent-secret-1",
        })
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_404_heartbeat_makes_the_agent_register_again() {
    let fake = Fake::start().await;
    let agent = start_agent(&fake, |_| {});
    fake.wait_for("a heartbeat", |r| !r.heartbeats.is_empty())
        .await;

    fake.forget_agent();
    let record = fake
        .wait_for("a second registration", |r| r.registrations.len() == 2)
        .await;
    assert_eq!(record.known_agent.as_deref(), Some("agent-web-01"));

    // And it works as before.
    fake.push_job(job("job-after", vec!["true".into()]));
    let (report, _) = fake.report("job-after").await;
    assert_eq!(report.status, JobStatus::Success);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_registration_ends_the_agent() {
    let fake = Fake::start().await;
    let state_dir = tempfile::tempdir().unwrap();
    let config = deploybot_agent::AgentConfig::new(fake.url.clone(), "bad host", state_dir.path());
    let result = deploybot_agent::run(config, std::future::pending()).await;
    match result {
        Err(AgentError::Rejected {
            status: 422,
            message,
        }) => {
            assert_eq!(message, "invalid host name");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}
