//! Running the real `deploybot` binary: one-shot commands with a deadline,
//! and servers whose stderr is followed line by line (readiness, reload and
//! stop are all read from the log), killed when the test ends.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use deploybot_wire::{Job, JobResponse, WebhookResponse, signature};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

/// `ok_json!(response, T)`: asserts a 200 answer and reads it as `T`.
macro_rules! ok_json {
    ($response:expr, $ty:ty) => {{
        let text = $crate::common::ok_text($response).await;
        serde_json::from_str::<$ty>(&text)
            .unwrap_or_else(|err| panic!("not a {}: {err}: {text}", stringify!($ty)))
    }};
}
pub(crate) use ok_json;

/// The binary under test, built by Cargo for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_deploybot");

/// How long any child may take to become ready or to finish. Generous (the
/// machine may be busy compiling); a broken binary fails here instead of
/// hanging the suite.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The webhook secret of the test servers.
pub const SECRET: &str = "cli-test-secret";

/// One app, `web`, deploying `acme/web` to two hosts.
pub const WEB_APPS_YAML: &str = r#"apps:
  - name: web
    repo: acme/web
    hosts: [web-01, web-02]
    deploy:
      command: ["./deploy.sh"]
"#;

/// Read by the binary besides the `DEPLOYBOT_*` variables.
const OTHER_ENV: [&str; 1] = ["GITHUB_WEBHOOK_SECRET"];

/// `deploybot` run in `dir` (so relative defaults such as `./apps.yaml` and
/// `./deploybot-data` land there), with a clean DeployBot environment and
/// `RUST_LOG=info`.
pub fn deploybot(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    // The environment of whoever runs the tests must not leak into them.
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("DEPLOYBOT_") || OTHER_ENV.contains(&name.as_ref()) {
            cmd.env_remove(&var);
        }
    }
    cmd
}

/// `deploybot server --listen 127.0.0.1:0 ARGS…` in `dir`.
pub fn server_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = deploybot(dir);
    cmd.args(["server", "--listen", "127.0.0.1:0"]).args(args);
    cmd
}

/// `deploybot server` in `dir` with `dir/apps.yaml`, `dir/data` and the test
/// webhook secret.
pub fn web_server_command(dir: &Path) -> Command {
    let mut cmd = server_command(dir, &["--apps", "apps.yaml", "--data-dir", "data"]);
    cmd.env("DEPLOYBOT_WEBHOOK_SECRET", SECRET);
    cmd
}

pub fn write(path: impl AsRef<Path>, text: &str) {
    let path = path.as_ref();
    std::fs::write(path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

/// What a finished one-shot command printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion (stdout and stderr captured), killing it and
/// failing the test if it takes longer than [`DEADLINE`].
pub fn run(mut cmd: Command) -> Finished {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deploybot");
    let pid = child.id();
    let (done, finished) = mpsc::channel::<std::io::Result<Output>>();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(DEADLINE) {
        Ok(output) => {
            let output = output.expect("wait for deploybot");
            Finished {
                status: output.status,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        }
        Err(_) => {
            send_signal(pid, "KILL");
            panic!("{cmd:?} did not finish within {DEADLINE:?}");
        }
    }
}

/// `kill -SIGNAL pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// A `kill` made ready in advance: a shell waiting on its stdin, so that
/// [`ArmedKill::fire`] signals within microseconds instead of the
/// millisecond or so that starting `kill` takes.
pub struct ArmedKill(Child);

impl ArmedKill {
    pub fn new(pid: u32, signal: &str) -> ArmedKill {
        let child = Command::new("sh")
            .args(["-c", "read _ && kill -s \"$0\" \"$1\"", signal])
            .arg(pid.to_string())
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        ArmedKill(child)
    }

    pub fn fire(mut self) {
        use std::io::Write;
        let mut stdin = self.0.stdin.take().expect("piped stdin");
        stdin.write_all(b"\n").expect("write to sh");
        drop(stdin);
        let status = self.0.wait().expect("wait for sh");
        assert!(status.success(), "kill: {status}");
    }
}

/// The lines a child wrote to one of its pipes so far, and whether the pipe
/// is closed (the child exited).
#[derive(Clone, Default)]
pub struct Log(Arc<(Mutex<LogState>, Condvar)>);

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

impl Log {
    /// Follows `pipe` on a thread until it closes.
    fn follow(pipe: impl Read + Send + 'static) -> Log {
        let log = Log::default();
        let writer = log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                        writer.update(|state| state.lines.push(text));
                    }
                }
            }
            writer.update(|state| state.closed = true);
        });
        log
    }

    fn update(&self, change: impl FnOnce(&mut LogState)) {
        let (state, changed) = &*self.0;
        change(&mut state.lock().unwrap());
        changed.notify_all();
    }

    /// How many lines were written so far: pass it to [`Log::wait_for`] to
    /// look only at what comes next.
    pub fn mark(&self) -> usize {
        self.0.0.lock().unwrap().lines.len()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        self.0.0.lock().unwrap().lines.join("\n")
    }

    /// Waits until a line from index `from` on contains `needle`, and returns
    /// it; `Err` with the whole log when the pipe closes first or `timeout`
    /// passes.
    pub fn wait_for(&self, from: usize, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let (state, changed) = &*self.0;
        let mut state = state.lock().unwrap();
        loop {
            if let Some(line) = state.lines.iter().skip(from).find(|l| l.contains(needle)) {
                return Ok(line.clone());
            }
            let why = if state.closed {
                "the process closed its stderr (exited)"
            } else if Instant::now() >= deadline {
                "timed out"
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                state = changed.wait_timeout(state, left).unwrap().0;
                continue;
            };
            return Err(format!(
                "no line containing {needle:?}: {why}\n--- log ---\n{}",
                state.lines.join("\n")
            ));
        }
    }

    /// Waits until the pipe closes; `false` if `timeout` passes first.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let (state, changed) = &*self.0;
        let state = state.lock().unwrap();
        let (state, _) = changed
            .wait_timeout_while(state, timeout, |s| !s.closed)
            .unwrap();
        state.closed
    }
}

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
                    .build()
                    .expect("HTTP client"),
            },
        }
    }

    /// Waits for the `listening on http://…` line and learns the address.
    pub fn wait_ready(&mut self) {
        let line = self
            .log
            .wait_for(0, "listening on http://", DEADLINE)
            .unwrap_or_else(|err| panic!("deploybot server did not start: {err}"));
        let url = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
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

    /// A push signed with [`SECRET`] that must be answered 200.
    pub async fn push(&self, delivery_id: &str, git_ref: &str, sha: &str) -> WebhookResponse {
        let body = push_body("acme/web", git_ref, sha);
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
