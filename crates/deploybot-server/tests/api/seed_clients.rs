//! What the seed's own clients send keeps working: its example agent
//! registers with `capabilities` as an object of facts, and gets them back
//! as it sent them.

use deploybot_server::SettingsLayer;
use deploybot_wire::{Agent, RegisteredAgent};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ENROLLMENT_TOKEN, assert_error, ok_json, spawn_app, spawn_app_with_settings};

/// The seed's example agent's registration.
fn seed_registration() -> Value {
    json!({"hostname": "web-01", "capabilities": {"platform": "linux", "python_version": "3.11"}})
}

#[tokio::test]
async fn the_seed_agents_capabilities_object_is_accepted_and_kept_as_sent() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/agents/register"))
        .bearer_auth(ENROLLMENT_TOKEN)
        .json(&seed_registration())
        .send()
        .await
        .unwrap();
    let registered: Value = ok_json(response).await;
    assert_eq!(
        registered["capabilities"],
        seed_registration()["capabilities"]
    );
    let agents: Vec<Value> = ok_json(app.get("/v1/agents").await).await;
    assert_eq!(
        agents[0]["capabilities"],
        seed_registration()["capabilities"]
    );
    // A list of names stays a list.
    let listed = app.register("web-02").await;
    assert_eq!(
        serde_json::to_value(&listed.capabilities).unwrap(),
        json!(["docker"])
    );

    // Anything else is refused with a message naming both shapes.
    for bad in [
        json!({"platform": {"nested": true}}),
        json!("linux"),
        json!([""]),
    ] {
        let response = app
            .client
            .post(app.url("/v1/agents/register"))
            .bearer_auth(ENROLLMENT_TOKEN)
            .json(&json!({"hostname": "web-03", "capabilities": bad}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status() == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            response.status()
        );
    }
}

#[tokio::test]
async fn in_open_mode_the_seed_agent_registers_and_heartbeats_without_a_token() {
    let app = spawn_app_with_settings(SettingsLayer {
        insecure_no_auth: Some(true),
        ..Default::default()
    })
    .await;
    let anonymous = reqwest::Client::new();
    let registered: RegisteredAgent = ok_json(
        anonymous
            .post(app.url("/v1/agents/register"))
            .json(&seed_registration())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let agent: Agent = registered.agent;
    // The seed's agent heartbeats with an empty body, or just its status.
    for body in [None, Some(json!({"status": "online"}))] {
        let mut request = anonymous.post(app.url(&format!("/v1/agents/{}/heartbeat", agent.id)));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = ok_json(request.send().await.unwrap()).await;
        assert_eq!(answer["acknowledged"], true);
        assert!(answer["job"].is_null());
    }
    let unknown = anonymous
        .post(app.url("/v1/agents/nobody/heartbeat"))
        .send()
        .await
        .unwrap();
    assert_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
}
