//! Running the real `deploybot` binary: one-shot commands with a deadline,
//! and servers whose stderr is followed line by line (readiness, reload and
//! stop are all read from the log), killed when the test ends.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use deploybot_wire::{
    AgentStatus, DeliveryVerdict, HostInfo, HostsResponse, Job, JobResponse, JobStatus, LogEntry,
    LogStream, WebhookResponse, signature,
};
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
/// The admin token of the test servers (`DEPLOYBOT_ADMIN_TOKEN`); the test
/// client sends it.
pub const ADMIN_TOKEN: &str = "cli-test-admin-token-0123456789";
/// The enrollment token servers and agents share (`DEPLOYBOT_ENROLLMENT_TOKEN`).
pub const ENROLLMENT_TOKEN: &str = "cli-test-enrollment-token-0123456789";

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
    // Text logs, which the helpers read (a piped stderr would get JSON;
    // tests/cli/logs.rs covers that).
    cmd.env("DEPLOYBOT_LOG_FORMAT", "text");
    // Authentication is on, as in production: servers and agents share these.
    cmd.env("DEPLOYBOT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("DEPLOYBOT_ENROLLMENT_TOKEN", ENROLLMENT_TOKEN);
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
    finish(child, &cmd)
}

/// Waits for `child` (its output piped) for at most [`DEADLINE`].
fn finish(child: Child, cmd: &Command) -> Finished {
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

// ---------------------------------------------------------------------------
// Controller + agent end to end: agents as child processes, deploy scripts,
// the SSE log stream, waiting for jobs, and the processes a deploy leaves.

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

/// `deploybot agent` in `dir` for `hostname`, talking to `controller`
/// (`http://127.0.0.1:PORT`), keeping its identity in `dir/agent-HOSTNAME`,
/// with short kill and shutdown graces and a long-poll of `poll_wait`.
pub fn agent_command(dir: &Path, controller: &str, hostname: &str, poll_wait: &str) -> Command {
    let state_dir = dir.join(format!("agent-{hostname}"));
    let mut cmd = deploybot(dir);
    cmd.args(["agent", "--controller", controller, "--hostname", hostname])
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--poll-wait", poll_wait])
        .args(["--kill-grace", "1s", "--shutdown-grace", "5s"]);
    cmd
}

/// A running `deploybot agent`, killed (SIGKILL) when dropped. A deploy it
/// is running is then orphaned: tests that may drop an agent mid-deploy
/// hold a [`GroupGuard`] for the deploy's process group.
pub struct AgentProcess {
    child: Child,
    pub pid: u32,
    /// Its stderr.
    pub log: Log,
    /// The id it registered under.
    pub id: String,
}

impl AgentProcess {
    /// Spawns `cmd` and waits for its `agent registered` line.
    pub fn start(mut cmd: Command) -> AgentProcess {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn deploybot agent");
        let log = Log::follow(child.stderr.take().expect("piped stderr"));
        let pid = child.id();
        let mut agent = AgentProcess {
            child,
            pid,
            log,
            id: String::new(),
        };
        let line = agent
            .log
            .wait_for(0, "agent registered", DEADLINE)
            .unwrap_or_else(|err| panic!("deploybot agent did not register: {err}"));
        agent.id = line
            .split("agent=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no agent id in {line:?}"))
            .to_owned();
        agent
    }

    /// `true` while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill9(&mut self) {
        send_signal(self.pid, "KILL");
        self.child.wait().expect("wait for the killed agent");
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes an executable `#!/bin/sh` script.
pub fn write_script(path: impl AsRef<Path>, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = path.as_ref();
    write(path, &format!("#!/bin/sh\n{body}"));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|err| panic!("chmod {}: {err}", path.display()));
}

/// Shell that waits (at most 30 s, so nothing outlives a failed test for
/// long) until the file `gate` exists: how a test holds a deploy mid-way.
pub fn wait_for_file_sh(gate: &Path) -> String {
    format!(
        "i=0\nwhile [ ! -e {gate:?} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done\n",
        gate = gate.display().to_string()
    )
}

/// A pid a deploy script wrote to `path` with `echo $$ > path`.
pub fn read_pid(path: impl AsRef<Path>) -> u32 {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|err| panic!("{}: {text:?}: {err}", path.display()))
}

/// `/proc/PID/stat`: the process's state letter and process group, or `None`
/// when there is no such process.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// The process exists and is not a zombie (dead, waiting to be reaped).
pub fn is_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

/// The live (not zombie) processes of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            proc_stat(pid)
                .is_some_and(|(state, pgrp)| pgrp == pgid && !matches!(state, 'Z' | 'X' | 'x'))
        })
        .collect()
}

/// Waits (at most `timeout`) until none of `pids` is alive and group `pgid`
/// is empty; `Err` names the survivors.
pub async fn wait_gone(pids: &[u32], pgid: u32, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
        let group = group_members(pgid);
        if alive.is_empty() && group.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "still alive after {timeout:?}: pids {alive:?}, process group {pgid}: {group:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs a deploy's process group when dropped, so a deploy the test
/// orphaned (or a failed test left running) does not outlive the test.
pub struct GroupGuard(pub u32);

impl GroupGuard {
    pub fn kill(&self) {
        // The group may be gone already: ignore the answer.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every file and directory under `dir` whose name contains `needle`.
pub fn find_named(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(needle) {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            }
        }
    }
    found
}

/// The port of `http://127.0.0.1:PORT`.
pub fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// An open `text/event-stream`, read chunk by chunk and split into events at
/// blank lines.
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    pub async fn open(api: &Api, path: &str) -> EventStream {
        let response = api
            .client
            .get(api.url(path))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "GET {path}: content type {content_type:?}"
        );
        EventStream {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event (comments such as keep-alives are skipped); `Err` when
    /// the stream ends or `deadline` passes first.
    pub async fn next(&mut self, deadline: tokio::time::Instant) -> Result<SseEvent, String> {
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(&String::from_utf8_lossy(&block)) {
                    return Ok(event);
                }
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return Err("timed out waiting for an event".to_owned()),
                Ok(Err(err)) => return Err(format!("reading the stream: {err}")),
                Ok(Ok(None)) => return Err("the stream ended".to_owned()),
                Ok(Ok(Some(chunk))) => {
                    self.buffer.extend(chunk.iter().filter(|&&b| b != b'\r'));
                }
            }
        }
    }
}

/// `None` for a block of comments only.
fn parse_event(block: &str) -> Option<SseEvent> {
    let mut event = String::new();
    let mut id = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_owned(),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if event.is_empty() && data.is_empty() {
        return None;
    }
    if event.is_empty() {
        event = "message".to_owned();
    }
    Some(SseEvent {
        event,
        id,
        data: data.join("\n"),
    })
}

/// `GET /v1/logs/stream?job_id=ID`, remembering every event seen, so a wait
/// for a line does not lose a status event read meanwhile and vice versa.
pub struct JobStream {
    pub job_id: String,
    events: EventStream,
    /// The `log` events so far, in stream order, with their SSE ids.
    pub lines: Vec<(Option<String>, LogEntry)>,
    /// The `status` events so far (`{job_id, status, exit_code, error, …}`).
    pub statuses: Vec<serde_json::Value>,
    /// How many lines had arrived when the first final status did.
    pub lines_at_final: Option<usize>,
}

impl JobStream {
    pub async fn open(api: &Api, job_id: &str) -> JobStream {
        JobStream {
            job_id: job_id.to_owned(),
            events: EventStream::open(api, &format!("/v1/logs/stream?job_id={job_id}")).await,
            lines: Vec::new(),
            statuses: Vec::new(),
            lines_at_final: None,
        }
    }

    /// Reads one more event into `lines` or `statuses`.
    async fn read_one(&mut self, deadline: tokio::time::Instant) -> Result<(), String> {
        let event = self.events.next(deadline).await?;
        match event.event.as_str() {
            "log" => {
                let entry: LogEntry = serde_json::from_str(&event.data)
                    .unwrap_or_else(|err| panic!("not a LogEntry: {err}: {}", event.data));
                assert_eq!(
                    entry.job_id, self.job_id,
                    "a line of another job: {entry:?}"
                );
                self.lines.push((event.id, entry));
            }
            "status" => {
                let status: serde_json::Value = serde_json::from_str(&event.data)
                    .unwrap_or_else(|err| panic!("not JSON: {err}: {}", event.data));
                assert_eq!(status["job_id"], self.job_id.as_str(), "{status}");
                if self.lines_at_final.is_none() && is_final(&status) {
                    self.lines_at_final = Some(self.lines.len());
                }
                self.statuses.push(status);
            }
            // Where the stream starts (a resume point before any line).
            "ready" => assert!(event.id.is_some(), "{event:?}"),
            other => panic!("unexpected event {other:?}: {event:?}"),
        }
        Ok(())
    }

    fn seen(&self) -> String {
        let lines: Vec<String> = self
            .lines
            .iter()
            .map(|(_, l)| format!("{} {} {}", l.line, l.stream.as_str(), l.text))
            .collect();
        format!(
            "lines:\n{}\nstatuses: {:?}",
            lines.join("\n"),
            self.statuses
        )
    }

    /// Waits (at most [`DEADLINE`]) for a log line whose text contains `needle`.
    pub async fn wait_for_line(&mut self, needle: &str) -> LogEntry {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some((_, entry)) = self.lines.iter().find(|(_, l)| l.text.contains(needle)) {
                return entry.clone();
            }
            if let Err(err) = self.read_one(deadline).await {
                panic!(
                    "job {}: no line containing {needle:?}: {err}\n{}",
                    self.job_id,
                    self.seen()
                );
            }
        }
    }

    /// Waits (at most [`DEADLINE`]) for a status event with a final status,
    /// and returns it.
    pub async fn wait_for_final(&mut self) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.statuses.iter().find(|s| is_final(s)) {
                return status.clone();
            }
            if let Err(err) = self.read_one(deadline).await {
                panic!(
                    "job {}: no final status event: {err}\n{}",
                    self.job_id,
                    self.seen()
                );
            }
        }
    }

    /// The texts of the lines of one stream, in order.
    pub fn texts(&self, stream: LogStream) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(_, l)| l.stream == stream)
            .map(|(_, l)| l.text.as_str())
            .collect()
    }
}

/// A `status` event with a final status.
fn is_final(status: &serde_json::Value) -> bool {
    status["status"]
        .as_str()
        .and_then(|s| s.parse::<JobStatus>().ok())
        .is_some_and(JobStatus::is_final)
}

impl Api {
    /// Polls `GET /v1/jobs/{id}` until `done` holds (at most [`DEADLINE`]).
    pub async fn wait_job(&self, id: &str, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let job = self.get_job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never became {what}: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `GET /v1/jobs/{id}` until it has `status`.
    pub async fn wait_status(&self, id: &str, status: JobStatus) -> Job {
        self.wait_job(id, status.as_str(), |job| job.status == status)
            .await
    }

    /// Polls `GET /v1/hosts` until `host` has agent `agent_id` and it is idle:
    /// the agent has heartbeated (and so is long-polling) since it registered.
    pub async fn wait_agent_idle(&self, host: &str, agent_id: &str) -> HostInfo {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let hosts = ok_json!(self.get("/v1/hosts").await, HostsResponse).hosts;
            let info = hosts.into_iter().find(|h| h.hostname == host);
            if let Some(info) = &info
                && info.agent_id.as_deref() == Some(agent_id)
                && info.agent_status == AgentStatus::Idle
            {
                return info.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{host}'s agent {agent_id} never became idle: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A push to `repo` that must queue exactly one job; returns its id.
    pub async fn push_one(
        &self,
        delivery_id: &str,
        repo: &str,
        git_ref: &str,
        sha: &str,
    ) -> String {
        let answer = self.push_repo(delivery_id, repo, git_ref, sha).await;
        assert_eq!(answer.verdict, DeliveryVerdict::Queued, "{answer:?}");
        assert_eq!(answer.jobs_created.len(), 1, "{answer:?}");
        answer.jobs_created[0].clone()
    }
}

/// One app of apps.yaml: `repo` deployed to `host` by running `script`
/// (absolute path, executed directly), in `workdir` when given. No
/// `branches` key: every branch deploys.
pub fn app_entry(
    name: &str,
    repo: &str,
    host: &str,
    script: &Path,
    workdir: Option<&Path>,
) -> String {
    let mut entry = format!(
        "  - name: {name}\n    repo: {repo}\n    hosts: [{host}]\n    deploy:\n      command: [{script:?}]\n",
        script = script.display().to_string()
    );
    if let Some(workdir) = workdir {
        entry.push_str(&format!(
            "      workdir: {:?}\n",
            workdir.display().to_string()
        ));
    }
    entry
}

/// Writes `dir/apps.yaml` with these [`app_entry`]s.
pub fn write_apps(dir: &Path, entries: &[String]) {
    write(
        dir.join("apps.yaml"),
        &format!("apps:\n{}", entries.concat()),
    );
}

/// A controller in `dir` (see [`controller_command`]) and an agent for
/// `web-01` with a long-poll of `poll_wait`. Blocks until both are up: call
/// it from `tokio::task::block_in_place` in async tests.
pub fn controller_and_agent(
    dir: &Path,
    lease_timeout: &str,
    poll_wait: &str,
) -> (Server, AgentProcess) {
    let server = Server::start(controller_command(dir, "127.0.0.1:0", lease_timeout));
    let agent = AgentProcess::start(agent_command(dir, &server.address, "web-01", poll_wait));
    (server, agent)
}

// ---------------------------------------------------------------------------
// The CLI as a client of a controller: `deploybot jobs`, `deploy --wait`, …

/// `deploybot` in `dir` as a client of the controller at `address`, with
/// the admin token in `DEPLOYBOT_TOKEN` and a config directory of its own
/// (`dir/config`), so that nobody's `~/.config/deploybot` is read.
pub fn client(dir: &Path, address: &str) -> Command {
    let mut cmd = deploybot(dir);
    cmd.env("DEPLOYBOT_URL", address)
        .env("DEPLOYBOT_TOKEN", ADMIN_TOKEN)
        .env("XDG_CONFIG_HOME", dir.join("config"));
    cmd
}

/// Runs `cmd` with `input` on its stdin, like [`run`].
pub fn run_with_stdin(mut cmd: Command, input: &str) -> Finished {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deploybot");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    finish(child, &cmd)
}

/// A running client command whose stdout and stderr are followed line by
/// line; killed when dropped.
pub struct Following {
    child: Child,
    pub pid: u32,
    pub stdout: Log,
    pub stderr: Log,
}

impl Following {
    pub fn spawn(mut cmd: Command) -> Following {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn deploybot");
        let stdout = Log::follow(child.stdout.take().expect("piped stdout"));
        let stderr = Log::follow(child.stderr.take().expect("piped stderr"));
        Following {
            pid: child.id(),
            child,
            stdout,
            stderr,
        }
    }

    /// Waits (at most [`DEADLINE`]) for the process to exit and for both of
    /// its outputs to be read to the end (each is read by its own thread,
    /// which may lag behind the exit).
    pub fn wait(&mut self) -> ExitStatus {
        assert!(
            self.stdout.wait_closed(DEADLINE) && self.stderr.wait_closed(DEADLINE),
            "still running after {DEADLINE:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.text(),
            self.stderr.text()
        );
        self.child.wait().expect("wait for deploybot")
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CLI output made stable for a snapshot: `dir` becomes `<dir>`; ids,
/// token ids, relative times, dates and durations become placeholders;
/// then the columns of each table (lines of cells two or more spaces
/// apart) are aligned again, since placeholders are not as wide as what
/// they replace.
pub fn normalize_output(text: &str, dir: &Path) -> String {
    let text = text.replace(&dir.display().to_string(), "<dir>");
    let mut out: Vec<String> = Vec::new();
    let mut table: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        let cells: Vec<String> = line
            .split("  ")
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .map(redact_cell)
            .collect();
        if cells.len() > 1 {
            table.push(cells);
        } else {
            align(&mut table, &mut out);
            out.push(redact_cell(line));
        }
    }
    align(&mut table, &mut out);
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn align(table: &mut Vec<Vec<String>>, out: &mut Vec<String>) {
    let mut widths: Vec<usize> = Vec::new();
    for row in table.iter() {
        for (i, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    for row in table.drain(..) {
        let last = row.len() - 1;
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == last {
                    cell.clone()
                } else {
                    format!("{cell:width$}", width = widths[i])
                }
            })
            .collect();
        out.push(line.join("  "));
    }
}

fn redact_cell(cell: &str) -> String {
    let cell = cell.replace("just now", "<ago>");
    let words: Vec<&str> = cell.split(' ').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words.get(i + 1) == Some(&"ago") && is_span(words[i]) {
            out.push("<ago>".to_owned());
            i += 2;
        } else {
            out.push(redact_word(words[i]));
            i += 1;
        }
    }
    out.join(" ")
}

fn redact_word(word: &str) -> String {
    let core = word
        .trim_start_matches('(')
        .trim_end_matches([')', ',', ':', '.']);
    let Some(start) = word.find(core).filter(|_| !core.is_empty()) else {
        return word.to_owned();
    };
    let (before, after) = (&word[..start], &word[start + core.len()..]);
    let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
    let replaced = if core.len() >= 8
        && hex(&core[..8])
        && (core.len() == 8 || core.as_bytes()[8] == b'-')
        && core.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    {
        "<id>"
    } else if core.len() == 16 && core.starts_with("tok_") && hex(&core[4..]) {
        "tok_<id>"
    } else if is_date(core) {
        "<date>"
    } else if is_clock(core) {
        "<time>"
    } else if is_took(core) {
        "<took>"
    } else {
        core
    };
    format!("{before}{replaced}{after}")
}

/// `45s`, `3m`, `5h`, `12d`.
fn is_span(word: &str) -> bool {
    word.len() >= 2
        && word[..word.len() - 1].chars().all(|c| c.is_ascii_digit())
        && word.ends_with(['s', 'm', 'h', 'd'])
}

/// `4s`, `2m13s`, `1h02m`.
fn is_took(word: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if let Some(rest) = word.strip_suffix('s') {
        return match rest.split_once('m') {
            Some((m, s)) => digits(m) && digits(s),
            None => digits(rest),
        };
    }
    if let Some(rest) = word.strip_suffix('m') {
        return rest
            .split_once('h')
            .is_some_and(|(h, m)| digits(h) && digits(m));
    }
    false
}

/// `2026-01-02`.
fn is_date(word: &str) -> bool {
    word.len() == 10
        && word.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// `03:04:05`.
fn is_clock(word: &str) -> bool {
    word.len() == 8
        && word.char_indices().all(|(i, c)| {
            if i == 2 || i == 5 {
                c == ':'
            } else {
                c.is_ascii_digit()
            }
        })
}

// ---------------------------------------------------------------------------
// PostgreSQL: a fresh database per test, on the server
// `DEPLOYBOT_TEST_POSTGRES_URL` names (default: this machine's, as
// `.ci/postgres.sh` sets it up), created and dropped with psql.

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

/// A database of its own, dropped at the end of the test.
pub struct Database {
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

impl Database {
    /// `None` when the PostgreSQL tests are switched off.
    pub fn create() -> Option<Database> {
        if std::env::var("DEPLOYBOT_TEST_POSTGRES").as_deref() == Ok("skip") {
            return None;
        }
        let admin_url = std::env::var("DEPLOYBOT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("deploybot_cli_{}_{nanos}", std::process::id());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let url = if query.is_empty() {
            format!("{server}/{name}")
        } else {
            format!("{server}/{name}?{query}")
        };
        Some(Database {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

pub fn psql(url: &str, sql: &str) {
    let status = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .status()
        .unwrap_or_else(|err| {
            panic!("psql: {err} (is PostgreSQL's client installed? see .ci/postgres.sh)")
        });
    assert!(status.success(), "psql {sql:?} failed against {url}");
}
