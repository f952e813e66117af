//! Controllers as child processes (ready when they log their address),
//! and HTTP access to them.

use super::*;

/// A running `deploybot server`, killed (SIGKILL) when dropped. Derefs to
/// its [`Api`].
pub struct Server {
    child: Child,
    pub pid: u32,
    /// Its stderr.
    pub log: Log,
    api: Api,
}

/// HTTP access to a server; cheap to clone into tasks.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub client: reqwest::Client,
}

impl std::ops::Deref for Server {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    /// Spawns `cmd` and waits for its `listening on http://…` line.
    ///
    /// Blocks the calling thread until then: in async tests, call it before
    /// spawning tasks (or accept that they wait).
    pub fn start(cmd: Command) -> Server {
        let mut server = Server::spawn(cmd);
        server.wait_ready();
        server
    }

    /// Spawns `cmd`; [`Server::wait_ready`] before using the address.
    pub fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn deploybot server");
        let log = Log::follow(child.stderr.take().expect("piped stderr"));
        Server {
            pid: child.id(),
            child,
            log,
            api: Api {
                address: String::new(),
                client: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(DEADLINE)
                    .default_headers(
                        [(
                            reqwest::header::AUTHORIZATION,
                            reqwest::header::HeaderValue::from_static(concat!(
                                "Bearer ",
                                "cli-test-admin-token-0123456789"
                            )),
                        )]
                        .into_iter()
                        .collect(),
                    )
                    .build()
                    .expect("HTTP client"),
            },
        }
    }

    /// Waits for the `listening on http://…` line and learns the address.
    pub fn wait_ready(&mut self) {
        let line = self
            .log
            .wait_for(0, "listening on http", DEADLINE)
            .unwrap_or_else(|err| panic!("deploybot server did not start: {err}"));
        let url = line
            .split("listening on ")
            .nth(1)
            // A text line ends the URL with a space, a JSON one with a quote.
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        self.api.address = url.to_owned();
    }

    /// A handle for tasks.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// `kill -SIGNAL` this server.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid, signal);
    }

    /// Waits (at most [`DEADLINE`]) for the server to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        assert!(
            self.log.wait_closed(DEADLINE),
            "deploybot server still running after {DEADLINE:?}\n--- log ---\n{}",
            self.log.text()
        );
        // stderr is closed: the process is exiting; reap it.
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "deploybot closed stderr but never exited"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        self.child.wait().expect("wait for the killed server");
    }
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }

    /// `GET /health` answers 200.
    pub async fn assert_healthy(&self) {
        let response = self.get("/health").await;
        assert_eq!(response.status(), StatusCode::OK, "GET /health");
    }

    /// A push webhook signed with `secret` (`None`: no signature header).
    pub fn push_request(
        &self,
        secret: Option<&str>,
        delivery_id: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(self.url("/v1/webhooks/github"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", delivery_id)
            .header(CONTENT_TYPE, "application/json");
        if let Some(secret) = secret {
            request = request.header(
                "X-Hub-Signature-256",
                signature::sign(secret.as_bytes(), &body),
            );
        }
        request.body(body)
    }

    /// A push to acme/web signed with [`SECRET`] that must be answered 200.
    pub async fn push(&self, delivery_id: &str, git_ref: &str, sha: &str) -> WebhookResponse {
        self.push_repo(delivery_id, "acme/web", git_ref, sha).await
    }

    /// A push to `repo` signed with [`SECRET`] that must be answered 200.
    pub async fn push_repo(
        &self,
        delivery_id: &str,
        repo: &str,
        git_ref: &str,
        sha: &str,
    ) -> WebhookResponse {
        let body = push_body(repo, git_ref, sha);
        let response = self
            .push_request(Some(SECRET), delivery_id, body)
            .send()
            .await
            .expect("POST webhook");
        ok_json!(response, WebhookResponse)
    }

    pub async fn get_job(&self, id: &str) -> Job {
        ok_json!(self.get(&format!("/v1/jobs/{id}")).await, JobResponse).job
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST {path}: {err}"))
    }

    /// A POST with `token` instead of the admin token.
    pub async fn post_as(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST {path}: {err}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The JSON of a GitHub push (the fields the controller reads).
pub fn push_body(repo: &str, git_ref: &str, sha: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": git_ref,
        "before": "0000000000000000000000000000000000000000",
        "after": sha,
        "deleted": false,
        "repository": {"full_name": repo},
        "pusher": {"name": "octocat"},
        "head_commit": {"message": "Ship it"},
    }))
    .expect("JSON")
}

/// A distinct 40-hex-digit commit SHA for `n`.
pub fn sha(n: usize) -> String {
    format!("c0ffee{n:034x}")
}

/// Asserts a 200 answer and returns its body.
pub async fn ok_text(response: reqwest::Response) -> String {
    let status = response.status();
    let url = response.url().clone();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    text
}

/// `deploybot server` in `dir` listening on `listen` (`127.0.0.1:0` or a
/// port from an earlier run), with `dir/apps.yaml`, `dir/data`, the test
/// webhook secret and `--lease-timeout lease_timeout`.
pub fn controller_command(dir: &Path, listen: &str, lease_timeout: &str) -> Command {
    let mut cmd = deploybot(dir);
    cmd.args(["server", "--listen", listen])
        .args(["--apps", "apps.yaml", "--data-dir", "data"])
        .args(["--lease-timeout", lease_timeout])
        .env("DEPLOYBOT_WEBHOOK_SECRET", SECRET);
    cmd
}
