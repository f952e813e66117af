//! Running the binary: one-shot commands with a deadline, signals, and
//! a child's output followed line by line.

use super::*;

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

/// Runs `cmd` with its stdout a pipe whose reader has already gone, as in
/// `deploybot status | head -0`.
pub fn run_into_closed_pipe(mut cmd: Command) -> Finished {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let child = cmd
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deploybot");
    finish(child, &cmd)
}

/// Waits for `child` (its output piped) for at most [`DEADLINE`].
pub(crate) fn finish(child: Child, cmd: &Command) -> Finished {
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
    pub(crate) fn follow(pipe: impl Read + Send + 'static) -> Log {
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
