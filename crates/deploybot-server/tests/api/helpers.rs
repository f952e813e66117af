//! A real controller per test: its own temp dir (SQLite file and apps.yaml),
//! a random port, and a reqwest client with typed helpers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use deploybot_server::settings::Secret;
use deploybot_server::{Controller, Settings, SettingsLayer};
use deploybot_wire::{
    Agent, Delivery, ErrorBody, HeartbeatResponse, HostInfo, HostsResponse, Job, JobResponse,
    RegisteredAgent, WebhookResponse, signature,
};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "test-secret";
/// The configured admin token: the test client sends it by default.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The configured enrollment token agents register with.
pub const ENROLLMENT_TOKEN: &str = "test-enrollment-token-0123456789";

/// Hosts: web-01 (web, api), web-02 (web), api-01 (api), docs-01 (docs).
pub const APPS_YAML: &str = r#"
apps:
  - name: web
    repo: acme/web
    hosts: [web-01, web-02]
    branches: [main, "release/*"]
    tags: ["v*"]
    deploy:
      command: ["./deploy.sh", "--fast"]
      workdir: /srv/web
      env: {RAILS_ENV: production}
      timeout: 10m
  - name: api
    repo: acme/api
    hosts: [web-01, api-01]
    deploy:
      command: [make, deploy]
  - name: docs
    repo: acme/docs
    hosts: [docs-01]
    deploy_on_push: false
    deploy:
      command: [./publish]
"#;

pub const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
pub const SHA_C: &str = "cccccccccccccccccccccccccccccccccccccccc";

pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    secret: Option<String>,
    lease_timeout: Option<String>,
    /// Agent id → the token its last registration got.
    agent_tokens: Mutex<HashMap<String, String>>,
    /// Host → the agent id it was registered under.
    agent_hosts: Mutex<HashMap<String, String>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(APPS_YAML, Some(SECRET)).await
}

/// A controller with this apps.yaml and webhook secret (`None`: unset).
pub async fn spawn_app_with(apps_yaml: &str, secret: Option<&str>) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(apps_path(dir.path()), apps_yaml).expect("write apps.yaml");
    start(dir, secret.map(str::to_owned), None).await
}

/// The default apps and secret, with this lease timeout (e.g. "1s").
pub async fn spawn_app_with_lease(lease_timeout: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(apps_path(dir.path()), APPS_YAML).expect("write apps.yaml");
    start(dir, Some(SECRET.to_owned()), Some(lease_timeout.to_owned())).await
}

fn apps_path(dir: &Path) -> PathBuf {
    dir.join("apps.yaml")
}

/// The default apps and secret, with these settings over the test defaults.
pub async fn spawn_app_with_settings(extra: SettingsLayer) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(apps_path(dir.path()), APPS_YAML).expect("write apps.yaml");
    start_with(dir, Some(SECRET.to_owned()), None, extra).await
}

async fn start(dir: TempDir, secret: Option<String>, lease_timeout: Option<String>) -> TestApp {
    start_with(dir, secret, lease_timeout, SettingsLayer::default()).await
}

async fn start_with(
    dir: TempDir,
    secret: Option<String>,
    lease_timeout: Option<String>,
    extra: SettingsLayer,
) -> TestApp {
    let settings = Settings::resolve(extra.over(SettingsLayer {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().join("data")),
        apps: Some(apps_path(dir.path())),
        webhook_secret: secret.clone().map(Secret::new),
        lease_timeout: lease_timeout.clone(),
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        enrollment_token: Some(Secret::new(ENROLLMENT_TOKEN)),
        ..Default::default()
    }))
    .expect("settings");
    let controller = Controller::start(settings)
        .await
        .expect("controller starts");
    let address = format!("http://{}", controller.local_addr().expect("bound"));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(controller.run(async move {
        let _ = stopped.await;
    }));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_TOKEN}").parse().expect("header"),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .expect("client");
    TestApp {
        address,
        client,
        dir,
        secret,
        lease_timeout,
        agent_tokens: Mutex::new(HashMap::new()),
        agent_hosts: Mutex::new(HashMap::new()),
        shutdown: Some(stop),
        server: Some(server),
    }
}

pub fn push_payload(repo: &str, git_ref: &str, sha: &str) -> Value {
    json!({
        "ref": git_ref,
        "before": "0000000000000000000000000000000000000000",
        "after": sha,
        "deleted": false,
        "compare": format!("https://github.com/{repo}/compare/x...y"),
        "repository": {"full_name": repo},
        "pusher": {"name": "octocat"},
        "head_commit": {"message": "Ship it\n\nwith a body"},
    })
}

/// Asserts an error answer: status, JSON body with `code`, `detail` = message.
pub async fn assert_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> ErrorBody {
    assert_eq!(response.status(), status, "status of {}", response.url());
    let text = response.text().await.expect("body");
    let body: ErrorBody = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("error body is not JSON ({err}): {text:?}"));
    assert_eq!(body.error.code, code, "{text}");
    assert_eq!(body.detail, body.error.message, "{text}");
    body
}

/// Reads a 200 answer as `T`.
pub async fn ok_json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> T {
    let status = response.status();
    let url = response.url().clone();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{url}: {err}: {text}"))
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// The signature header value for `body` with the test secret.
    pub fn sign(&self, body: &[u8]) -> String {
        signature::sign(SECRET.as_bytes(), body)
    }

    /// A webhook request with the event and delivery headers, no body yet.
    pub fn webhook(&self, event: &str, delivery_id: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url("/v1/webhooks/github"))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery_id)
    }

    /// A JSON webhook signed with the test secret.
    pub async fn post_webhook(
        &self,
        event: &str,
        delivery_id: &str,
        body: &Value,
    ) -> reqwest::Response {
        let bytes = serde_json::to_vec(body).expect("json");
        self.webhook(event, delivery_id)
            .header(CONTENT_TYPE, "application/json")
            .header("X-Hub-Signature-256", self.sign(&bytes))
            .body(bytes)
            .send()
            .await
            .expect("POST webhook")
    }

    /// A signed push event; asserts a 200 answer.
    pub async fn push(
        &self,
        delivery_id: &str,
        repo: &str,
        git_ref: &str,
        sha: &str,
    ) -> WebhookResponse {
        let payload = push_payload(repo, git_ref, sha);
        ok_json(self.post_webhook("push", delivery_id, &payload).await).await
    }

    pub async fn create_job(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/jobs"))
            .json(body)
            .send()
            .await
            .expect("POST /v1/jobs")
    }

    /// Creates a job that must be new (201).
    pub async fn create_job_ok(&self, repo: &str, host: &str, sha: &str) -> Job {
        let response = self
            .create_job(&json!({"repo": repo, "ref": "refs/heads/main", "host": host, "sha": sha}))
            .await;
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, StatusCode::CREATED, "{text}");
        let created: JobResponse = serde_json::from_str(&text).expect("JobResponse");
        assert_eq!(created.created, Some(true));
        created.job
    }

    pub async fn get_job(&self, id: &str) -> Job {
        ok_json::<JobResponse>(self.get(&format!("/v1/jobs/{id}")).await)
            .await
            .job
    }

    /// `GET /v1/jobs?{query}`.
    pub async fn list_jobs(&self, query: &str) -> Vec<Job> {
        ok_json(self.get(&format!("/v1/jobs?{query}")).await).await
    }

    /// Registers `hostname` as its agent would: with the agent's own token
    /// when this test registered the host before, else with the enrollment
    /// token. Asserts a 200 answer.
    pub async fn register(&self, hostname: &str) -> Agent {
        let own = {
            let tokens = self.agent_tokens.lock().unwrap();
            self.agent_hosts
                .lock()
                .unwrap()
                .get(hostname)
                .and_then(|id| tokens.get(id).cloned())
        };
        let credential = own.unwrap_or_else(|| ENROLLMENT_TOKEN.to_owned());
        match self.register_with(hostname, &credential).await {
            Ok(registered) => registered.agent,
            Err(refused) => {
                let status = refused.status();
                panic!("{hostname}: {status} {}", refused.text().await.unwrap())
            }
        }
    }

    /// `POST /v1/agents/register` for `hostname` with `token`: the answer,
    /// whose token becomes the agent's (see [`Self::agent_token`]), or the
    /// refusal.
    pub async fn register_with(
        &self,
        hostname: &str,
        token: &str,
    ) -> Result<RegisteredAgent, reqwest::Response> {
        let response = self
            .client
            .post(self.url("/v1/agents/register"))
            .bearer_auth(token)
            .json(&json!({"hostname": hostname, "capabilities": ["docker"]}))
            .send()
            .await
            .expect("POST register");
        if response.status() != StatusCode::OK {
            return Err(response);
        }
        let registered: RegisteredAgent = ok_json(response).await;
        self.agent_hosts
            .lock()
            .unwrap()
            .insert(hostname.to_owned(), registered.agent.id.clone());
        self.agent_tokens
            .lock()
            .unwrap()
            .insert(registered.agent.id.clone(), registered.token.clone());
        Ok(registered)
    }

    /// The token of the agent's latest registration through [`Self::register`].
    pub fn agent_token(&self, agent_id: &str) -> String {
        self.agent_tokens
            .lock()
            .unwrap()
            .get(agent_id)
            .cloned()
            .unwrap_or_else(|| panic!("agent {agent_id} was not registered by this test"))
    }

    pub async fn heartbeat(&self, agent_id: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/agents/{agent_id}/heartbeat")))
            .bearer_auth(self.agent_token(agent_id))
            .json(&json!({"status": "idle"}))
            .send()
            .await
            .expect("POST heartbeat")
    }

    /// A heartbeat that must succeed; the job it hands out, if any.
    pub async fn heartbeat_job(&self, agent_id: &str) -> Option<Job> {
        let answer: HeartbeatResponse = ok_json(self.heartbeat(agent_id).await).await;
        assert!(answer.acknowledged);
        answer.job
    }

    /// A status report, with the token of the agent the body names, or else
    /// of the agent the job is assigned to.
    pub async fn report(&self, job_id: &str, body: &Value) -> reqwest::Response {
        let agent = match body.get("agent_id").and_then(Value::as_str) {
            Some(agent) => agent.to_owned(),
            None => self
                .get_job(job_id)
                .await
                .assigned_agent
                .expect("the job is assigned to an agent"),
        };
        self.client
            .put(self.url(&format!("/v1/jobs/{job_id}/status")))
            .bearer_auth(self.agent_token(&agent))
            .json(body)
            .send()
            .await
            .expect("PUT status")
    }

    pub async fn hosts(&self) -> Vec<HostInfo> {
        ok_json::<HostsResponse>(self.get("/v1/hosts").await)
            .await
            .hosts
    }

    pub async fn host(&self, hostname: &str) -> HostInfo {
        self.hosts()
            .await
            .into_iter()
            .find(|h| h.hostname == hostname)
            .unwrap_or_else(|| panic!("host {hostname} not listed"))
    }

    pub async fn deliveries(&self) -> Vec<Delivery> {
        ok_json(self.get("/v1/deliveries").await).await
    }

    /// Stops this controller (waiting until it has finished) and starts a new
    /// one on the same data directory and apps.yaml.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let tokens = std::mem::take(&mut *self.agent_tokens.lock().unwrap());
        let hosts = std::mem::take(&mut *self.agent_hosts.lock().unwrap());
        let TestApp {
            dir,
            secret,
            lease_timeout,
            ..
        } = self;
        let app = start(dir, secret, lease_timeout).await;
        *app.agent_tokens.lock().unwrap() = tokens;
        *app.agent_hosts.lock().unwrap() = hosts;
        app
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            stop.send(()).expect("the controller is still running");
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the controller task did not panic")
                .expect("the controller stopped cleanly");
        }
    }
}
