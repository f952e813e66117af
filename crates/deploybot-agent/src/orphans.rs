//! Deploys that a previous run of this agent left running.
//!
//! A deploy command leads its own process group, so a SIGKILLed (or
//! crashed) agent leaves it running, re-parented to init, changing the host
//! while nobody watches or reports. Each started deploy is recorded in
//! `state_dir/running/<job id>.json` until its group is gone; on its next
//! start the agent kills what is left of each recorded group and reports the
//! job failed, before it registers and takes new work.
//!
//! A group is killed only when it is certainly the deploy's: recorded since
//! the machine last booted, and with a member that still carries the job's
//! `DEPLOYBOT_JOB_ID` (a pgid cannot be reused while any process has it).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deploybot_wire::job_env;
use serde::{Deserialize, Serialize};

use crate::runner;

const DIR_NAME: &str = "running";
/// How long the killed group's processes may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A started deploy, as recorded while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) job_id: String,
    pub(crate) pgid: i32,
    /// What the job's report must carry.
    pub(crate) lease: Option<i64>,
    pub(crate) agent_id: String,
    /// `/proc/sys/kernel/random/boot_id` when it started.
    pub(crate) boot_id: String,
}

/// A deploy of a previous run, after [`stop_leftovers`].
#[derive(Debug)]
pub(crate) struct Leftover {
    pub(crate) record: Record,
    /// Whether processes of it were still running (and were killed).
    pub(crate) killed: bool,
}

impl Leftover {
    /// The job's error, for its report.
    pub(crate) fn error(&self) -> String {
        let what = "the agent stopped (killed or crashed) while this deploy was running";
        if self.killed {
            format!(
                "{what}; when it started again it killed what was left of the deploy (process group {})",
                self.record.pgid
            )
        } else {
            format!(
                "{what}; its processes had ended by the agent's restart, so its outcome is unknown"
            )
        }
    }
}

/// Removes the record when dropped: hold it until the deploy's process
/// group is gone.
#[derive(Debug)]
pub(crate) struct Recorded(Option<PathBuf>);

impl Drop for Recorded {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(err) = fs::remove_file(&path)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %err, "cannot remove the record of a finished deploy");
        }
    }
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR_NAME)
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// Records a started deploy. A failure is logged, not fatal: the deploy
/// runs either way, only a kill -9 of the agent would then leave it behind.
pub(crate) fn record(
    state_dir: &Path,
    job_id: &str,
    pgid: i32,
    lease: Option<i64>,
    agent_id: &str,
) -> Recorded {
    let record = Record {
        job_id: job_id.to_owned(),
        pgid,
        lease,
        agent_id: agent_id.to_owned(),
        boot_id: boot_id(),
    };
    match write(state_dir, &record) {
        Ok(path) => Recorded(Some(path)),
        Err(err) => {
            tracing::warn!(error = %err, "cannot record the running deploy in the state directory");
            Recorded(None)
        }
    }
}

fn write(state_dir: &Path, record: &Record) -> io::Result<PathBuf> {
    let dir = dir(state_dir);
    DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    // Job ids are UUIDs; anything else would not name a file of ours.
    if !record
        .job_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(io::Error::other("unexpected job id"));
    }
    let path = dir.join(format!("{}.json", record.job_id));
    let temp = dir.join(format!(".{}.tmp", record.job_id));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)?;
    drop(file);
    // Whole or absent, even if the agent is killed right now.
    fs::rename(&temp, &path)?;
    Ok(path)
}

/// Kills what is left of every recorded deploy and forgets the records.
/// Call it while holding the state directory's lock, before registering.
pub(crate) fn stop_leftovers(state_dir: &Path) -> Vec<Leftover> {
    let entries = match fs::read_dir(dir(state_dir)) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the records of running deploys");
            return Vec::new();
        }
    };
    let booted = boot_id();
    let mut leftovers = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let parsed = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok());
        if let Some(record) = parsed {
            let same_boot = !booted.is_empty() && record.boot_id == booted;
            let killed = same_boot && kill_group(&record);
            leftovers.push(Leftover { record, killed });
        }
        if let Err(err) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %err, "cannot remove a deploy record");
        }
    }
    leftovers
}

/// SIGKILLs the record's group if it is still the deploy's, and waits for
/// it to be gone. Whether anything was killed.
fn kill_group(record: &Record) -> bool {
    let members = group_members(record.pgid);
    let marker = format!("{}={}", job_env::JOB_ID, record.job_id);
    if !members.iter().any(|&pid| carries(pid, &marker)) {
        return false;
    }
    tracing::warn!(job = %record.job_id, pgid = record.pgid, processes = members.len(),
        "a deploy of the agent's previous run is still running; killing it");
    runner::signal_group(record.pgid, libc::SIGKILL);
    let deadline = Instant::now() + KILL_WAIT;
    while !group_members(record.pgid).is_empty() {
        if Instant::now() > deadline {
            tracing::warn!(
                pgid = record.pgid,
                "the killed deploy's processes are still there"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Live (not zombie) processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, group)| group == pgid && state != 'Z')
        })
        .collect()
}

/// The state and process group of a `/proc/PID/stat` line. The command
/// name, in parentheses, may hold spaces and parentheses itself.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Whether `pid`'s environment holds `marker` (`NAME=value`).
fn carries(pid: u32, marker: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == marker.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        assert_eq!(parse_stat("42 (sleep) S 1 42 42 0"), Some(('S', 42)));
        assert_eq!(parse_stat("43 (a) b (c) Z 1 40 40 0"), Some(('Z', 40)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_record_is_removed_with_its_guard_and_read_back_when_left() {
        let dir = tempfile::tempdir().unwrap();
        let job = "0190aaaa-0000-7000-8000-000000000001";
        let guard = record(dir.path(), job, 999_999, Some(5), "agent-1");
        assert!(
            dir.path()
                .join("running")
                .join(format!("{job}.json"))
                .exists()
        );
        drop(guard);
        assert!(stop_leftovers(dir.path()).is_empty());

        // Left behind (the agent was killed): read back, nothing to kill
        // (no process carries the job's id), and forgotten.
        std::mem::forget(record(dir.path(), job, 999_999, Some(5), "agent-1"));
        let leftovers = stop_leftovers(dir.path());
        assert_eq!(leftovers.len(), 1);
        assert_eq!(leftovers[0].record.job_id, job);
        assert_eq!(leftovers[0].record.lease, Some(5));
        assert!(!leftovers[0].killed);
        assert!(leftovers[0].error().contains("outcome is unknown"));
        assert!(stop_leftovers(dir.path()).is_empty());
    }
}
