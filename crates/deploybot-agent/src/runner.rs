//! Starting a deploy command and stopping its whole process group.
//!
//! The command is started directly (argv, no shell), so nothing from a push
//! (a branch name, a commit message) is ever parsed as shell syntax: the
//! job's fields reach the command only as `DEPLOYBOT_*` environment
//! variables. The child leads a new process group, so everything it starts
//! can be signalled at once: a deploy script's `sleep &` or a forgotten
//! server must not outlive a timeout or keep our output pipes open.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use deploybot_wire::{DeploySpec, Job, job_env, names};
use rustix::process::{Pid, Signal};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// What to run for a job: the controller's deploy spec, or the command the
/// agent's policy puts in its place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Launch<'a> {
    pub(crate) command: &'a [String],
    pub(crate) workdir: Option<&'a Path>,
    pub(crate) env: &'a BTreeMap<String, String>,
    /// The job's secret variables (none for a policy command, whose
    /// environment is the policy's alone).
    pub(crate) secrets: Option<&'a BTreeMap<String, String>>,
    pub(crate) from_policy: bool,
}

impl<'a> Launch<'a> {
    pub(crate) fn from_spec(deploy: &'a DeploySpec, secrets: &'a BTreeMap<String, String>) -> Self {
        Launch {
            command: &deploy.command,
            workdir: deploy.workdir.as_deref().map(Path::new),
            env: &deploy.env,
            secrets: Some(secrets),
            from_policy: false,
        }
    }
}

/// What a deploy command gets of the agent's own environment, besides the
/// policy's `inherit_env`: nothing else of it (the agent's tokens, a
/// `HOST_SECRET`, an `LD_PRELOAD` are no business of a deploy's).
pub(crate) const BASE_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "USER"];
/// `PATH` when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A started deploy command.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    /// The child's pid, which is also its process group id.
    pub(crate) pgid: i32,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
}

/// Starts `launch` for `job`, in a clean environment: [`BASE_ENV`] and
/// `inherit` from the agent's, then the launch's env and secrets, then the
/// job's `DEPLOYBOT_*` variables. The error is a sentence for the job's
/// report.
pub(crate) fn spawn(job: &Job, launch: &Launch<'_>, inherit: &[String]) -> Result<Spawned, String> {
    let Some((program, args)) = launch.command.split_first() else {
        return Err("the deploy command is empty".to_owned());
    };
    let mut command = Command::new(program);
    command.args(args).env_clear();
    for name in BASE_ENV
        .iter()
        .copied()
        .chain(inherit.iter().map(String::as_str))
    {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    if std::env::var_os("PATH").is_none() {
        command.env("PATH", DEFAULT_PATH);
    }
    command
        .envs(launch.env)
        .envs(launch.secrets.into_iter().flatten())
        // After the rest, so a job's configuration cannot fake them.
        .env(job_env::JOB_ID, &job.id)
        .env(job_env::APP, &job.app)
        .env(job_env::REPO, &job.repo)
        .env(job_env::REF, &job.git_ref)
        .env(job_env::REF_NAME, names::ref_name(&job.git_ref))
        .env(job_env::HOST, &job.host)
        .env(job_env::ATTEMPT, job.attempt.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Only a backstop should the job's task be dropped: normally the
        // group is killed explicitly.
        .kill_on_drop(true);
    // Never an empty value that looks like a commit: without a sha the
    // command deploys the ref as it finds it, and can tell.
    match &job.sha {
        Some(sha) => command.env(job_env::SHA, sha),
        None => command.env_remove(job_env::SHA),
    };
    if let Some(workdir) = launch.workdir {
        // Checked first: exec's ENOENT would blame the program instead.
        match std::fs::metadata(workdir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "cannot start {program}: working directory {} is not a directory",
                    workdir.display()
                ));
            }
            Err(err) => {
                return Err(format!(
                    "cannot start {program}: working directory {}: {}",
                    workdir.display(),
                    os_message(&err)
                ));
            }
        }
        command.current_dir(workdir);
    }
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot start {program}: {}", os_message(&err)))?;
    let pid = child.id().and_then(|pid| i32::try_from(pid).ok());
    let (Some(pgid), Some(stdout), Some(stderr)) = (pid, child.stdout.take(), child.stderr.take())
    else {
        // Not reachable with the settings above; the child dies with `child`.
        return Err(format!("cannot start {program}: no pid or pipes"));
    };
    Ok(Spawned {
        child,
        pgid,
        stdout,
        stderr,
    })
}

/// `No such file or directory` rather than `No such file or directory (os error 2)`.
fn os_message(err: &io::Error) -> String {
    let text = err.to_string();
    match err.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .unwrap_or(&text)
            .to_owned(),
        None => text,
    }
}

/// Sends `signal` to every process in the group. A group that is already
/// empty is not an error.
pub(crate) fn signal_group(pgid: i32, signal: libc::c_int) {
    // kill(0) would signal our own group and kill(-1) every process we may
    // signal: never let a bad pgid get there.
    if pgid <= 1 {
        tracing::error!(pgid, "refusing to signal a process group id <= 1");
        return;
    }
    let (Some(group), Some(sig)) = (Pid::from_raw(pgid), Signal::from_named_raw(signal)) else {
        tracing::error!(pgid, signal, "not a process group or signal");
        return;
    };
    match rustix::process::kill_process_group(group, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(err) => {
            tracing::warn!(pgid, signal, error = %err, "cannot signal the deploy's process group")
        }
    }
}

/// SIGTERM to the group, up to `grace` for the command to exit, then
/// SIGKILL. Returns the command's exit status.
pub(crate) async fn terminate(
    child: &mut Child,
    pgid: i32,
    grace: Duration,
) -> io::Result<ExitStatus> {
    signal_group(pgid, libc::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_elapsed) => {
            signal_group(pgid, libc::SIGKILL);
            child.wait().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_like_sentences() {
        let err = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(os_message(&err), "No such file or directory");
        assert_eq!(os_message(&io::Error::other("plain")), "plain");
    }
}
