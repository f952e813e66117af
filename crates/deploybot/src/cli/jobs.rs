//! Jobs: `deploy`, `jobs`, `job`, `logs`, `cancel`, `retry`, and short job
//! ids.

use deploybot_wire::{
    AppInfo, AppsResponse, CreateJobRequest, Job, JobLogsResponse, JobResponse, JobStatus,
};

use super::client::{CliError, Client, Kind, Result};
use super::filters;
use super::output::{self, Cell, Paint, Style, Table};
use super::wait::{self, Lines};
use super::{Ctx, DeployArgs, JobsArgs, LogsArgs, RetryArgs};

/// Recent jobs searched for a short id: the API's largest page.
const SHORT_ID_SEARCH: &str = "1000";
/// Candidates named when a short id is ambiguous.
const MAX_CANDIDATES: usize = 10;

/// A full job id: a UUID in its usual 8-4-4-4-12 form.
fn is_full_id(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The job `given` names: a full id as it is, otherwise the one recent job
/// whose id starts with it (like git's short SHAs).
pub async fn resolve_job_id(client: &Client, given: &str) -> Result<String> {
    let given = given.trim().to_ascii_lowercase();
    if is_full_id(&given) {
        return Ok(given);
    }
    let not_found = || {
        CliError::new(Kind::NotFound, format!("job {given} not found")).with_hint(
            "`deploybot jobs` lists recent jobs; a short id is looked up among the newest 1000",
        )
    };
    if given.is_empty() {
        return Err(not_found());
    }
    let jobs: Vec<Job> = client
        .get(
            &["v1", "jobs"],
            &[("limit", Some(SHORT_ID_SEARCH.to_owned()))],
        )
        .await?;
    // The tail tables print, or the start of the id, as git takes a sha.
    let matching: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.id.ends_with(&given) || j.id.starts_with(&given))
        .collect();
    match matching.as_slice() {
        [] => Err(not_found()),
        [one] => Ok(one.id.clone()),
        many => {
            let now = output::now();
            let mut message = format!(
                "job id {given} is ambiguous: {} jobs start or end with it:",
                many.len()
            );
            for job in many.iter().take(MAX_CANDIDATES) {
                message.push_str(&format!(
                    "\n  {}  {}  {}  {}",
                    job.id,
                    output::escape_cell(&job.host),
                    job.status,
                    output::ago(job.created_at, now)
                ));
            }
            if many.len() > MAX_CANDIDATES {
                message.push_str(&format!("\n  … and {} more", many.len() - MAX_CANDIDATES));
            }
            Err(CliError::new(Kind::NotFound, message).with_hint("give more characters of the id"))
        }
    }
}

async fn find_app(client: &Client, name: &str) -> Result<AppInfo> {
    let apps: AppsResponse = client.get(&["v1", "apps"], &[]).await?;
    let names: Vec<String> = apps.apps.iter().map(|a| a.name.clone()).collect();
    apps.apps
        .into_iter()
        .find(|app| app.name == name)
        .ok_or_else(|| {
            CliError::new(Kind::NotFound, format!("no app named {name}")).with_hint(
                if names.is_empty() {
                    "the controller has no apps: see its apps.yaml".to_owned()
                } else {
                    format!("the apps are: {}", names.join(", "))
                },
            )
        })
}

pub async fn deploy(ctx: &Ctx, args: DeployArgs) -> Result<()> {
    // With --app, the app says the repository and hosts the flags leave out.
    let app = match &args.app {
        Some(name) if args.repo.is_none() || args.host.is_none() => {
            Some(find_app(&ctx.client, name).await?)
        }
        _ => None,
    };
    let repo = match (&args.repo, &app) {
        (Some(repo), _) => repo.clone(),
        (None, Some(app)) => app.repo.clone(),
        (None, None) => {
            return Err(CliError::new(Kind::Usage, "--repo is needed without --app"));
        }
    };
    let hosts = match (&args.host, &app) {
        (Some(host), _) => vec![host.clone()],
        (None, Some(app)) => app.hosts.clone(),
        (None, None) => {
            return Err(CliError::new(Kind::Usage, "--host or --app is needed"));
        }
    };
    let style = Style::stdout();
    let mut answers = Vec::new();
    for host in hosts {
        let request = CreateJobRequest {
            repo: repo.clone(),
            git_ref: args.git_ref.clone(),
            host,
            metadata: serde_json::Value::Null,
            sha: args.sha.clone(),
            app: args.app.clone(),
        };
        let answer: JobResponse = ctx.client.post(&["v1", "jobs"], Some(&request)).await?;
        if !ctx.json {
            // Said at once: if a later host fails, the jobs made are known.
            outln!("{}", queued_line(&answer, style));
            if let Some(reason) = &answer.job.pending_reason {
                outln!(
                    "{}",
                    style.paint(Paint::Yellow, &output::escape_cell(reason))
                );
            }
        }
        answers.push(answer);
    }
    let single = args.app.is_none() || args.host.is_some();
    if !args.wait {
        if ctx.json {
            print_answers(&answers, single);
        }
        return Ok(());
    }
    let jobs: Vec<Job> = answers.iter().map(|a| a.job.clone()).collect();
    let ended = wait_for(ctx, jobs).await?;
    if ctx.json {
        let ended: Vec<JobResponse> = answers
            .iter()
            .zip(&ended)
            .map(|(answer, job)| JobResponse {
                job: job.clone(),
                created: answer.created,
            })
            .collect();
        print_answers(&ended, single);
    }
    wait::bad_ends(&ended)
}

/// Follows `jobs` to their end (their output unless printing JSON); Ctrl-C
/// says how to cancel them.
async fn wait_for(ctx: &Ctx, jobs: Vec<Job>) -> Result<Vec<Job>> {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let lines = if ctx.json { Lines::Silent } else { Lines::Text };
    tokio::select! {
        biased;
        ended = wait::follow_jobs(&ctx.client, jobs, lines) => ended,
        _ = tokio::signal::ctrl_c() => Err(wait::interrupted(&ids)),
    }
}

/// One answer for one host, a list for an app's hosts.
fn print_answers(answers: &[JobResponse], single: bool) {
    match answers {
        [one] if single => output::print_json(one),
        all => output::print_json(&all),
    }
}

fn queued_line(answer: &JobResponse, style: Style) -> String {
    let job = &answer.job;
    let what = format!(
        "{} {}@{} on {}",
        output::escape_cell(&job.app),
        output::escape_cell(&job.repo),
        output::escape_cell(output::short_ref(&job.git_ref)),
        output::escape_cell(&job.host)
    );
    if answer.created == Some(false) {
        format!(
            "job {} is already {} for {what}: an identical job was open",
            job.id,
            style.paint(Paint::of_job(job.status), job.status.as_str())
        )
    } else {
        format!("queued job {} for {what}", job.id)
    }
}

pub async fn list(ctx: &Ctx, args: JobsArgs) -> Result<()> {
    let jobs: Vec<Job> = ctx
        .client
        .get(
            &["v1", "jobs"],
            &[
                ("status", args.status.map(|s| s.as_str().to_owned())),
                ("host", args.host.clone()),
                ("app", args.app.clone()),
                ("repo", args.repo),
                ("limit", Some(args.limit.to_string())),
            ],
        )
        .await?;
    // Nothing found: a name that does not exist says so (an app removed
    // from apps.yaml still lists its old jobs, so only when empty).
    if jobs.is_empty() {
        if let Some(app) = &args.app {
            filters::check_app(&ctx.client, app).await?;
        }
        if let Some(host) = &args.host {
            filters::check_host(&ctx.client, host).await?;
        }
    }
    if ctx.json {
        output::print_json(&jobs);
        return Ok(());
    }
    jobs_table(&jobs).print("no jobs");
    Ok(())
}

/// The jobs table: short ids unique among the rows.
pub fn jobs_table(jobs: &[Job]) -> Table {
    let now = output::now();
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let mut table = Table::new(&[
        "ID", "STATUS", "APP", "HOST", "REF", "SHA", "CREATED", "TOOK",
    ]);
    for (job, id) in jobs.iter().zip(output::short_ids(&ids)) {
        let took = match (job.started_at, job.completed_at) {
            (Some(started), Some(completed)) => output::took(started, completed),
            (Some(started), None) => format!("{}…", output::took(started, now)),
            _ => String::new(),
        };
        table.row(vec![
            Cell::new(id),
            Cell::painted(job.status.as_str(), Paint::of_job(job.status)),
            Cell::new(&job.app),
            Cell::new(&job.host),
            Cell::new(output::short_ref(&job.git_ref)),
            Cell::new(output::short_sha(job.sha.as_deref())),
            Cell::new(output::ago(job.created_at, now)),
            Cell::new(took),
        ]);
    }
    table
}

pub async fn show(ctx: &Ctx, given: &str) -> Result<()> {
    let id = resolve_job_id(&ctx.client, given).await?;
    let answer: JobResponse = ctx.client.get(&["v1", "jobs", &id], &[]).await?;
    if ctx.json {
        output::print_json(&answer);
        return Ok(());
    }
    let job = &answer.job;
    let now = output::now();
    let style = Style::stdout();
    let when = |at: Option<deploybot_wire::Timestamp>| {
        at.map_or_else(
            || "-".to_owned(),
            |at| format!("{} ({})", output::ago(at, now), output::timestamp(at)),
        )
    };
    let mut status = style.paint(Paint::of_job(job.status), job.status.as_str());
    if let Some(code) = job.exit_code {
        status.push_str(&format!(" (exit {code})"));
    }
    if job.cancel_requested && !job.status.is_final() {
        status.push_str(", cancel requested");
    }
    let mut fields = vec![
        ("job", job.id.clone()),
        ("status", status),
        ("app", output::escape_cell(&job.app)),
        ("repo", output::escape_cell(&job.repo)),
        ("ref", output::escape_cell(&job.git_ref)),
        (
            "sha",
            output::escape_cell(job.sha.as_deref().unwrap_or("-")),
        ),
        ("host", output::escape_cell(&job.host)),
        (
            "agent",
            job.assigned_agent.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "source",
            format!("{}, attempt {}", job.source.as_str(), job.attempt),
        ),
        ("created", when(Some(job.created_at))),
        ("started", when(job.started_at)),
        ("finished", when(job.completed_at)),
    ];
    if let (Some(started), Some(completed)) = (job.started_at, job.completed_at) {
        fields.push(("took", output::took(started, completed)));
    }
    if let Some(delivery) = &job.delivery_id {
        fields.push(("delivery", output::escape_cell(delivery)));
    }
    if let Some(of) = &job.retry_of {
        fields.push(("retry of", of.clone()));
    }
    if let Some(by) = &job.superseded_by {
        fields.push(("superseded by", by.clone()));
    }
    if let Some(error) = &job.error {
        fields.push(("error", output::escape_cell(error.trim_end())));
    }
    if let Some(reason) = &job.pending_reason {
        fields.push(("waiting", output::escape_cell(reason)));
    }
    let command: Vec<String> = job
        .deploy
        .command
        .iter()
        .map(|a| output::escape_cell(a))
        .collect();
    fields.push(("command", command.join(" ")));
    output::print_fields(&fields);
    Ok(())
}

pub async fn cancel(ctx: &Ctx, given: &str) -> Result<()> {
    let id = resolve_job_id(&ctx.client, given).await?;
    let answer: JobResponse = ctx
        .client
        .post::<(), _>(&["v1", "jobs", &id, "cancel"], None)
        .await?;
    if ctx.json {
        output::print_json(&answer);
        return Ok(());
    }
    let job = &answer.job;
    if job.status == JobStatus::Cancelled {
        outln!(
            "cancelled job {} on {}",
            job.id,
            output::escape_cell(&job.host)
        );
    } else {
        outln!(
            "asked the agent on {} to stop job {}; it reports `cancelled` once stopped",
            output::escape_cell(&job.host),
            job.id
        );
    }
    Ok(())
}

pub async fn retry(ctx: &Ctx, args: RetryArgs) -> Result<()> {
    let id = resolve_job_id(&ctx.client, &args.id).await?;
    let answer: JobResponse = ctx
        .client
        .post::<(), _>(&["v1", "jobs", &id, "retry"], None)
        .await?;
    if !ctx.json {
        let job = &answer.job;
        outln!(
            "queued job {} on {}: attempt {} of job {id}",
            job.id,
            output::escape_cell(&job.host),
            job.attempt
        );
    }
    if !args.wait {
        if ctx.json {
            output::print_json(&answer);
        }
        return Ok(());
    }
    let ended = wait_for(ctx, vec![answer.job.clone()]).await?;
    if ctx.json {
        for job in &ended {
            output::print_json(&JobResponse {
                job: job.clone(),
                created: answer.created,
            });
        }
    }
    wait::bad_ends(&ended)
}

pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    let job = match args.id.as_ref().or(args.job.as_ref()) {
        Some(given) => Some(resolve_job_id(&ctx.client, given).await?),
        None => None,
    };
    match (args.follow, job) {
        (false, Some(id)) => print_stored_logs(ctx, &id).await,
        (true, Some(id)) => {
            let answer: JobResponse = ctx.client.get(&["v1", "jobs", &id], &[]).await?;
            let lines = if ctx.json { Lines::Json } else { Lines::Text };
            // Following a job is reading its log to the end: a failed
            // deploy is not an error of `logs`.
            wait::follow_jobs(&ctx.client, vec![answer.job], lines).await?;
            Ok(())
        }
        (true, None) => {
            // A stream filtered on a name nobody uses would wait forever.
            if let Some(app) = &args.app {
                filters::check_app(&ctx.client, app).await?;
            }
            if let Some(host) = &args.host {
                filters::check_host(&ctx.client, host).await?;
            }
            let lines = if ctx.json { Lines::Json } else { Lines::Text };
            let query = vec![("host", args.host), ("app", args.app)];
            wait::follow_all(&ctx.client, query, lines).await
        }
        (false, None) => Err(CliError::new(Kind::Usage, "which job? `deploybot logs ID`")
            .with_hint("or follow every job live: `deploybot logs -f`")),
    }
}

/// Every stored line of a job, page by page.
async fn print_stored_logs(ctx: &Ctx, id: &str) -> Result<()> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page: JobLogsResponse = ctx
            .client
            .get(
                &["v1", "jobs", id, "logs"],
                &[("after", Some(after.to_string()))],
            )
            .await?;
        let last = page.lines.last().map(|l| l.line);
        if ctx.json {
            all.extend(page.lines);
        } else {
            let style = Style::stdout();
            for line in &page.lines {
                let text = output::escape_log(&line.text);
                match line.stream {
                    deploybot_wire::LogStream::Stdout => outln!("{text}"),
                    deploybot_wire::LogStream::Stderr => {
                        outln!("{}", style.paint(Paint::Yellow, &text));
                    }
                }
            }
        }
        match (page.next_after, last) {
            (Some(next), Some(_)) => after = next,
            _ => break,
        }
    }
    if ctx.json {
        output::print_json(&JobLogsResponse {
            job_id: id.to_owned(),
            lines: all,
            next_after: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ids_are_uuids() {
        assert!(is_full_id("01952c1e-1111-7aaa-8000-000000000001"));
        assert!(!is_full_id("01952c1e"));
        assert!(!is_full_id("01952c1e-1111-7aaa-8000-00000000000g"));
        assert!(!is_full_id("01952c1e11117aaa8000000000000000000001"));
    }
}
