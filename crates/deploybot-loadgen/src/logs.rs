//! Log ingest: many running jobs uploading output at once, with an SSE
//! subscriber measuring how soon each line shows up on the stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::json;

use crate::client::{Connection, Request};
use crate::stats::Latencies;
use crate::{BenchAgent, log_stream_request, register_agents, signed_push};

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub async fn run(
    addr: &str,
    secret: &str,
    jobs: usize,
    batch: usize,
    rate: u64,
    repo: &str,
    duration: Duration,
) -> anyhow::Result<()> {
    // Each uploader sends a batch this often to offer `rate` lines/s in all.
    let every = (rate > 0).then(|| Duration::from_secs_f64((batch * jobs) as f64 / rate as f64));
    let registered = register_agents(addr, "bench-agent", jobs).await?;
    // Subscribe first, so every uploaded line can be seen.
    let subscriber = tokio::spawn(subscribe(
        addr.to_owned(),
        duration + Duration::from_secs(2),
    ));

    let mut conn = Connection::open(addr).await?;
    let sha = format!("{:040x}", now_micros());
    let (status, body) = conn
        .send(signed_push(
            secret,
            repo,
            "refs/heads/main",
            &sha,
            &format!("logs-{sha}"),
        ))
        .await?;
    anyhow::ensure!(
        status == 200,
        "push: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );

    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut uploaders = Vec::with_capacity(jobs);
    for agent in registered {
        let (addr, accepted) = (addr.to_owned(), accepted.clone());
        uploaders.push(tokio::spawn(async move {
            upload(&addr, &agent, batch, every, deadline, accepted).await
        }));
    }
    for uploader in uploaders {
        uploader.await??;
    }
    let elapsed = started.elapsed();
    let accepted = accepted.load(Ordering::Relaxed);
    let (seen, mut latencies) = subscriber.await??;
    let offered = if rate > 0 {
        format!("{rate} lines/s offered")
    } else {
        "closed loop".into()
    };
    println!(
        "logs: {accepted} lines from {jobs} jobs in {:.1}s = {:.0} lines/s ({batch} per upload, {offered}); \
         SSE saw {seen}; upload start → line on the stream: {}",
        elapsed.as_secs_f64(),
        accepted as f64 / elapsed.as_secs_f64(),
        latencies.summary()
    );
    Ok(())
}

/// One agent: take its job, upload batches until the deadline, report.
async fn upload(
    addr: &str,
    agent: &BenchAgent,
    batch: usize,
    every: Option<Duration>,
    deadline: Instant,
    accepted: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut ticks = every.map(|every| {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let mut conn = Connection::open(addr).await?;
    let id = &agent.id;
    let job = loop {
        let request = Request::json(
            Method::POST,
            &format!("/v1/agents/{id}/heartbeat?wait=5"),
            &json!({}),
        )
        .bearer(&agent.token);
        let (status, body) = conn.send(request).await?;
        anyhow::ensure!(status == 200, "heartbeat: HTTP {status}");
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        if !answer["job"].is_null() {
            break answer["job"].clone();
        }
    };
    let job_id = job["id"].as_str().context("job without id")?.to_owned();
    let mut next_line = 1u64;
    while Instant::now() < deadline {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        let sent = now_micros();
        let lines: Vec<_> = (0..batch)
            .map(|i| {
                json!({
                    "line": next_line + i as u64,
                    "stream": "stdout",
                    "at": "2026-01-01T00:00:00Z",
                    "text": format!("t={sent} building module {i} of the bench deploy"),
                })
            })
            .collect();
        next_line += batch as u64;
        let request = Request::json(
            Method::POST,
            &format!("/v1/jobs/{job_id}/logs"),
            &json!({"lease": job["lease"], "agent_id": id, "lines": lines}),
        )
        .bearer(&agent.token);
        let (status, body) = conn.send(request).await?;
        anyhow::ensure!(
            status == 200,
            "upload: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        accepted.fetch_add(answer["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
    }
    let report = Request::json(
        Method::PUT,
        &format!("/v1/jobs/{job_id}/status"),
        &json!({"status": "success", "exit_code": 0, "agent_id": id, "lease": job["lease"]}),
    )
    .bearer(&agent.token);
    conn.send(report).await?;
    Ok(())
}

/// Reads the whole log stream for `for_how_long`: lines seen and their delay.
async fn subscribe(addr: String, for_how_long: Duration) -> anyhow::Result<(u64, Latencies)> {
    let mut conn = Connection::open(&addr).await?;
    let response = conn.send_streaming(log_stream_request()).await?;
    anyhow::ensure!(
        response.status() == 200,
        "stream: HTTP {}",
        response.status()
    );
    let mut body = response.into_body();
    let mut latencies = Latencies::default();
    let mut seen = 0;
    let mut pending = String::new();
    let deadline = tokio::time::Instant::now() + for_how_long;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => frame?,
            Ok(None) | Err(_) => break,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let data: bytes::Bytes = data;
        let now = now_micros();
        pending.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if let Some(sent) = line
                .split("\"text\":\"t=")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|t| t.parse::<u64>().ok())
            {
                seen += 1;
                latencies.record(Duration::from_micros(now.saturating_sub(sent)));
            }
        }
    }
    Ok((seen, latencies))
}
