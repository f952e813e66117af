//! Agents as child processes, the deploy scripts they run, and the
//! processes a deploy leaves.

use super::*;

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
