//! Dispatch latency: from a push's 2xx to each long-polling agent holding its job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::Method;
use serde_json::json;
use tokio::sync::Notify;

use crate::client::{Connection, Request};
use crate::stats::Latencies;
use crate::{BenchAgent, register_agents, signed_push};

/// When each agent received the job of each sha.
type Received = Arc<Mutex<Vec<(String, Instant)>>>;

/// How many jobs agents have reported done (after which they long-poll again).
type Reported = Arc<std::sync::atomic::AtomicUsize>;

pub async fn run(
    addr: &str,
    push_addr: &str,
    secret: &str,
    agents: usize,
    pushes: usize,
    repo: &str,
) -> anyhow::Result<()> {
    let registered = register_agents(addr, "bench-agent", agents).await?;
    let received: Received = Arc::default();
    let reported: Reported = Arc::default();
    let progress = Arc::new(Notify::new());
    let mut pollers = Vec::new();
    for agent in registered {
        let (addr, received, reported, progress) = (
            addr.to_owned(),
            received.clone(),
            reported.clone(),
            progress.clone(),
        );
        pollers.push(tokio::spawn(async move {
            poll(&addr, &agent, received, reported, progress).await
        }));
    }

    let mut acknowledged: HashMap<String, Instant> = HashMap::new();
    let mut conn = Connection::open(push_addr).await?;
    // Distinct from any earlier run against the same controller.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    for n in 0..pushes {
        let sha = format!("{:040x}", (run << 16) + n as u128);
        let request = signed_push(
            secret,
            repo,
            "refs/heads/main",
            &sha,
            &format!("dispatch-{n}-{sha}"),
        );
        let (status, body) = conn.send(request).await?;
        let answered = Instant::now();
        anyhow::ensure!(
            status == 200,
            "push {n}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        acknowledged.insert(sha, answered);
        // Next push once every agent has taken this one, reported it, and
        // gone back to long-polling: the latency is that of idle agents.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let notified = progress.notified();
            if reported.load(std::sync::atomic::Ordering::SeqCst) >= (n + 1) * agents {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "push {n}: not every agent got its job within 10 s"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
    for poller in pollers {
        poller.abort();
    }

    let mut latencies = Latencies::default();
    let received = received.lock().map(|r| r.clone()).unwrap_or_default();
    for (sha, at) in received {
        let pushed = acknowledged
            .get(&sha)
            .context("a job for an unknown push")?;
        // A job can reach its agent before the pusher has read the 2xx: 0 then.
        latencies.record(at.saturating_duration_since(*pushed));
    }
    println!(
        "dispatch: {agents} long-polling agents, {pushes} pushes, {} jobs; 2xx → agent holds job: {}",
        latencies.count(),
        latencies.summary()
    );
    Ok(())
}

/// One agent: long-poll, record each job, report it done at once.
async fn poll(
    addr: &str,
    agent: &BenchAgent,
    received: Received,
    reported: Reported,
    progress: Arc<Notify>,
) -> anyhow::Result<()> {
    let mut conn = Connection::open(addr).await?;
    let id = &agent.id;
    loop {
        let (status, body) = conn.send(agent.heartbeat(25)).await?;
        let at = Instant::now();
        anyhow::ensure!(status == 200, "heartbeat: HTTP {status}");
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        let job = &answer["job"];
        if job.is_null() {
            continue;
        }
        let sha = job["sha"].as_str().unwrap_or_default().to_owned();
        if let Ok(mut received) = received.lock() {
            received.push((sha, at));
        }
        progress.notify_waiters();
        let report = Request::json(
            Method::PUT,
            &format!("/v1/jobs/{}/status", job["id"].as_str().unwrap_or_default()),
            &json!({"status": "success", "exit_code": 0, "agent_id": id, "lease": job["lease"]}),
        )
        .bearer(&agent.token);
        let (status, _) = conn.send(report).await?;
        anyhow::ensure!(status == 200, "report: HTTP {status}");
        reported.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        progress.notify_waiters();
    }
}
