//! Load generator for DeployBot's benchmarks (see BENCHMARKS.md).
//!
//! Sends unique signed GitHub pushes, or heartbeats of many registered
//! agents, over keep-alive HTTP/1.1 connections on loopback, and prints
//! throughput and latency percentiles next to the disk's fsync latency.

#![forbid(unsafe_code)]

mod client;
mod dispatch;
mod fsync;
mod idle;
mod logs;
mod soak;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use client::Connection;
use stats::Latencies;

#[derive(Parser)]
#[command(about = "DeployBot load generator")]
struct Cli {
    /// Controller address, host:port.
    #[arg(long, default_value = "127.0.0.1:8080", global = true)]
    addr: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64, global = true)]
    connections: usize,
    /// How long to send load, e.g. 10s.
    #[arg(long, default_value = "10s", global = true, value_parser = humantime_secs)]
    duration: Duration,
    /// Directory on the database's disk, to measure its fsync latency.
    #[arg(long, global = true)]
    fsync_dir: Option<PathBuf>,
    #[command(subcommand)]
    load: Load,
}

#[derive(Subcommand)]
enum Load {
    /// Unique signed push events (each should create one job per host of the app).
    Webhooks {
        #[arg(long, env = "DEPLOYBOT_WEBHOOK_SECRET")]
        secret: String,
        #[arg(long, default_value = "acme/web")]
        repo: String,
        #[arg(long, default_value = "refs/heads/main")]
        git_ref: String,
        /// Delivery id prefix, also mixed into the commit shas: distinct per
        /// run and per load generator, or pushes repeat earlier ones and are
        /// answered as duplicates.
        #[arg(long, default_value = "loadgen")]
        prefix: String,
    },
    /// Heartbeats of many registered agents (no jobs pending).
    Heartbeats {
        /// Agents to register first (hostnames PREFIX-N).
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Hostname prefix: distinct per load generator when several run
        /// against controllers sharing one database.
        #[arg(long, default_value = "bench-agent")]
        prefix: String,
    },
    /// Dispatch latency: agents long-poll; each push queues a job per agent;
    /// measures the time from the push's 2xx to each agent holding its job.
    Dispatch {
        #[arg(long, env = "DEPLOYBOT_WEBHOOK_SECRET")]
        secret: String,
        /// Long-polling agents (hostnames bench-agent-N; the app must list them).
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Pushes, one after the other.
        #[arg(long, default_value_t = 50)]
        pushes: usize,
        #[arg(long, default_value = "acme/fleet")]
        repo: String,
        /// Send the pushes to this controller instead (agents stay on
        /// --addr): dispatch across instances sharing one database.
        #[arg(long)]
        push_addr: Option<String>,
    },
    /// Log ingest: one running job per agent, each uploading batches, with an
    /// SSE subscriber measuring how soon lines show up.
    Logs {
        #[arg(long, env = "DEPLOYBOT_WEBHOOK_SECRET")]
        secret: String,
        /// Running jobs (agents bench-agent-N; the app must list them).
        #[arg(long, default_value_t = 100)]
        jobs: usize,
        /// Lines per upload.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Total lines per second to offer (0: as fast as the controller takes them).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value = "acme/fleet")]
        repo: String,
    },
    /// A long run (`--duration`, e.g. 3600s): long-polling agents running
    /// every job (output, then success), a push every `--push-every`, log
    /// stream clients coming and going (soak benchmark).
    Soak {
        #[arg(long, env = "DEPLOYBOT_WEBHOOK_SECRET")]
        secret: String,
        /// Agents (hostnames soak-agent-N; the app must list them).
        #[arg(long, default_value_t = 20)]
        agents: usize,
        #[arg(long, default_value = "acme/soak")]
        repo: String,
        #[arg(long, default_value = "2s", value_parser = humantime_secs)]
        push_every: Duration,
        /// How often to print progress.
        #[arg(long, default_value = "60s", value_parser = humantime_secs)]
        report_every: Duration,
    },
    /// Holds many idle long-polls open for `--duration` (memory benchmark).
    Idle {
        /// Agents to register and long-poll with (hostnames idle-agent-N).
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
    },
}

fn humantime_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{text:?}: give seconds, e.g. 10s"))?;
    Ok(Duration::from_secs_f64(secs))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(dir) = &cli.fsync_dir {
        let fsync = fsync::measure(dir, 200).context("measuring fsync latency")?;
        println!("fsync: {fsync}");
    }
    match cli.load {
        Load::Webhooks {
            secret,
            repo,
            git_ref,
            prefix,
        } => {
            let secret = Arc::new(secret);
            let seed = prefix_seed(&prefix);
            let counter = Arc::new(AtomicU64::new(0));
            let make = move |_: usize| {
                let secret = secret.clone();
                let counter = counter.clone();
                let repo = repo.clone();
                let git_ref = git_ref.clone();
                let prefix = prefix.clone();
                move || {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let sha = format!("{seed:08x}{:032x}", (u128::from(n) << 20) ^ 0x5eed);
                    signed_push(
                        &secret,
                        &repo,
                        &git_ref,
                        &sha,
                        &format!("{prefix}-{n}-{sha}"),
                    )
                }
            };
            run("webhooks", &cli.addr, cli.connections, cli.duration, make).await
        }
        Load::Dispatch {
            secret,
            agents,
            pushes,
            repo,
            push_addr,
        } => {
            let push_addr = push_addr.as_deref().unwrap_or(&cli.addr);
            dispatch::run(&cli.addr, push_addr, &secret, agents, pushes, &repo).await
        }
        Load::Logs {
            secret,
            jobs,
            batch,
            rate,
            repo,
        } => logs::run(&cli.addr, &secret, jobs, batch, rate, &repo, cli.duration).await,
        Load::Idle { agents } => idle::run(&cli.addr, agents, cli.duration).await,
        Load::Soak {
            secret,
            agents,
            repo,
            push_every,
            report_every,
        } => {
            soak::run(soak::Soak {
                addr: &cli.addr,
                secret: &secret,
                agents,
                repo: &repo,
                push_every,
                duration: cli.duration,
                report_every,
            })
            .await
        }
        Load::Heartbeats { agents, prefix } => {
            let agents = Arc::new(register_agents(&cli.addr, &prefix, agents).await?);
            let make = move |conn: usize| {
                let agents = agents.clone();
                let mut next = conn;
                move || {
                    next = (next + 7919) % agents.len();
                    let agent = &agents[next];
                    client::Request::post(
                        &format!("/v1/agents/{}/heartbeat", agent.id),
                        r#"{"status":"idle"}"#.to_owned(),
                    )
                    .header("content-type", "application/json")
                    .bearer(&agent.token)
                }
            };
            run("heartbeats", &cli.addr, cli.connections, cli.duration, make).await
        }
    }
}

/// A registered agent: its id and the token its heartbeats and writes carry.
#[derive(Debug, Clone, Default)]
pub struct BenchAgent {
    pub id: String,
    pub token: String,
}

impl BenchAgent {
    /// An idle heartbeat held up to `wait_secs` for a job.
    pub fn heartbeat(&self, wait_secs: u64) -> client::Request {
        client::Request::json(
            hyper::Method::POST,
            &format!("/v1/agents/{}/heartbeat?wait={wait_secs}", self.id),
            &serde_json::json!({"status": "idle"}),
        )
        .bearer(&self.token)
    }
}

/// `GET /v1/logs/stream`, everything, with the admin token if there is one.
pub fn log_stream_request() -> client::Request {
    let request = client::Request::new(hyper::Method::GET, "/v1/logs/stream", String::new());
    match admin_token() {
        Some(token) => request.bearer(&token),
        None => request,
    }
}

/// The enrollment token to register with (`DEPLOYBOT_ENROLLMENT_TOKEN`, as
/// the controller reads it); none for a controller in open mode.
fn enrollment_token() -> Option<String> {
    std::env::var("DEPLOYBOT_ENROLLMENT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

/// A token to read the API with (`DEPLOYBOT_ADMIN_TOKEN`), for the log stream.
pub fn admin_token() -> Option<String> {
    std::env::var("DEPLOYBOT_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

/// Registers `count` agents named `{prefix}-{i}` over 64 connections, in order.
pub async fn register_agents(
    addr: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<BenchAgent>> {
    let workers = count.clamp(1, 64);
    let enrollment = enrollment_token();
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let (addr, prefix, enrollment) = (addr.to_owned(), prefix.to_owned(), enrollment.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::open(&addr).await?;
            let mut agents = Vec::new();
            for i in (w..count).step_by(workers) {
                let mut request = client::Request::json(
                    hyper::Method::POST,
                    "/v1/agents/register",
                    &serde_json::json!({"hostname": format!("{prefix}-{i}")}),
                );
                if let Some(token) = &enrollment {
                    request = request.bearer(token);
                }
                let (status, body) = conn.send(request).await?;
                if status != 200 {
                    bail!(
                        "registering agent {i}: HTTP {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                let agent: serde_json::Value = serde_json::from_slice(&body)?;
                let id = agent["id"].as_str().context("registration without id")?;
                let token = agent["token"].as_str().unwrap_or_default();
                agents.push((
                    i,
                    BenchAgent {
                        id: id.to_owned(),
                        token: token.to_owned(),
                    },
                ));
            }
            anyhow::Ok(agents)
        }));
    }
    let mut agents = vec![BenchAgent::default(); count];
    for task in tasks {
        for (i, agent) in task.await?? {
            agents[i] = agent;
        }
    }
    Ok(agents)
}

/// The first 32 bits of a commit sha for pushes with this prefix (FNV-1a):
/// stable, so a rerun with the same prefix repeats the same pushes.
fn prefix_seed(prefix: &str) -> u32 {
    prefix.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// A signed push of `sha` to `repo`'s main branch.
pub fn signed_push(
    secret: &str,
    repo: &str,
    git_ref: &str,
    sha: &str,
    delivery: &str,
) -> client::Request {
    let body = serde_json::json!({
        "ref": git_ref,
        "after": sha,
        "repository": {"full_name": repo},
        "pusher": {"name": "loadgen"},
    })
    .to_string();
    let signature = deploybot_wire::signature::sign(secret.as_bytes(), body.as_bytes());
    client::Request::post("/v1/webhooks/github", body)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
}

/// Runs `connections` loops sending requests built by `make(connection)`
/// until `duration` has passed, then prints the results.
async fn run<M, F>(
    name: &str,
    addr: &str,
    connections: usize,
    duration: Duration,
    make: M,
) -> anyhow::Result<()>
where
    M: Fn(usize) -> F,
    F: FnMut() -> client::Request + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut next_request = make(i);
        let mut conn = Connection::open(addr).await?;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let request = next_request();
                let sent = Instant::now();
                let (status, _) = conn.send(request).await?;
                latencies.record(sent.elapsed());
                if !(200..300).contains(&status) {
                    failures += 1;
                }
            }
            anyhow::Ok((latencies, failures))
        }));
    }
    let mut all = Latencies::default();
    let mut failures = 0;
    for task in tasks {
        let (latencies, failed) = task.await??;
        all.merge(latencies);
        failures += failed;
    }
    let elapsed = started.elapsed();
    println!(
        "{name}: {} requests in {:.1}s = {:.0}/s at {connections} connections; latency {}; non-2xx: {failures}",
        all.count(),
        elapsed.as_secs_f64(),
        all.count() as f64 / elapsed.as_secs_f64(),
        all.summary(),
    );
    Ok(())
}
