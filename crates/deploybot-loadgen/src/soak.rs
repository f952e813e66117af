//! A long run as a small fleet lives it: agents long-poll, run each job
//! (a few lines of output, then success), a push every few seconds, and
//! log-stream clients coming and going. Prints a progress line every
//! `report_every` (for the script to sample the controller's memory
//! against) and, at the end, whether every job was accounted for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deploybot_wire::{LogLine, LogStream, Timestamp};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::json;

use crate::client::{Connection, Request};
use crate::{BenchAgent, admin_token, log_stream_request, register_agents, signed_push};

/// Lines of output each job uploads.
const LINES_PER_JOB: u64 = 5;

#[derive(Default)]
struct Counts {
    pushes: AtomicU64,
    created: AtomicU64,
    done: AtomicU64,
    streams: AtomicU64,
}

pub struct Soak<'a> {
    pub addr: &'a str,
    pub secret: &'a str,
    pub agents: usize,
    pub repo: &'a str,
    pub push_every: Duration,
    pub duration: Duration,
    pub report_every: Duration,
}

pub async fn run(soak: Soak<'_>) -> anyhow::Result<()> {
    let registered = register_agents(soak.addr, "soak-agent", soak.agents).await?;
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for agent in registered {
        let (addr, counts) = (soak.addr.to_owned(), counts.clone());
        tasks.push(tokio::spawn(
            async move { work(&addr, &agent, &counts).await },
        ));
    }
    let (addr, churn_counts) = (soak.addr.to_owned(), counts.clone());
    tasks.push(tokio::spawn(async move {
        stream_churn(&addr, &churn_counts).await
    }));

    let started = Instant::now();
    let mut conn = Connection::open(soak.addr).await?;
    let mut pushes = tokio::time::interval(soak.push_every);
    let mut last_report = started;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let mut n: u128 = 0;
    while started.elapsed() < soak.duration {
        pushes.tick().await;
        let sha = format!("{:040x}", (run_id << 24) + n);
        let request = signed_push(
            soak.secret,
            soak.repo,
            "refs/heads/main",
            &sha,
            &format!("soak-{run_id}-{n}"),
        );
        n += 1;
        let (status, body) = conn.send(request).await?;
        anyhow::ensure!(status == 200, "push: HTTP {status}");
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        let created = answer["jobs_created"].as_array().map_or(0, Vec::len);
        counts.pushes.fetch_add(1, Ordering::Relaxed);
        counts.created.fetch_add(created as u64, Ordering::Relaxed);
        if last_report.elapsed() >= soak.report_every {
            last_report = Instant::now();
            report(&counts, started);
        }
    }
    // Every job queued must end: newer pushes supersede pending ones, so
    // the jobs run are those not superseded; wait until nothing is open.
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_jobs(soak.addr).await? > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "jobs still open a minute after the last push"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in tasks {
        task.abort();
    }
    report(&counts, started);
    println!("soak: every job ended (none pending or running)");
    Ok(())
}

fn report(counts: &Counts, started: Instant) {
    println!(
        "soak {:.0}s: {} pushes, {} jobs queued, {} run, {} log streams opened",
        started.elapsed().as_secs_f64(),
        counts.pushes.load(Ordering::Relaxed),
        counts.created.load(Ordering::Relaxed),
        counts.done.load(Ordering::Relaxed),
        counts.streams.load(Ordering::Relaxed),
    );
}

/// Pending and running jobs, as the status page counts them.
async fn open_jobs(addr: &str) -> anyhow::Result<u64> {
    let mut conn = Connection::open(addr).await?;
    let mut request = Request::new(Method::GET, "/v1/status", String::new());
    if let Some(token) = admin_token() {
        request = request.bearer(&token);
    }
    let (status, body) = conn.send(request).await?;
    anyhow::ensure!(status == 200, "status: HTTP {status}");
    let status: serde_json::Value = serde_json::from_slice(&body)?;
    let count = |field: &str| status[field].as_u64().unwrap_or(0);
    Ok(count("jobs_pending") + count("jobs_running"))
}

/// One agent: long-poll; run each job (output, then success).
async fn work(addr: &str, agent: &BenchAgent, counts: &Counts) -> anyhow::Result<()> {
    let mut conn = Connection::open(addr).await?;
    let id = &agent.id;
    loop {
        let (status, body) = conn.send(agent.heartbeat(25)).await?;
        anyhow::ensure!(status == 200, "heartbeat: HTTP {status}");
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        let job = &answer["job"];
        let Some(job_id) = job["id"].as_str() else {
            continue;
        };
        let lines: Vec<LogLine> = (1..=LINES_PER_JOB)
            .map(|line| LogLine {
                line,
                stream: LogStream::Stdout,
                at: Timestamp::now_utc(),
                text: format!("step {line} of {job_id}"),
            })
            .collect();
        let upload = Request::json(
            Method::POST,
            &format!("/v1/jobs/{job_id}/logs"),
            &json!({"agent_id": id, "lease": job["lease"], "lines": lines}),
        )
        .bearer(&agent.token);
        let (status, _) = conn.send(upload).await?;
        anyhow::ensure!(status == 200, "log upload: HTTP {status}");
        let report = Request::json(
            Method::PUT,
            &format!("/v1/jobs/{job_id}/status"),
            &json!({"status": "success", "exit_code": 0, "agent_id": id, "lease": job["lease"]}),
        )
        .bearer(&agent.token);
        let (status, _) = conn.send(report).await?;
        anyhow::ensure!(status == 200, "report: HTTP {status}");
        counts.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A log-stream client every few seconds, reading for a while, then gone.
async fn stream_churn(addr: &str, counts: &Counts) -> anyhow::Result<()> {
    loop {
        let mut conn = Connection::open(addr).await?;
        let response = conn.send_streaming(log_stream_request()).await?;
        anyhow::ensure!(
            response.status() == 200,
            "stream: HTTP {}",
            response.status()
        );
        counts.streams.fetch_add(1, Ordering::Relaxed);
        let mut body = response.into_body();
        let reading = async {
            while let Some(frame) = body.frame().await {
                frame?;
            }
            anyhow::Ok(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), reading).await;
        drop(body);
        drop(conn);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
