//! Shared by the agent's integration tests: a fake controller, the real
//! agent on a tokio task, deploy scripts in a temp dir.
#![allow(dead_code)] // each test binary uses part of it

pub mod fake;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use deploybot_agent::{AgentConfig, AgentError};
use deploybot_wire::{DeploySpec, Job, JobSource, JobStatus};
use tempfile::TempDir;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

pub use fake::Fake;

pub const HOST: &str = "web-01";
pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// The real agent, running until `stop`.
pub struct TestAgent {
    /// The agent's state directory (holding `agent.json`).
    pub state_dir: PathBuf,
    /// Removes the state directory with the agent, if the test did not give one.
    _temp: Option<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AgentError>>,
}

/// The config [`start_agent`] starts with: short waits and graces.
pub fn test_config(fake: &Fake, state_dir: &Path) -> AgentConfig {
    let mut config = AgentConfig::new(fake.url.clone(), HOST, state_dir);
    config.capabilities = vec!["sh".into()];
    config.poll_wait = Duration::from_secs(2);
    config.kill_grace = Duration::from_millis(200);
    config.shutdown_grace = Duration::from_secs(30);
    config
}

/// Starts an agent for [`HOST`] against `fake`, with short waits and graces
/// (each test may change them in `tweak`), in a state directory of its own.
pub fn start_agent(fake: &Fake, tweak: impl FnOnce(&mut AgentConfig)) -> TestAgent {
    let temp = tempfile::tempdir().expect("state dir");
    let mut agent = start_agent_in(fake, &temp.path().join("state"), tweak);
    agent._temp = Some(temp);
    agent
}

/// Like [`start_agent`], in `state_dir` (which outlives the agent: a
/// restarted agent finds what the previous one saved).
pub fn start_agent_in(
    fake: &Fake,
    state_dir: &Path,
    tweak: impl FnOnce(&mut AgentConfig),
) -> TestAgent {
    let mut config = test_config(fake, state_dir);
    tweak(&mut config);
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(deploybot_agent::run(config, async move {
        // A dropped sender (a failed test) shuts the agent down too.
        let _ = shutdown_rx.await;
    }));
    TestAgent {
        state_dir: state_dir.to_owned(),
        _temp: None,
        shutdown: Some(shutdown),
        task,
    }
}

/// Everything logged (at every level, by every crate) on this thread while
/// the guard of [`capture_logs`] lives. `#[tokio::test]` runs the agent, its
/// jobs and the fake on the test's thread, so that is all of it.
#[derive(Clone, Default)]
pub struct Logs(Arc<LogsInner>);

#[derive(Default)]
struct LogsInner {
    text: Mutex<Vec<u8>>,
    written: Notify,
}

impl Logs {
    pub fn text(&self) -> String {
        let bytes = self.0.text.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until `needle` was logged; panics after 30 s.
    pub async fn wait_for(&self, needle: &str) {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let written = self.0.written.notified();
                tokio::pin!(written);
                // Armed before the check, so no write in between is missed.
                written.as_mut().enable();
                if self.text().contains(needle) {
                    return;
                }
                written.await;
            }
        })
        .await;
        assert!(found.is_ok(), "{needle:?} was not logged: {}", self.text());
    }

    fn append(&self, buf: &[u8]) {
        self.0
            .text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        self.0.written.notify_waiters();
    }
}

thread_local! {
    static CAPTURING: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// Writes to the logs of the current thread's capture, if any.
struct ThreadWriter;

impl io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        CAPTURING.with(|capturing| {
            if let Some(logs) = &*capturing.borrow() {
                logs.append(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURING.with(|capturing| capturing.borrow_mut().take());
    }
}

/// Captures this thread's logs until the guard is dropped.
///
/// One global subscriber routes events to the capture of the thread they
/// happen on: a thread-scoped subscriber (`set_default`) can miss events
/// while other tests run, as tracing caches per call site whether anyone
/// is interested.
pub fn capture_logs() -> (Logs, CaptureGuard) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| ThreadWriter)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    let logs = Logs::default();
    CAPTURING.with(|capturing| *capturing.borrow_mut() = Some(logs.clone()));
    (logs, CaptureGuard)
}

impl TestAgent {
    /// Resolves the shutdown future and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), AgentError> {
        self.begin_shutdown();
        self.finished().await
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits (at most 30 s) for `run` to return.
    pub async fn finished(self) -> Result<(), AgentError> {
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the agent did not stop within 30 s")
            .expect("the agent task panicked")
    }
}

/// A job for [`HOST`] running `command`, with a 60 s timeout.
pub fn job(id: &str, command: Vec<String>) -> Job {
    Job {
        id: id.to_owned(),
        repo: "acme/web".into(),
        git_ref: "main".into(),
        host: HOST.into(),
        status: JobStatus::Running,
        metadata: serde_json::json!({}),
        created_at: time::OffsetDateTime::now_utc(),
        started_at: None,
        completed_at: None,
        assigned_agent: None,
        error: None,
        app: "web".into(),
        sha: Some(SHA.into()),
        exit_code: None,
        attempt: 1,
        source: JobSource::Webhook,
        delivery_id: None,
        superseded_by: None,
        deploy: DeploySpec {
            command,
            workdir: None,
            env: BTreeMap::new(),
            timeout_secs: 60,
        },
        lease: None,
        cancel_requested: false,
        pending_reason: None,
        agent_silent_secs: None,
        retry_of: None,
        traceparent: None,
    }
}

/// Writes `body` to `dir/name` as a shell script and returns the argv that
/// runs it with `sh` (exec'ing a file just written races with other tests'
/// forks, which can hold it open for writing: ETXTBSY).
pub fn script(dir: &Path, name: &str, body: &str) -> Vec<String> {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, format!("set -u\n{body}\n")).expect("write script");
    vec!["sh".into(), path.display().to_string()]
}

/// The pgid a script printed as `pgid $$` (the script is its group's leader).
pub fn pgid_in(texts: &[String]) -> i32 {
    texts
        .iter()
        .find_map(|t| t.strip_prefix("pgid "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a `pgid N` line")
}

/// Waits until no process of the group is left.
///
/// Polls, because nothing announces it: the group's orphans (a script's
/// `sleep &`) are reaped by init at its own pace and count as members until
/// then, even when killed.
pub async fn wait_group_gone(pgid: i32) {
    assert!(pgid > 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // SAFETY: signal 0 only checks for existence.
        let rc = unsafe { libc::kill(-pgid, 0) };
        if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "process group {pgid} still has processes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
