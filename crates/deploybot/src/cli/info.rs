//! What the controller knows: `status`, `hosts`, `agents`, `apps`,
//! `deliveries`, `explain`.

use deploybot_wire::{
    Agent, AppsResponse, Delivery, DeliveryVerdict, ExplainResponse, HostInfo, HostsResponse, Job,
    StatusResponse,
};

use super::client::{Client, Result};
use super::output::{self, Cell, Paint, Table};
use super::{Ctx, ExplainArgs};

/// `0195ab3f success`: a job in one cell, its id as short as `ids` allow.
fn job_cell(job: Option<&Job>, ids: &[&str], short: &[String]) -> Cell {
    let Some(job) = job else {
        return Cell::none();
    };
    let id = ids
        .iter()
        .position(|id| *id == job.id)
        .and_then(|i| short.get(i))
        .map_or_else(|| output::short_id(&job.id), Clone::clone);
    Cell::new(format!("{id} {}", job.status))
}

pub async fn status(ctx: &Ctx) -> Result<()> {
    let status: StatusResponse = ctx.client.get(&["v1", "status"], &[]).await?;
    if ctx.json {
        output::print_json(&status);
        return Ok(());
    }
    let up = std::time::Duration::from_secs(status.uptime_secs);
    outln!(
        "controller  {}  version {}, up {}",
        ctx.client.url(&[], &[]),
        output::escape_cell(&status.version),
        uptime(up)
    );
    outln!(
        "database    {}, {}",
        output::escape_cell(&status.database_kind),
        output::escape_cell(&status.database)
    );
    outln!("apps        {}", status.apps);
    outln!(
        "agents      {} online of {}",
        status.agents_online,
        status.agents_total
    );
    let pending = if status.jobs_pending >= 1000 {
        "1000+".to_owned()
    } else {
        status.jobs_pending.to_string()
    };
    outln!(
        "jobs        {pending} pending, {} running",
        status.jobs_running
    );
    if status.recent_failures.is_empty() {
        outln!("failures    none recently");
        return Ok(());
    }
    outln!("recent failures:");
    let now = output::now();
    let ids: Vec<&str> = status
        .recent_failures
        .iter()
        .map(|j| j.id.as_str())
        .collect();
    let short = output::short_ids(&ids);
    let mut table = Table::new(&["ID", "APP", "HOST", "STATUS", "CREATED", "ERROR"]);
    for (job, id) in status.recent_failures.iter().zip(&short) {
        let error = job
            .error
            .as_deref()
            .unwrap_or("")
            .lines()
            .last()
            .unwrap_or("");
        table.row(vec![
            Cell::new(id),
            Cell::new(&job.app),
            Cell::new(&job.host),
            Cell::new(job.status.to_string()),
            Cell::new(output::ago(job.created_at, now)),
            Cell::new(error),
        ]);
    }
    table.print("");
    Ok(())
}

/// `3d 4h`, `2h 5m`, `7m 3s`: the two largest units.
fn uptime(up: std::time::Duration) -> String {
    let secs = up.as_secs();
    let (days, hours, minutes) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else {
        format!("{minutes}m {}s", secs % 60)
    }
}

/// Every host, page by page.
pub async fn all_hosts(client: &Client) -> Result<Vec<HostInfo>> {
    let mut hosts = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page: HostsResponse = client
            .get(
                &["v1", "hosts"],
                &[("limit", Some("1000".to_owned())), ("after", after)],
            )
            .await?;
        hosts.extend(page.hosts);
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(hosts),
        }
    }
}

pub async fn hosts(ctx: &Ctx) -> Result<()> {
    let answer = HostsResponse {
        hosts: all_hosts(&ctx.client).await?,
        next_after: None,
    };
    if ctx.json {
        output::print_json(&answer);
        return Ok(());
    }
    let now = output::now();
    let ids: Vec<&str> = answer
        .hosts
        .iter()
        .flat_map(|h| [h.current_job.as_ref(), h.last_job.as_ref()])
        .flatten()
        .map(|job| job.id.as_str())
        .collect();
    let short = output::short_ids(&ids);
    let mut table = Table::new(&[
        "HOST",
        "AGENT",
        "LAST SEEN",
        "RUNNING",
        "LAST JOB",
        "PENDING",
        "APPS",
    ]);
    for host in &answer.hosts {
        let agent = match (&host.agent_id, host.silent_secs) {
            // A heartbeat is overdue: it may be dead, whatever it said last.
            (Some(_), Some(secs)) => Cell::painted(format!("silent {secs}s"), Paint::Yellow),
            (Some(_), None) => Cell::painted(
                host.agent_status.as_str(),
                Paint::of_agent(host.agent_status),
            ),
            (None, _) => Cell::painted("no agent", Paint::Red),
        };
        table.row(vec![
            Cell::new(&host.hostname),
            agent,
            Cell::new(output::ago_or_dash(host.last_seen, now)),
            job_cell(host.current_job.as_ref(), &ids, &short),
            job_cell(host.last_job.as_ref(), &ids, &short),
            Cell::new(host.pending_jobs.to_string()),
            if host.apps.is_empty() {
                // An agent for a host no app lists: it gets no jobs.
                Cell::painted("none (no app deploys here)", Paint::Yellow)
            } else {
                Cell::new(host.apps.join(", "))
            },
        ]);
    }
    table.print("no hosts: apps.yaml lists none and no agent has registered");
    Ok(())
}

/// Every agent, page by page.
pub async fn all_agents(ctx: &Ctx) -> Result<Vec<Agent>> {
    let mut agents: Vec<Agent> = Vec::new();
    loop {
        let after = agents.last().map(|agent| agent.hostname.clone());
        let page: Vec<Agent> = ctx
            .client
            .get(
                &["v1", "agents"],
                &[("limit", Some("1000".to_owned())), ("after", after)],
            )
            .await?;
        let full = page.len() == 1000;
        agents.extend(page);
        if !full {
            break;
        }
    }
    Ok(agents)
}

pub async fn agents(ctx: &Ctx) -> Result<()> {
    let agents = all_agents(ctx).await?;
    if ctx.json {
        output::print_json(&agents);
        return Ok(());
    }
    // Hosts some app deploys to: an agent for any other gets no jobs.
    let apps: AppsResponse = ctx.client.get(&["v1", "apps"], &[]).await?;
    let served: std::collections::HashSet<&str> = apps
        .apps
        .iter()
        .flat_map(|app| app.hosts.iter().map(String::as_str))
        .collect();
    let now = output::now();
    let mut table = Table::new(&[
        "ID",
        "HOSTNAME",
        "STATUS",
        "LAST HEARTBEAT",
        "REGISTERED",
        "CAPABILITIES",
    ]);
    for agent in &agents {
        let hostname = if served.contains(agent.hostname.as_str()) {
            Cell::new(&agent.hostname)
        } else {
            Cell::painted(
                format!("{} (no app deploys here)", agent.hostname),
                Paint::Yellow,
            )
        };
        table.row(vec![
            Cell::new(&agent.id),
            hostname,
            Cell::painted(agent.status.as_str(), Paint::of_agent(agent.status)),
            Cell::new(output::ago_or_dash(agent.last_heartbeat, now)),
            Cell::new(output::ago(agent.registered_at, now)),
            Cell::new(agent.capabilities.describe()),
        ]);
    }
    table.print("no agents registered");
    Ok(())
}

pub async fn apps(ctx: &Ctx) -> Result<()> {
    let answer: AppsResponse = ctx.client.get(&["v1", "apps"], &[]).await?;
    if ctx.json {
        output::print_json(&answer);
        return Ok(());
    }
    let mut table = Table::new(&[
        "NAME", "REPO", "HOSTS", "ON PUSH", "BRANCHES", "TAGS", "SECRET", "COMMAND",
    ]);
    for app in &answer.apps {
        let branches = match &app.branches {
            Some(patterns) => patterns.join(" "),
            None => "all".to_owned(),
        };
        table.row(vec![
            Cell::new(&app.name),
            Cell::new(&app.repo),
            Cell::new(app.hosts.join(", ")),
            Cell::new(if app.deploy_on_push { "yes" } else { "no" }),
            Cell::new(branches),
            Cell::new(app.tags.join(" ")),
            Cell::new(if app.own_webhook_secret {
                "own"
            } else {
                "global"
            }),
            Cell::new(app.command.join(" ")),
        ]);
    }
    table.print("no apps: the controller's apps.yaml lists none");
    Ok(())
}

fn verdict_paint(verdict: DeliveryVerdict) -> Paint {
    match verdict {
        DeliveryVerdict::Queued => Paint::Green,
        DeliveryVerdict::NoMatch | DeliveryVerdict::Stale => Paint::Yellow,
        DeliveryVerdict::Ping | DeliveryVerdict::IgnoredEvent | DeliveryVerdict::Deleted => {
            Paint::Dim
        }
    }
}

pub async fn deliveries(ctx: &Ctx, limit: u32) -> Result<()> {
    let deliveries: Vec<Delivery> = ctx
        .client
        .get(&["v1", "deliveries"], &[("limit", Some(limit.to_string()))])
        .await?;
    if ctx.json {
        output::print_json(&deliveries);
        return Ok(());
    }
    let now = output::now();
    let mut table = Table::new(&[
        "RECEIVED", "DELIVERY", "EVENT", "REPO", "REF", "SHA", "VERDICT", "JOBS", "MESSAGE",
    ]);
    for delivery in &deliveries {
        table.row(vec![
            Cell::new(output::ago(delivery.received_at, now)),
            Cell::new(&delivery.delivery_id),
            Cell::new(&delivery.event),
            Cell::new(delivery.repo.as_deref().unwrap_or_default()),
            Cell::new(delivery.git_ref.as_deref().unwrap_or_default()),
            Cell::new(output::short_sha(delivery.sha.as_deref())),
            Cell::painted(delivery.verdict.as_str(), verdict_paint(delivery.verdict)),
            Cell::new(delivery.job_ids.len().to_string()),
            Cell::new(&delivery.message),
        ]);
    }
    table.print("no webhook deliveries yet");
    Ok(())
}

pub async fn explain(ctx: &Ctx, args: ExplainArgs) -> Result<()> {
    let answer: ExplainResponse = ctx
        .client
        .get(
            &["v1", "explain"],
            &[("repo", Some(args.repo)), ("ref", Some(args.git_ref))],
        )
        .await?;
    if ctx.json {
        output::print_json(&answer);
        return Ok(());
    }
    outln!("{}", output::escape_log(&answer.message));
    if answer.targets.is_empty() && answer.skipped.is_empty() {
        return Ok(());
    }
    let mut table = Table::new(&["APP", "DEPLOYS", "HOSTS", "WHY NOT", "ITS RULE"]);
    for target in &answer.targets {
        table.row(vec![
            Cell::new(&target.app),
            Cell::painted("yes", Paint::Green),
            Cell::new(target.hosts.join(", ")),
            Cell::none(),
            Cell::new(&target.push_rule),
        ]);
    }
    for skipped in &answer.skipped {
        table.row(vec![
            Cell::new(&skipped.app),
            Cell::painted("no", Paint::Yellow),
            Cell::none(),
            Cell::new(&skipped.reason),
            Cell::new(&skipped.push_rule),
        ]);
    }
    outln!();
    table.print("");
    Ok(())
}
