//! The controller's own log: JSON lines when stderr is not a terminal,
//! each parseable, carrying the ids of what it is about as fields, and the
//! id of the HTTP request it was written for; and that id in the answer.

use deploybot_wire::{DeliveryVerdict, JobStatus, WebhookResponse};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::block_in_place;

use crate::common::{
    ADMIN_TOKEN, AgentProcess, DEADLINE, SECRET, Server, agent_command, app_entry,
    controller_command, ok_json, push_body, sha, write_apps, write_script,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_a_terminal_the_log_is_json_lines_carrying_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(&script, "echo deployed\n");
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let mut cmd = controller_command(root, "127.0.0.1:0", "10s");
    // `auto`, the default: stderr is a pipe here, so JSON.
    cmd.env_remove("DEPLOYBOT_LOG_FORMAT");
    let (server, agent) = block_in_place(|| {
        let server = Server::start(cmd);
        let agent = AgentProcess::start(agent_command(root, &server.address, "web-01", "2s"));
        (server, agent)
    });
    server.wait_agent_idle("web-01", &agent.id).await;

    // A client's own request id is kept and answered.
    let response = server
        .push_request(
            Some(SECRET),
            "log-ids-1",
            push_body("acme/web", "refs/heads/main", &sha(1)),
        )
        .header("X-Request-Id", "push-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "push-1");
    let answer = ok_json!(response, WebhookResponse);
    assert_eq!(answer.verdict, DeliveryVerdict::Queued, "{answer:?}");
    let job_id = answer.jobs_created[0].clone();
    server.wait_status(&job_id, JobStatus::Success).await;

    // Without one (or with one that is not printable ASCII of at most 128
    // characters), the controller makes one.
    let made = request_id(server.get("/health").await);
    assert_eq!(made.len(), 36, "{made}");
    assert_ne!(made, request_id(server.get("/health").await));
    for bad in ["x".repeat(129), "caf\u{e9}".to_owned()] {
        let response = server
            .client
            .get(server.url("/v1/jobs"))
            .header("X-Request-Id", bad.as_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(request_id(response).len(), 36);
    }

    let finished = server
        .log
        .wait_for(0, r#""message":"job finished""#, DEADLINE)
        .expect("the report is logged");
    let lines: Vec<Value> = server
        .log
        .text()
        .lines()
        .map(|text| {
            let line: Value = serde_json::from_str(text)
                .unwrap_or_else(|err| panic!("not a JSON line ({err}): {text}"));
            assert!(
                line["level"].is_string() && line["timestamp"].is_string(),
                "{text}"
            );
            line
        })
        .collect();
    let log = server.log.text();
    let named = |message: &str| -> &Value {
        lines
            .iter()
            .find(|line| line["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in\n{log}"))
    };

    let received = named("webhook received");
    assert_eq!(received["request_id"], "push-1", "{received}");
    assert_eq!(received["route"], "/v1/webhooks/github", "{received}");
    assert_eq!(received["method"], "POST", "{received}");
    assert_eq!(received["delivery"], "log-ids-1", "{received}");
    assert_eq!(received["jobs"], 1, "{received}");

    let queued = named("job queued");
    assert_eq!(queued["request_id"], "push-1", "{queued}");
    assert_eq!(queued["job"], job_id.as_str(), "{queued}");
    assert_eq!(queued["delivery"], "log-ids-1", "{queued}");
    assert_eq!(queued["host"], "web-01", "{queued}");

    // The agent's requests have ids of the controller's making.
    let handed_out = named("job handed out");
    assert_eq!(handed_out["job"], job_id.as_str(), "{handed_out}");
    assert_eq!(handed_out["agent"], agent.id.as_str(), "{handed_out}");
    assert_eq!(handed_out["route"], "/v1/agents/{id}/heartbeat");
    let heartbeat = handed_out["request_id"].as_str().unwrap_or_default();
    assert_eq!(heartbeat.len(), 36, "{handed_out}");

    let finished: Value = serde_json::from_str(&finished).unwrap();
    assert_eq!(finished["job"], job_id.as_str(), "{finished}");
    assert_eq!(finished["agent"], agent.id.as_str(), "{finished}");
    assert_eq!(finished["status"], "success", "{finished}");
    assert_eq!(finished["route"], "/v1/jobs/{id}/status", "{finished}");
    let report = finished["request_id"].as_str().unwrap_or_default();
    assert_eq!(report.len(), 36, "{finished}");
    assert_ne!(report, heartbeat);

    // Every line written while handling a request names it.
    for line in lines.iter().filter(|line| line.get("route").is_some()) {
        assert!(line["request_id"].is_string(), "{line}");
    }
    // No secret reaches the log.
    assert!(!log.contains(ADMIN_TOKEN));
    assert!(!log.contains(SECRET));
    assert!(!log.contains("dbt_agent_"), "an agent token was logged");
}

fn request_id(response: reqwest::Response) -> String {
    let id = response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id in {response:?}"));
    id.to_str().unwrap().to_owned()
}
