//! Load generator for DeployBot's benchmarks (see BENCHMARKS.md).
//!
//! Sends unique signed GitHub pushes, or heartbeats of many registered
//! agents, over keep-alive HTTP/1.1 connections on loopback, and prints
//! throughput and latency percentiles next to the disk's fsync latency.

mod client;
mod fsync;
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
    },
    /// Heartbeats of many registered agents (no jobs pending).
    Heartbeats {
        /// Agents to register first (hostnames bench-agent-N).
        #[arg(long, default_value_t = 1000)]
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
        } => {
            let secret = Arc::new(secret);
            let counter = Arc::new(AtomicU64::new(0));
            let make = move |_: usize| {
                let secret = secret.clone();
                let counter = counter.clone();
                let repo = repo.clone();
                let git_ref = git_ref.clone();
                move || {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let sha = format!("{:040x}", (u128::from(n) << 20) ^ 0x5eed);
                    let body = serde_json::json!({
                        "ref": git_ref,
                        "after": sha,
                        "repository": {"full_name": repo},
                        "pusher": {"name": "loadgen"},
                        "head_commit": {"message": format!("commit {n}")},
                    })
                    .to_string();
                    let signature =
                        deploybot_wire::signature::sign(secret.as_bytes(), body.as_bytes());
                    client::Request::post("/v1/webhooks/github", body)
                        .header("content-type", "application/json")
                        .header("x-github-event", "push")
                        .header("x-github-delivery", format!("loadgen-{n}-{sha}"))
                        .header("x-hub-signature-256", signature)
                }
            };
            run("webhooks", &cli.addr, cli.connections, cli.duration, make).await
        }
        Load::Heartbeats { agents } => {
            let ids = Arc::new(register_agents(&cli.addr, agents).await?);
            let make = move |conn: usize| {
                let ids = ids.clone();
                let mut next = conn;
                move || {
                    next = (next + 7919) % ids.len();
                    client::Request::post(
                        &format!("/v1/agents/{}/heartbeat", ids[next]),
                        r#"{"status":"idle"}"#.to_owned(),
                    )
                    .header("content-type", "application/json")
                }
            };
            run("heartbeats", &cli.addr, cli.connections, cli.duration, make).await
        }
    }
}

async fn register_agents(addr: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut conn = Connection::open(addr).await?;
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let body = format!(r#"{{"hostname":"bench-agent-{i}","capabilities":[]}}"#);
        let request = client::Request::post("/v1/agents/register", body)
            .header("content-type", "application/json");
        let (status, body) = conn.send(request).await?;
        if status != 200 {
            bail!(
                "registering agent {i}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let agent: serde_json::Value = serde_json::from_slice(&body)?;
        let id = agent["id"].as_str().context("registration without id")?;
        ids.push(id.to_owned());
    }
    Ok(ids)
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
