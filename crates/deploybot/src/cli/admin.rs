//! Admin commands: `tokens`, `agents revoke`, `agents replace`, `audit`.

use std::io::IsTerminal;
use std::time::Duration;

use deploybot_wire::{
    Agent, AuditResponse, CreateTokenRequest, CreatedToken, ForgottenHost, Job, TokenInfo,
    TokenRole, TokensResponse,
};

use super::client::{CliError, Kind, Result};
use super::info;
use super::output::{self, Cell, Paint, Style, Table};
use super::{AuditArgs, CreateTokenArgs, Ctx};

pub async fn create_token(ctx: &Ctx, args: CreateTokenArgs) -> Result<()> {
    let request = CreateTokenRequest {
        name: args.name,
        role: args.role,
        apps: (!args.apps.is_empty()).then_some(args.apps),
        // Whole seconds: the API's unit; a sub-second rest means nothing here.
        expires_in: args.expires_in.map(|d| d.as_secs().max(1)),
        single_use: args.single_use,
        hostname: args.hostname,
    };
    let created: CreatedToken = ctx.client.post(&["v1", "tokens"], Some(&request)).await?;
    if ctx.json {
        output::print_json(&created);
        return Ok(());
    }
    // The secret alone on stdout (so `$(deploybot tokens create …)` is the
    // token); what it is, on stderr.
    let info = &created.info;
    let style = Style::stderr();
    let mut about = format!(
        "created token {} ({}): role {}",
        info.id,
        output::escape_cell(&info.name),
        info.role.as_str()
    );
    if let Some(apps) = &info.apps {
        about.push_str(&format!(", apps {}", output::escape_cell(&apps.join(", "))));
    }
    if info.single_use {
        about.push_str(", single use");
    }
    if let Some(host) = &info.hostname {
        about.push_str(&format!(", for host {}", output::escape_cell(host)));
    }
    match info.expires_at {
        Some(at) => about.push_str(&format!(", expires {}", output::timestamp(at))),
        None => about.push_str(", never expires"),
    }
    eprintln!("{about}");
    eprintln!(
        "{}",
        style.paint(
            Paint::Bold,
            "The secret below is shown only this once; store it now:"
        )
    );
    let terminal = std::io::stdout().is_terminal();
    if terminal {
        outln!();
    }
    outln!("{}", created.token);
    if terminal {
        outln!();
    }
    if info.role == TokenRole::Enroll {
        eprintln!("Agents use it as DEPLOYBOT_ENROLLMENT_TOKEN (or --enrollment-token-file).");
    } else {
        eprintln!("Use it as DEPLOYBOT_TOKEN, or save it with `deploybot login --token-stdin`.");
    }
    Ok(())
}

/// What a token can do now.
fn token_state(token: &TokenInfo, now: deploybot_wire::Timestamp) -> (String, Paint) {
    if let Some(at) = token.revoked_at {
        (format!("revoked {}", output::ago(at, now)), Paint::Dim)
    } else if token.expires_at.is_some_and(|at| at <= now) {
        ("expired".to_owned(), Paint::Dim)
    } else if token.single_use && token.used_at.is_some() {
        ("used".to_owned(), Paint::Dim)
    } else {
        ("active".to_owned(), Paint::Green)
    }
}

pub async fn list_tokens(ctx: &Ctx) -> Result<()> {
    // Every page, in the order they were made.
    let mut answer = TokensResponse {
        tokens: Vec::new(),
        next_after: None,
    };
    let mut after: Option<String> = None;
    loop {
        let page: TokensResponse = ctx
            .client
            .get(
                &["v1", "tokens"],
                &[("limit", Some("1000".to_owned())), ("after", after)],
            )
            .await?;
        answer.tokens.extend(page.tokens);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if ctx.json {
        output::print_json(&answer);
        return Ok(());
    }
    let now = output::now();
    let mut table = Table::new(&["ID", "NAME", "ROLE", "APPS", "CREATED", "EXPIRES", "STATE"]);
    for token in &answer.tokens {
        let (state, paint) = token_state(token, now);
        let mut role = token.role.as_str().to_owned();
        if token.single_use {
            role.push_str(" (single use)");
        }
        table.row(vec![
            Cell::new(&token.id),
            Cell::new(&token.name),
            Cell::new(role),
            Cell::new(match (&token.apps, token.role) {
                (Some(apps), _) => apps.join(", "),
                (None, TokenRole::Deploy) => "all".to_owned(),
                (None, _) => String::new(),
            }),
            Cell::new(output::ago(token.created_at, now)),
            Cell::new(
                token
                    .expires_at
                    .map_or_else(|| "never".to_owned(), |at| output::ago(at, now)),
            ),
            Cell::painted(state, paint),
        ]);
    }
    table.print("no tokens (the configured admin and enrollment tokens are not listed)");
    Ok(())
}

pub async fn revoke_token(ctx: &Ctx, id: &str) -> Result<()> {
    let info: TokenInfo = ctx.client.delete(&["v1", "tokens", id]).await?;
    if ctx.json {
        output::print_json(&info);
        return Ok(());
    }
    outln!(
        "revoked token {} ({}, role {}): it stops working at once",
        info.id,
        output::escape_cell(&info.name),
        info.role.as_str()
    );
    Ok(())
}

pub async fn replace_agent(ctx: &Ctx, hostname: String, expires_in: Duration) -> Result<()> {
    let request = CreateTokenRequest {
        name: format!("replace {hostname}"),
        role: TokenRole::Enroll,
        apps: None,
        expires_in: Some(expires_in.as_secs().max(1)),
        single_use: true,
        hostname: Some(hostname.clone()),
    };
    let created: CreatedToken = ctx.client.post(&["v1", "tokens"], Some(&request)).await?;
    if ctx.json {
        output::print_json(&created);
        return Ok(());
    }
    let host = output::escape_cell(&hostname);
    eprintln!(
        "created token {} for host {host}: single use, expires {}",
        created.info.id,
        created
            .info
            .expires_at
            .map_or_else(|| "never".to_owned(), output::timestamp)
    );
    eprintln!(
        "{}",
        Style::stderr().paint(
            Paint::Bold,
            "The secret below is shown only this once; give it to the new agent:"
        )
    );
    outln!("{}", created.token);
    eprintln!(
        "When an agent enrolls with it (DEPLOYBOT_ENROLLMENT_TOKEN or --enrollment-token-file) \
         as {host}, it takes the host over: the current agent's token stops working and the \
         job it runs, if any, becomes lost."
    );
    Ok(())
}

/// The agent `given` names: its id, the start of its id, or its hostname.
async fn resolve_agent(ctx: &Ctx, given: &str) -> Result<Agent> {
    let agents = info::all_agents(ctx).await?;
    if let Some(agent) = agents
        .iter()
        .find(|agent| agent.id == given || agent.hostname == given)
    {
        return Ok(agent.clone());
    }
    let matching: Vec<&Agent> = agents.iter().filter(|a| a.id.starts_with(given)).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CliError::new(
            Kind::NotFound,
            format!("no agent has the id or hostname {given:?}"),
        )
        .with_hint("`deploybot agents` lists them")),
        several => Err(CliError::new(
            Kind::NotFound,
            format!(
                "{given:?} is ambiguous: {} agents' ids start with it ({})",
                several.len(),
                several
                    .iter()
                    .map(|a| a.hostname.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_hint("give more of the id, or the hostname")),
    }
}

pub async fn revoke_agent(ctx: &Ctx, given: &str) -> Result<()> {
    let agent = resolve_agent(ctx, given).await?;
    let id = agent.id.as_str();
    let lost: Vec<Job> = ctx.client.delete(&["v1", "agents", id]).await?;
    if ctx.json {
        output::print_json(&lost);
        return Ok(());
    }
    outln!(
        "revoked agent {} of {}: its token stops working",
        output::escape_cell(id),
        output::escape_cell(&agent.hostname)
    );
    for job in &lost {
        outln!(
            "job {} on {} became lost",
            job.id,
            output::escape_cell(&job.host)
        );
    }
    eprintln!(
        "An agent that still has a valid enrollment token enrolls again by itself: \
         revoke that token too to keep the host out."
    );
    Ok(())
}

pub async fn forget_host(ctx: &Ctx, hostname: &str) -> Result<()> {
    let forgotten: ForgottenHost = ctx.client.delete(&["v1", "hosts", hostname]).await?;
    if ctx.json {
        output::print_json(&forgotten);
        return Ok(());
    }
    outln!(
        "forgot host {} (its agent {} was removed)",
        output::escape_cell(&forgotten.hostname),
        forgotten.agent_id
    );
    Ok(())
}

pub async fn audit(ctx: &Ctx, args: AuditArgs) -> Result<()> {
    let answer: AuditResponse = ctx
        .client
        .get(
            &["v1", "audit"],
            &[
                ("limit", Some(args.limit.to_string())),
                ("before", args.before.map(|b| b.to_string())),
            ],
        )
        .await?;
    if ctx.json {
        output::print_json(&answer);
        return Ok(());
    }
    let now = output::now();
    let mut table = Table::new(&[
        "ID", "WHEN", "ACTOR", "ACTION", "TARGET", "ADDRESS", "RESULT",
    ]);
    for entry in &answer.entries {
        let paint = if entry.result == "ok" {
            Paint::Plain
        } else {
            Paint::Red
        };
        table.row(vec![
            Cell::new(entry.id.to_string()),
            Cell::new(output::ago(entry.at, now)),
            Cell::new(&entry.actor),
            Cell::new(&entry.action),
            Cell::new(&entry.target),
            Cell::new(entry.address.as_deref().unwrap_or_default()),
            Cell::painted(&entry.result, paint),
        ]);
    }
    table.print("the audit log is empty");
    Ok(())
}
