//! Following jobs live: their output as it comes, a spinner while no agent
//! has picked them up, and one summary line per job at its end.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deploybot_wire::{Job, JobLogsResponse, JobResponse, JobStatus, LogEntry, LogStream};
use tokio::task::{JoinHandle, JoinSet};

use super::client::{CliError, Client, Kind, Result};
use super::output::{self, Paint, Style};
use super::sse::{Event, Follow, Notifier, status_job_id};

/// How often the spinner turns.
const SPIN: Duration = Duration::from_millis(100);
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// After this long, the spinner suggests checking the host's agent.
const SLOW_PICKUP: Duration = Duration::from_secs(10);
/// Lines per page when reading the rest of a finished job's output.
const PAGE: &str = "1000";

/// What happens to log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Escaped text for people.
    Text,
    /// One `LogEntry` JSON per line, for scripts.
    Json,
    /// Nothing (a `--wait` that prints JSON only at the end).
    Silent,
}

/// Everything a follow prints goes through here, so that the spinner on
/// stderr is cleared before a line and drawn again after.
#[derive(Clone)]
pub struct Printer {
    screen: Arc<Mutex<Screen>>,
    lines: Lines,
    /// Prefix lines with their host: several jobs interleave.
    prefix: bool,
}

struct Screen {
    out: Style,
    err: Style,
    /// stderr is a terminal: a spinner may be drawn there.
    spinner: bool,
    /// Jobs no agent has picked up yet: id → (host, since).
    waiting: BTreeMap<String, (String, Instant)>,
    drawn: bool,
    frame: usize,
}

impl Screen {
    fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }

    fn draw(&mut self) {
        if !self.spinner || self.waiting.is_empty() {
            self.clear();
            return;
        }
        let frame = FRAMES[self.frame % FRAMES.len()];
        self.frame += 1;
        let hosts: BTreeSet<&str> = self.waiting.values().map(|(h, _)| h.as_str()).collect();
        let hosts: Vec<&str> = hosts.into_iter().collect();
        let since = self
            .waiting
            .values()
            .map(|(_, since)| since.elapsed())
            .max()
            .unwrap_or_default();
        let what = if self.waiting.len() == 1 {
            "the job"
        } else {
            "the jobs"
        };
        let mut text = format!(
            "{frame} waiting for an agent to pick up {what} on {} ({}s",
            output::escape_cell(&hosts.join(", ")),
            since.as_secs()
        );
        if since >= SLOW_PICKUP {
            text.push_str("; is the host's agent running? see `deploybot hosts`");
        }
        text.push(')');
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{}", self.err.paint(Paint::Dim, &text));
        let _ = err.flush();
        self.drawn = true;
    }
}

/// Stops the spinner (and clears its line) when dropped.
pub struct Ticker {
    task: Option<JoinHandle<()>>,
    printer: Printer,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.printer.screen().clear();
    }
}

impl Printer {
    /// A printer, and the spinner's ticker (running only when stderr is a
    /// terminal).
    pub fn start(lines: Lines, prefix: bool) -> (Printer, Ticker) {
        let spinner = std::io::stderr().is_terminal();
        let printer = Printer {
            screen: Arc::new(Mutex::new(Screen {
                out: Style::stdout(),
                err: Style::stderr(),
                spinner,
                waiting: BTreeMap::new(),
                drawn: false,
                frame: 0,
            })),
            lines,
            prefix,
        };
        let task = spinner.then(|| {
            let printer = printer.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(SPIN);
                loop {
                    interval.tick().await;
                    printer.screen().draw();
                }
            })
        });
        let ticker = Ticker {
            task,
            printer: printer.clone(),
        };
        (printer, ticker)
    }

    fn screen(&self) -> MutexGuard<'_, Screen> {
        // A panic while printing leaves nothing half-updated worth refusing.
        self.screen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A line of deploy output.
    pub fn log(&self, entry: &LogEntry) {
        match self.lines {
            Lines::Silent => {}
            Lines::Json => {
                let _screen = self.screen_cleared();
                output::print_json_line(entry);
            }
            Lines::Text => {
                let mut screen = self.screen_cleared();
                let text = output::escape_log(&entry.text);
                let text = match entry.stream {
                    LogStream::Stdout => text,
                    LogStream::Stderr => screen.out.paint(Paint::Yellow, &text),
                };
                if self.prefix {
                    let host = output::escape_cell(&entry.host);
                    outln!(
                        "{} {text}",
                        screen.out.paint(Paint::Dim, &format!("{host} |"))
                    );
                } else {
                    outln!("{text}");
                }
                screen.draw();
            }
        }
    }

    /// A line for people on stdout (summaries, status changes).
    pub fn say(&self, text: &str) {
        if self.lines == Lines::Text {
            let mut screen = self.screen_cleared();
            outln!("{text}");
            screen.draw();
        }
    }

    /// A JSON document on its own line (status changes when following as JSON).
    pub fn json_line<T: serde::Serialize>(&self, value: &T) {
        if self.lines == Lines::Json {
            let _screen = self.screen_cleared();
            output::print_json_line(value);
        }
    }

    /// A notice on stderr (connection lost, back).
    pub fn note(&self, text: &str) {
        let mut screen = self.screen_cleared();
        eprintln!("{}", screen.err.paint(Paint::Dim, text));
        screen.draw();
    }

    pub fn notifier(&self) -> Notifier {
        let printer = self.clone();
        Arc::new(move |text: &str| printer.note(text))
    }

    fn screen_cleared(&self) -> MutexGuard<'_, Screen> {
        let mut screen = self.screen();
        screen.clear();
        screen
    }

    fn waiting(&self, job: &Job) {
        self.screen()
            .waiting
            .insert(job.id.clone(), (job.host.clone(), Instant::now()));
    }

    fn picked_up(&self, job_id: &str) {
        let mut screen = self.screen();
        if screen.waiting.remove(job_id).is_some() && screen.waiting.is_empty() {
            screen.clear();
        }
    }

    fn style(&self) -> Style {
        self.screen().out
    }
}

/// Follows `jobs` until every one has ended, printing their output as it
/// comes and a summary line for each; returns them as they ended, in the
/// order given.
pub async fn follow_jobs(client: &Client, jobs: Vec<Job>, lines: Lines) -> Result<Vec<Job>> {
    let (printer, _ticker) = Printer::start(lines, jobs.len() > 1);
    let count = jobs.len();
    let mut tasks = JoinSet::new();
    for (index, job) in jobs.into_iter().enumerate() {
        let client = client.clone();
        let printer = printer.clone();
        tasks.spawn(async move { (index, follow_one(&client, job, &printer).await) });
    }
    let mut ended: Vec<Option<Job>> = vec![None; count];
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined
            .map_err(|err| CliError::new(Kind::Failed, format!("following a job failed: {err}")))?;
        // The first failure ends the follow; dropping `tasks` stops the others.
        ended[index] = Some(result?);
    }
    Ok(ended.into_iter().flatten().collect())
}

/// How often a followed job is looked at for a silent agent.
const SILENCE_CHECK: Duration = Duration::from_secs(5);

/// Says when the agent of a followed job falls silent (it may have died:
/// the job is lost at the lease timeout), once per silence, and when a
/// pending job's reason to wait changes. Runs until aborted.
async fn watch_silence(client: Client, job: Job, printer: Printer) {
    let mut said_reason = job.pending_reason.clone();
    let mut silent = false;
    let mut interval = tokio::time::interval(SILENCE_CHECK);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Ok(current) = get_job(&client, &job.id).await else {
            continue;
        };
        let host = output::escape_cell(&current.host);
        match current.agent_silent_secs {
            Some(secs) if !silent => {
                printer.say(&printer.style().paint(
                    Paint::Yellow,
                    &format!(
                        "the agent of {host} has been silent for {secs}s; the job becomes lost if it stays silent past the lease timeout"
                    ),
                ));
                silent = true;
            }
            Some(_) => {}
            None => silent = false,
        }
        if current.pending_reason != said_reason
            && let Some(reason) = &current.pending_reason
        {
            printer.say(
                &printer
                    .style()
                    .paint(Paint::Yellow, &output::escape_cell(reason)),
            );
        }
        said_reason = current.pending_reason;
    }
}

/// One job's stream, from its first line to its final status.
async fn follow_one(client: &Client, job: Job, printer: &Printer) -> Result<Job> {
    if job.status == JobStatus::Pending {
        printer.waiting(&job);
    }
    let watcher = tokio::spawn(watch_silence(client.clone(), job.clone(), printer.clone()));
    let _stop_watching = AbortOnDrop(watcher);
    let mut stream = Follow::new(
        client.clone(),
        vec![("job_id", Some(job.id.clone()))],
        printer.notifier(),
    );
    let mut last_line = 0;
    loop {
        match stream.next().await? {
            Event::Log(entry) => {
                if entry.job_id == job.id && entry.line > last_line {
                    printer.picked_up(&job.id);
                    printer.log(&entry);
                    last_line = entry.line;
                }
            }
            Event::Status(_) => {
                let current = get_job(client, &job.id).await?;
                if current.status != JobStatus::Pending {
                    printer.picked_up(&job.id);
                }
                if current.status.is_final() {
                    // Lines committed before the final status that the
                    // stream has not delivered yet.
                    rest_of_log(client, &job.id, last_line, printer).await?;
                    printer.say(&summary(&current, printer.style()));
                    return Ok(current);
                }
            }
        }
    }
}

/// Aborts the task when dropped (the follow ended, or failed).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn get_job(client: &Client, id: &str) -> Result<Job> {
    let answer: JobResponse = client.get(&["v1", "jobs", id], &[]).await?;
    Ok(answer.job)
}

/// Prints the stored lines of `job_id` after line `after`.
async fn rest_of_log(
    client: &Client,
    job_id: &str,
    mut after: u64,
    printer: &Printer,
) -> Result<()> {
    loop {
        let page: JobLogsResponse = client
            .get(
                &["v1", "jobs", job_id, "logs"],
                &[
                    ("after", Some(after.to_string())),
                    ("limit", Some(PAGE.to_owned())),
                ],
            )
            .await?;
        for entry in &page.lines {
            if entry.line > after {
                printer.log(entry);
                after = entry.line;
            }
        }
        if page.next_after.is_none() || page.lines.is_empty() {
            return Ok(());
        }
    }
}

/// `web-01: failed after 3s (exit 1), job 0195…: the last output line`.
pub fn summary(job: &Job, style: Style) -> String {
    let took = match (job.started_at, job.completed_at) {
        (Some(started), Some(completed)) => format!(" after {}", output::took(started, completed)),
        _ => String::new(),
    };
    let exit = job
        .exit_code
        .map(|code| format!(" (exit {code})"))
        .unwrap_or_default();
    let why = match job.status {
        JobStatus::Success => String::new(),
        JobStatus::Superseded => match &job.superseded_by {
            Some(by) => format!(": superseded by job {by}"),
            None => String::new(),
        },
        // With an exit code, `error` is the output's tail, shown already.
        _ if job.exit_code.is_some() => String::new(),
        _ => job
            .error
            .as_deref()
            .and_then(|error| error.lines().map(str::trim).find(|l| !l.is_empty()))
            .map(|line| format!(": {}", output::escape_cell(line)))
            .unwrap_or_default(),
    };
    format!(
        "{}: {}{took}{exit}, job {}{why}",
        output::escape_cell(&job.host),
        style.paint(Paint::of_job(job.status), job.status.as_str()),
        job.id
    )
}

/// The error a follow that ended badly returns: exit 1, naming the jobs.
pub fn bad_ends(jobs: &[Job]) -> Result<()> {
    let bad: Vec<String> = jobs
        .iter()
        .filter(|job| job.status != JobStatus::Success)
        .map(|job| format!("{} {}", output::escape_cell(&job.host), job.status))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let message = if jobs.len() == 1 {
        format!(
            "the deploy to {} {}",
            output::escape_cell(&jobs[0].host),
            outcome(jobs[0].status)
        )
    } else {
        format!(
            "{} of {} jobs did not succeed: {}",
            bad.len(),
            jobs.len(),
            bad.join(", ")
        )
    };
    let first_bad = jobs.iter().find(|job| job.status != JobStatus::Success);
    let hint = match first_bad {
        Some(job) => format!(
            "`deploybot logs {id}` shows its output; `deploybot retry {id}` runs it again",
            id = job.id
        ),
        None => String::new(),
    };
    Err(CliError::new(Kind::Failed, message).with_hint(hint))
}

/// How a job that did not succeed ended, as the end of a sentence.
fn outcome(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "was cancelled",
        JobStatus::Lost => "was lost (its agent went silent)",
        JobStatus::Superseded => "was superseded by a newer one",
        JobStatus::Success => "succeeded",
        JobStatus::Pending | JobStatus::Running => "has not ended",
    }
}

/// `logs -f` without a job: every line of the matching jobs, and their
/// status changes, until Ctrl-C.
pub async fn follow_all(
    client: &Client,
    query: Vec<(&'static str, Option<String>)>,
    lines: Lines,
) -> Result<()> {
    let (printer, _ticker) = Printer::start(lines, true);
    let mut stream = Follow::new(client.clone(), query, printer.notifier());
    loop {
        match stream.next().await? {
            Event::Log(entry) => printer.log(&entry),
            Event::Status(data) => {
                let Some(id) = status_job_id(&data) else {
                    continue;
                };
                let job = match get_job(client, &id).await {
                    Ok(job) => job,
                    // Gone already (pruned): nothing to say about it.
                    Err(err) if err.kind == Kind::NotFound => continue,
                    Err(err) => return Err(err),
                };
                let style = printer.style();
                if job.status.is_final() {
                    printer.say(&summary(&job, style));
                } else {
                    printer.say(&format!(
                        "{}: {} {} ({} {}), job {}",
                        output::escape_cell(&job.host),
                        style.paint(Paint::of_job(job.status), job.status.as_str()),
                        output::escape_cell(&job.app),
                        output::escape_cell(&job.repo),
                        output::escape_cell(&job.git_ref),
                        job.id
                    ));
                }
                printer.json_line(&JobResponse { job, created: None });
            }
        }
    }
}

/// Ctrl-C during a wait: the jobs go on without us; say how to stop them.
pub fn interrupted(jobs: &[String]) -> CliError {
    let hint = match jobs {
        [one] => format!("the job goes on; `deploybot cancel {one}` stops it"),
        _ => "the jobs go on; `deploybot cancel ID` stops one".to_owned(),
    };
    CliError::new(Kind::Interrupted, "interrupted").with_hint(hint)
}
