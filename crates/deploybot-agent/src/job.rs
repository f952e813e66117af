//! One job, from hand-out to report, in its own task.
//!
//! The heartbeat loop keeps running beside it (that is what keeps the lease
//! alive) and talks to it only through [`RunningJob::stop`].

use std::collections::BTreeMap;
use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use deploybot_wire::{Job, JobStatus, LogStream, Timestamp};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{Client, Token, TraceParent};
use crate::orphans;
use crate::output::{self, RawLine};
use crate::policy::Policy;
use crate::redact::Redactor;
use crate::report::{Outcome, exited, human, report, with_tail};
use crate::runner::{self, Launch, Spawned};
use crate::uploader::{Delivery, Uploader};

/// After the command and its group are gone, how long to wait for the output
/// pipes to close. Only a process that left the group (`setsid`) can hold
/// them longer; we stop reading rather than hang.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines in flight between the pipe readers and the collector.
const LINE_CHANNEL: usize = 1024;

/// Why the agent stops a job that is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The controller listed the job in a heartbeat's `cancel`.
    Cancel,
    /// The agent is shutting down and the grace period is over.
    Shutdown,
}

/// What every job of this agent shares.
#[derive(Debug, Clone)]
pub(crate) struct JobSettings {
    pub(crate) client: Client,
    /// Where running deploys are recorded (see `orphans`).
    pub(crate) state_dir: std::path::PathBuf,
    pub(crate) agent_id: String,
    pub(crate) kill_grace: Duration,
    /// `None`: every job runs its controller's deploy spec.
    pub(crate) policy: Option<Arc<Policy>>,
    /// Only to hide it in the output, should a deploy print it.
    pub(crate) enrollment_token: Option<Token>,
    /// Variables of the agent's own environment that deploy commands get
    /// too (the policy's `inherit_env`), besides `PATH`, `HOME`, `LANG` and
    /// `USER`.
    pub(crate) inherit_env: Arc<[String]>,
}

/// A job running in its own task.
pub(crate) struct RunningJob {
    pub(crate) id: String,
    stop: watch::Sender<Option<StopReason>>,
    task: JoinHandle<()>,
}

impl RunningJob {
    /// Starts `job` with the `secrets` its hand-out brought.
    pub(crate) fn start(
        settings: JobSettings,
        job: Job,
        secrets: BTreeMap<String, String>,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(None);
        let id = job.id.clone();
        let task = tokio::spawn(run(settings, job, secrets, stop_rx));
        RunningJob { id, stop, task }
    }

    /// Asks the job to stop; the first reason given wins. `false` when it
    /// had been asked already.
    pub(crate) fn stop(&self, reason: StopReason) -> bool {
        self.stop.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        })
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the job is reported (or dropped). Call it once: the job
    /// is spent afterwards.
    pub(crate) async fn finished(&mut self) {
        if let Err(err) = (&mut self.task).await {
            tracing::error!(job = %self.id, error = %err, "the job's task failed");
        }
    }
}

#[tracing::instrument(name = "job", skip_all, fields(job = %job.id, app = %job.app))]
async fn run(
    settings: JobSettings,
    job: Job,
    secrets: BTreeMap<String, String>,
    mut stop: watch::Receiver<Option<StopReason>>,
) {
    let launch = match &settings.policy {
        Some(policy) => policy.launch(&job, &secrets),
        None => Ok(Launch::from_spec(&job.deploy, &secrets)),
    };
    // The controller's env too, although a policy command does not get it:
    // hiding a value too many is harmless. The job's secrets and the
    // agent's own tokens are hidden by value, whatever their names.
    let env = launch.iter().flat_map(|l| l.env).chain(&job.deploy.env);
    let own_tokens = settings
        .client
        .token()
        .into_iter()
        .chain(settings.enrollment_token.clone())
        .map(|token| token.expose().to_owned());
    let redactor =
        Redactor::from_env_and(env).with_secrets(own_tokens.chain(secrets.values().cloned()));
    let traceparent = TraceParent::of(&job);
    let mut uploader = Uploader::start(
        settings.client.clone(),
        job.id.clone(),
        job.lease,
        settings.agent_id.clone(),
        traceparent.clone(),
    );
    let started = match &launch {
        Ok(launch) => {
            tracing::info!(command = ?launch.command, from_policy = launch.from_policy, "deploy starting");
            runner::spawn(&job, launch, &settings.inherit_env)
        }
        Err(refusal) => {
            tracing::warn!(reason = %refusal, "not running the job");
            Err(refusal.clone())
        }
    };
    let outcome = match started {
        Ok(spawned) => {
            supervise(spawned, &job, &settings, redactor, &mut uploader, &mut stop).await
        }
        Err(message) => {
            let message = redactor.redact(&message);
            // Also in the log, so someone reading only the output sees why.
            uploader.sink().push(RawLine {
                stream: LogStream::Stderr,
                at: Timestamp::now_utc(),
                text: format!("[deploybot agent] {message}"),
            });
            Some(Outcome::failed(None, message))
        }
    };
    // The report comes after the last line is stored, so whoever sees the
    // final status can read the whole log.
    let delivery = uploader.finish().await;
    match outcome {
        Some(outcome) if delivery == Delivery::Complete => {
            report(&settings, &job.id, job.lease, traceparent.as_ref(), outcome).await;
        }
        _ => tracing::warn!("the controller took the job away; not reporting it"),
    }
}

enum Ending {
    Exited(io::Result<ExitStatus>),
    TimedOut,
    Stopped(StopReason),
    LeaseLost,
}

/// Runs the started command to its end; `None` when the job was taken away.
async fn supervise(
    spawned: Spawned,
    job: &Job,
    settings: &JobSettings,
    redactor: Redactor,
    uploader: &mut Uploader,
    stop: &mut watch::Receiver<Option<StopReason>>,
) -> Option<Outcome> {
    let Spawned {
        mut child,
        pgid,
        stdout,
        stderr,
    } = spawned;
    // Until the group is gone: should the agent be killed meanwhile, its
    // next start kills what is left (see `orphans`).
    let recorded = orphans::record(
        &settings.state_dir,
        &job.id,
        pgid,
        job.lease,
        &settings.agent_id,
    );
    let (tx, rx) = mpsc::channel(LINE_CHANNEL);
    let mut readers = JoinSet::new();
    let secret_len = redactor.longest();
    readers.spawn(output::read_lines(
        stdout,
        LogStream::Stdout,
        secret_len,
        tx.clone(),
    ));
    readers.spawn(output::read_lines(
        stderr,
        LogStream::Stderr,
        secret_len,
        tx,
    ));
    let collector = tokio::spawn(output::collect(rx, redactor, uploader.sink()));

    let timeout = Duration::from_secs(job.deploy.timeout_secs);
    let ending = tokio::select! {
        status = child.wait() => Ending::Exited(status),
        () = tokio::time::sleep(timeout) => Ending::TimedOut,
        reason = stop_requested(stop) => Ending::Stopped(reason),
        () = uploader.lease_lost() => Ending::LeaseLost,
    };
    let status = match &ending {
        Ending::Exited(_) => None,
        _ => Some(runner::terminate(&mut child, pgid, settings.kill_grace).await),
    };
    // Whatever the command left behind in its group would otherwise hold
    // our pipes open (and run on, unsupervised).
    runner::signal_group(pgid, libc::SIGKILL);
    drop(recorded);
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while readers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("output pipes still open after the deploy ended; stopped reading them");
        readers.shutdown().await;
    }
    let tail = collector.await.unwrap_or_default();

    let code = |status: &Option<io::Result<ExitStatus>>| {
        status
            .as_ref()
            .and_then(|s| s.as_ref().ok())
            .and_then(ExitStatus::code)
    };
    let outcome = match ending {
        Ending::Exited(Ok(status)) => exited(status, &tail),
        Ending::Exited(Err(err)) => Outcome::failed(
            None,
            with_tail(format!("cannot wait for the deploy command: {err}"), &tail),
        ),
        Ending::TimedOut => Outcome::failed(
            code(&status),
            with_tail(format!("timed out after {}", human(timeout)), &tail),
        ),
        Ending::Stopped(StopReason::Cancel) => Outcome {
            status: JobStatus::Cancelled,
            exit_code: code(&status),
            error: None,
        },
        Ending::Stopped(StopReason::Shutdown) => Outcome::failed(
            code(&status),
            with_tail("agent shut down".to_owned(), &tail),
        ),
        Ending::LeaseLost => return None,
    };
    Some(outcome)
}

async fn stop_requested(stop: &mut watch::Receiver<Option<StopReason>>) -> StopReason {
    match stop.wait_for(Option::is_some).await {
        Ok(reason) => reason.unwrap_or(StopReason::Shutdown),
        // The agent loop is gone: nobody will heartbeat for this job.
        Err(_) => StopReason::Shutdown,
    }
}
