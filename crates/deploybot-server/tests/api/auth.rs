//! Authentication and roles: every endpoint × every kind of caller, and the
//! life of tokens (revocation, rotation, single use, storage).

use deploybot_wire::{AuditResponse, CreatedToken, Job, TokenInfo, TokensResponse};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, ENROLLMENT_TOKEN, SHA_A, SHA_B, TestApp, assert_error, ok_json, spawn_app,
    spawn_app_with_settings,
};

impl TestApp {
    pub(crate) async fn make_token(&self, body: Value) -> CreatedToken {
        let response = self
            .client
            .post(self.url("/v1/tokens"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> StatusCode {
        let mut request = reqwest::Client::new().request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if !body.is_null() {
            request = request.json(&body);
        }
        request.send().await.unwrap().status()
    }
}

/// A running job on web-02 (with its agent), a finished job on web-01 and
/// the tokens of every kind of caller.
struct World {
    running: Job,
    running_agent: String,
    finished: Job,
    other_agent: String,
    read: String,
    deploy: String,
    admin: String,
}

async fn world(app: &TestApp) -> World {
    let running_agent = app.register("web-02").await.id;
    app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let running = app.heartbeat_job(&running_agent).await.unwrap();
    let other_agent = app.register("web-01").await.id;
    app.create_job_ok("acme/web", "web-01", SHA_A).await;
    let finished = app.heartbeat_job(&other_agent).await.unwrap();
    let report = json!({"status": "success", "exit_code": 0, "agent_id": other_agent});
    assert_eq!(
        app.report(&finished.id, &report).await.status(),
        StatusCode::OK
    );
    World {
        running,
        running_agent,
        finished,
        other_agent,
        read: app
            .make_token(json!({"name": "r", "role": "read"}))
            .await
            .token,
        deploy: app
            .make_token(json!({"name": "d", "role": "deploy"}))
            .await
            .token,
        admin: app
            .make_token(json!({"name": "a", "role": "admin"}))
            .await
            .token,
    }
}

#[tokio::test]
async fn every_endpoint_answers_each_kind_of_caller_as_its_role_allows() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let agent = app.agent_token(&w.running_agent);
    let other = app.agent_token(&w.other_agent);
    let (run, fin) = (w.running.id.clone(), w.finished.id.clone());
    let lines = json!({"agent_id": w.running_agent, "lease": w.running.lease, "lines": [
        {"line": 1, "stream": "stdout", "at": "2026-01-01T00:00:00Z", "text": "hi"}]});
    let status =
        json!({"status": "running", "agent_id": w.running_agent, "lease": w.running.lease});
    let new_job =
        json!({"repo": "acme/web", "ref": "refs/heads/main", "host": "web-01", "sha": SHA_B});

    // Columns: none, read, deploy, admin, the job's agent, another host's agent.
    use StatusCode as S;
    const U: S = S::UNAUTHORIZED;
    const F: S = S::FORBIDDEN;
    let table: Vec<(Method, String, Value, [S; 6])> = vec![
        (
            Method::GET,
            "/v1/jobs".into(),
            Value::Null,
            [U, S::OK, S::OK, S::OK, F, F],
        ),
        (
            Method::GET,
            format!("/v1/jobs/{run}"),
            Value::Null,
            [U, S::OK, S::OK, S::OK, F, F],
        ),
        (
            Method::GET,
            format!("/v1/jobs/{run}/logs"),
            Value::Null,
            [U, S::OK, S::OK, S::OK, F, F],
        ),
        (
            Method::GET,
            "/v1/agents".into(),
            Value::Null,
            [U, S::OK, S::OK, S::OK, F, F],
        ),
        (
            Method::GET,
            "/v1/hosts".into(),
            Value::Null,
            [U, S::OK, S::OK, S::OK, F, F],
        ),
        (
            Method::GET,
            "/v1/deliveries".into(),
            Value::Null,
            [U, S::OK, S::OK, S::OK, F, F],
        ),
        (
            Method::GET,
            "/v1/apps".into(),
            Value::Null,
            [U, S::OK, S::OK, S::OK, F, F],
        ),
        (
            Method::GET,
            "/v1/explain?repo=acme/web&ref=main".into(),
            Value::Null,
            [U, S::OK, S::OK, S::OK, F, F],
        ),
        (
            Method::GET,
            "/v1/status".into(),
            Value::Null,
            [U, S::OK, S::OK, S::OK, F, F],
        ),
        (
            Method::GET,
            "/v1/logs/stream?job_id=no-such-job".into(),
            Value::Null,
            [U, S::NOT_FOUND, S::NOT_FOUND, S::NOT_FOUND, F, F],
        ),
        (
            Method::GET,
            "/v1/tokens".into(),
            Value::Null,
            [U, F, F, S::OK, F, F],
        ),
        (
            Method::GET,
            "/v1/audit".into(),
            Value::Null,
            [U, F, F, S::OK, F, F],
        ),
        (
            Method::POST,
            "/v1/tokens".into(),
            json!({"name": "x", "role": "read"}),
            [U, F, F, S::CREATED, F, F],
        ),
        (
            Method::DELETE,
            "/v1/tokens/tok_000000000000".into(),
            Value::Null,
            [U, F, F, S::NOT_FOUND, F, F],
        ),
        (
            Method::DELETE,
            "/v1/agents/no-such-agent".into(),
            Value::Null,
            [U, F, F, S::NOT_FOUND, F, F],
        ),
        // The first allowed create makes the job; later ones find it (200).
        (
            Method::POST,
            "/v1/jobs".into(),
            new_job,
            [U, F, S::CREATED, S::OK, F, F],
        ),
        (
            Method::POST,
            format!("/v1/jobs/{fin}/retry"),
            Value::Null,
            [U, F, S::CREATED, S::OK, F, F],
        ),
        (
            Method::POST,
            format!("/v1/jobs/{run}/logs"),
            lines,
            [U, F, F, F, S::OK, F],
        ),
        (
            Method::PUT,
            format!("/v1/jobs/{run}/status"),
            status,
            [U, F, F, F, S::OK, F],
        ),
        (
            Method::POST,
            format!("/v1/agents/{}/heartbeat", w.running_agent),
            json!({}),
            [U, F, F, F, S::OK, F],
        ),
        (
            Method::POST,
            "/v1/agents/register".into(),
            json!({"hostname": "web-09"}),
            [U, F, F, F, F, F],
        ),
        (
            Method::POST,
            format!("/v1/jobs/{run}/cancel"),
            Value::Null,
            [U, F, S::OK, S::OK, F, F],
        ),
    ];
    let callers = [
        None,
        Some(&w.read),
        Some(&w.deploy),
        Some(&w.admin),
        Some(&agent),
        Some(&other),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, expected) in table {
        for (caller, want) in callers.iter().zip(expected) {
            let got = app
                .call(
                    method.clone(),
                    &path,
                    caller.map(String::as_str),
                    body.clone(),
                )
                .await;
            if got != want {
                wrong.push(format!(
                    "{method} {path} as caller #{:?}: {got}, expected {want}",
                    callers.iter().position(|c| c == caller)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // Open by design: health, docs, the spec; the webhook checks its signature.
    for path in ["/health", "/ready", "/metrics", "/openapi.json", "/docs/"] {
        assert_eq!(
            app.call(Method::GET, path, None, Value::Null).await,
            S::OK,
            "{path}"
        );
    }
    // Only an enrollment token registers agents.
    let register = json!({"hostname": "web-09"});
    let enrolled = app
        .call(
            Method::POST,
            "/v1/agents/register",
            Some(ENROLLMENT_TOKEN),
            register,
        )
        .await;
    assert_eq!(enrolled, S::OK);
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once() {
    let app = spawn_app().await;
    let made = app.make_token(json!({"name": "ci", "role": "read"})).await;
    assert_eq!(
        app.call(Method::GET, "/v1/jobs", Some(&made.token), Value::Null)
            .await,
        StatusCode::OK
    );

    let revoked: TokenInfo = ok_json(
        app.client
            .delete(app.url(&format!("/v1/tokens/{}", made.info.id)))
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert!(revoked.revoked_at.is_some());
    let status = app
        .call(Method::GET, "/v1/jobs", Some(&made.token), Value::Null)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_new_registration_replaces_the_agents_token() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let old = app.agent_token(&agent.id);

    let again = app.register("web-01").await;

    assert_eq!(again.id, agent.id);
    let path = format!("/v1/agents/{}/heartbeat", agent.id);
    assert_eq!(
        app.call(Method::POST, &path, Some(&old), json!({})).await,
        StatusCode::UNAUTHORIZED
    );
    let new = app.agent_token(&agent.id);
    assert_eq!(
        app.call(Method::POST, &path, Some(&new), json!({})).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_revoked_agent_loses_its_token_and_its_job() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    let job = app.create_job_ok("acme/web", "web-02", SHA_A).await;
    app.heartbeat_job(&agent.id).await.unwrap();

    let lost: Vec<Job> = ok_json(
        app.client
            .delete(app.url(&format!("/v1/agents/{}", agent.id)))
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(
        lost.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [job.id.as_str()]
    );
    let path = format!("/v1/agents/{}/heartbeat", agent.id);
    let token = app.agent_token(&agent.id);
    assert_eq!(
        app.call(Method::POST, &path, Some(&token), json!({})).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_single_use_enrollment_token_registers_one_agent() {
    let app = spawn_app().await;
    let made = app
        .make_token(json!({"name": "web-03 setup", "role": "enroll", "single_use": true}))
        .await;
    assert!(made.token.starts_with("dbt_enroll_"));
    let register = |host: &'static str| {
        app.call(
            Method::POST,
            "/v1/agents/register",
            Some(&made.token),
            json!({"hostname": host}),
        )
    };

    assert_eq!(register("web-03").await, StatusCode::OK);
    assert_eq!(register("web-04").await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_deploy_token_limited_to_an_app_deploys_only_that_app() {
    let app = spawn_app().await;
    let api_only = app
        .make_token(json!({"name": "ci-api", "role": "deploy", "apps": ["api"]}))
        .await;
    let job = |repo: &str| json!({"repo": repo, "ref": "refs/heads/main", "host": "web-01", "sha": SHA_A});

    let api = app
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&api_only.token),
            job("acme/api"),
        )
        .await;
    let web = app
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&api_only.token),
            job("acme/web"),
        )
        .await;

    assert_eq!((api, web), (StatusCode::CREATED, StatusCode::FORBIDDEN));
    let web_job = app.create_job_ok("acme/web", "web-02", SHA_B).await;
    let cancel = format!("/v1/jobs/{}/cancel", web_job.id);
    assert_eq!(
        app.call(Method::POST, &cancel, Some(&api_only.token), Value::Null)
            .await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn no_token_is_stored_in_plain_text() {
    let app = spawn_app().await;
    let made = app
        .make_token(json!({"name": "ci", "role": "deploy"}))
        .await;
    let agent = app.register("web-01").await;
    let agent_token = app.agent_token(&agent.id);
    let listed: TokensResponse = ok_json(app.get("/v1/tokens").await).await;
    assert!(listed.tokens.iter().any(|t| t.id == made.info.id));

    let mut database = Vec::new();
    for entry in std::fs::read_dir(app.dir.path().join("data")).unwrap() {
        // The database file and its write-ahead log.
        database.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let database = String::from_utf8_lossy(&database);
    for secret in [
        made.token.as_str(),
        agent_token.as_str(),
        ADMIN_TOKEN,
        ENROLLMENT_TOKEN,
    ] {
        let secret_part = &secret[secret.len() - 24..];
        assert!(
            !database.contains(secret_part),
            "found {secret} in the database"
        );
    }
    assert!(
        !serde_json::to_string(&listed)
            .unwrap()
            .contains(&made.token)
    );
}

#[tokio::test]
async fn repeated_bad_tokens_from_one_address_are_slowed_down() {
    let app = spawn_app().await;
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(
            app.call(Method::GET, "/v1/jobs", Some("dbt_api_guess"), Value::Null)
                .await,
        );
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
    // The answer says when to come back, in a header as well.
    let throttled = app
        .client
        .get(app.url("/v1/jobs"))
        .bearer_auth("dbt_api_guess")
        .send()
        .await
        .unwrap();
    let retry: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    assert_error(
        throttled,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_auth_failures",
    )
    .await;
    // A valid token from the same address is not held up by the bad ones.
    let valid = app
        .call(Method::GET, "/v1/jobs", Some(ADMIN_TOKEN), Value::Null)
        .await;
    assert_eq!(valid, StatusCode::OK);
}

#[tokio::test]
async fn the_audit_log_records_who_did_what() {
    let app = spawn_app().await;
    let made = app
        .make_token(json!({"name": "ci", "role": "deploy"}))
        .await;
    let job = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    let cancel = format!("/v1/jobs/{}/cancel", job.id);
    assert_eq!(
        app.call(Method::POST, &cancel, Some(&made.token), Value::Null)
            .await,
        StatusCode::OK
    );
    app.push("delivery-1", "acme/web", "refs/heads/main", SHA_B)
        .await;

    let audit: AuditResponse = ok_json(app.get("/v1/audit").await).await;

    let seen: Vec<(String, String)> = audit
        .entries
        .iter()
        .map(|e| (e.actor.clone(), e.action.clone()))
        .collect();
    let token_actor = format!("token:{}", made.info.id);
    assert_eq!(
        seen,
        [
            ("webhook:delivery-1".to_owned(), "deploy".to_owned()),
            (token_actor, "cancel".to_owned()),
            ("admin:config".to_owned(), "deploy".to_owned()),
            ("admin:config".to_owned(), "create_token".to_owned()),
        ]
    );
    assert!(audit.entries.iter().all(|e| e.result == "ok"));
    assert_eq!(audit.entries[1].address.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn revoking_an_agent_ends_its_held_long_poll_without_a_job() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    let token = app.agent_token(&agent.id);
    let held = {
        let (client, url) = (
            reqwest::Client::new(),
            app.url(&format!("/v1/agents/{}/heartbeat?wait=30", agent.id)),
        );
        tokio::spawn(async move { client.post(url).bearer_auth(token).send().await })
    };
    // Nothing observable says the request is held; give it time to be.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let revoked = app
        .client
        .delete(app.url(&format!("/v1/agents/{}", agent.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    app.create_job_ok("acme/web", "web-02", SHA_A).await;

    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), held)
        .await
        .expect("the held heartbeat ended at the revocation, not after its 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let pending = app.list_jobs("status=pending").await;
    assert_eq!(
        pending.len(),
        1,
        "the job stays queued for a legitimate agent"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_callers() {
    let app = spawn_app_with_settings(deploybot_server::SettingsLayer {
        trusted_proxies: Some("127.0.0.1".into()),
        ..Default::default()
    })
    .await;
    let untrusted = spawn_app().await;
    for app in [&app, &untrusted] {
        let created = app
            .client
            .post(app.url("/v1/tokens"))
            .header("X-Forwarded-For", "203.0.113.9, 198.51.100.7")
            .json(&json!({"name": "x", "role": "read"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
    }

    let audit: AuditResponse = ok_json(app.get("/v1/audit").await).await;
    let direct: AuditResponse = ok_json(untrusted.get("/v1/audit").await).await;

    // The proxy's own entry is the last one; earlier ones are the client's to forge.
    assert_eq!(audit.entries[0].address.as_deref(), Some("198.51.100.7"));
    assert_eq!(direct.entries[0].address.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn a_caller_without_the_right_gets_403_whatever_the_body_holds() {
    let app = spawn_app().await;
    let read = app
        .make_token(json!({"name": "dashboard", "role": "read"}))
        .await
        .token;
    let agent = app.register("web-01").await;
    for (method, path) in [
        ("POST", "/v1/jobs".to_owned()),
        ("POST", "/v1/tokens".to_owned()),
        ("POST", "/v1/agents/register".to_owned()),
        ("POST", format!("/v1/agents/{}/heartbeat", agent.id)),
        ("PUT", "/v1/jobs/some-job/status".to_owned()),
        ("POST", "/v1/jobs/some-job/logs".to_owned()),
    ] {
        for (content_type, body) in [("application/json", "{not json"), ("text/plain", "hello")] {
            let response = app
                .client
                .request(method.parse().unwrap(), app.url(&path))
                .bearer_auth(&read)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
        }
    }
}
