//! SIGKILL in the middle of a stream of webhooks loses nothing that was
//! acknowledged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploybot_wire::{
    Delivery, DeliveryVerdict, HeartbeatResponse, Job, JobResponse, JobStatus, RegisteredAgent,
    WebhookResponse,
};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::watch;

use crate::common::{
    Api, DEADLINE, ENROLLMENT_TOKEN, SECRET, Server, WEB_APPS_YAML, ok_json, push_body, sha,
    web_server_command, write,
};

/// Pushes in all, sent by `PUSHERS` concurrent tasks.
const PUSHES: usize = 200;
const PUSHERS: usize = 8;
/// Pushes numbered from here on wait until the agent has its job, so the
/// kill always comes after it and mid-stream.
const SECOND_HALF: usize = PUSHES / 2;
/// The server is killed once this many pushes were acknowledged.
const KILL_AFTER: usize = SECOND_HALF + 20;

/// A push the server answered 2xx.
struct Acked {
    delivery_id: String,
    body: Vec<u8>,
    answer: WebhookResponse,
}

/// Sends pushes `first, first + PUSHERS, …` until the server stops
/// answering; returns the acknowledged ones.
async fn pusher(
    api: Api,
    first: usize,
    answered: Arc<watch::Sender<usize>>,
    mut agent_has_job: watch::Receiver<bool>,
) -> Vec<Acked> {
    let mut acked = Vec::new();
    for n in (first..PUSHES).step_by(PUSHERS) {
        if n >= SECOND_HALF {
            // Err: the agent task failed; it reports that itself.
            let _ = agent_has_job.wait_for(|has| *has).await;
        }
        let delivery_id = format!("kill9-{n:03}");
        let body = push_body("acme/web", "refs/heads/main", &sha(n));
        let sent = api
            .push_request(Some(SECRET), &delivery_id, body.clone())
            .send()
            .await;
        let Ok(response) = sent else {
            break; // killed
        };
        let status = response.status();
        assert!(status.is_success(), "{delivery_id}: {status}");
        let Ok(text) = response.text().await else {
            break; // killed between the head and the body: not acknowledged
        };
        let answer: WebhookResponse = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{delivery_id}: {err}: {text}"));
        acked.push(Acked {
            delivery_id,
            body,
            answer,
        });
        answered.send_modify(|count| *count += 1);
    }
    acked
}

/// Registers web-01's agent and heartbeats until it is handed a job.
async fn agent(api: Api, has_job: watch::Sender<bool>) -> (RegisteredAgent, Job) {
    let agent = ok_json!(
        api.post_as(
            ENROLLMENT_TOKEN,
            "/v1/agents/register",
            &json!({"hostname": "web-01"})
        )
        .await,
        RegisteredAgent
    );
    let heartbeat = format!("/v1/agents/{}/heartbeat", agent.agent.id);
    let deadline = Instant::now() + DEADLINE;
    let mut every = tokio::time::interval(Duration::from_millis(5));
    loop {
        every.tick().await;
        let answer = ok_json!(
            api.post_as(&agent.token, &heartbeat, &json!({"status": "idle"}))
                .await,
            HeartbeatResponse
        );
        assert!(answer.acknowledged);
        if let Some(job) = answer.job {
            has_job.send_replace(true);
            return (agent, job);
        }
        assert!(Instant::now() < deadline, "web-01 was never handed a job");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_webhooks_and_the_running_job_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);
    let mut server = Server::start(web_server_command(dir.path()));

    let (has_job, agent_has_job) = watch::channel(false);
    let (answered, mut answered_count) = watch::channel(0usize);
    let answered = Arc::new(answered);
    let agent_task = tokio::spawn(agent(server.api(), has_job));
    let pushers: Vec<_> = (0..PUSHERS)
        .map(|first| {
            tokio::spawn(pusher(
                server.api(),
                first,
                answered.clone(),
                agent_has_job.clone(),
            ))
        })
        .collect();
    drop(answered);

    let (agent, running) = tokio::time::timeout(DEADLINE, agent_task)
        .await
        .expect("the agent gets a job in time")
        .expect("the agent task");
    tokio::time::timeout(DEADLINE, answered_count.wait_for(|n| *n >= KILL_AFTER))
        .await
        .expect("pushes are answered in time")
        .expect("the pushers stopped early: see their panic");
    tokio::task::block_in_place(|| server.kill9());

    let mut acked = Vec::new();
    for task in pushers {
        acked.extend(
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("pushers notice the kill")
                .expect("pusher task"),
        );
    }
    assert!(acked.len() >= KILL_AFTER);
    assert!(
        acked.len() < PUSHES,
        "every push was answered: the kill was not mid-stream"
    );
    assert_eq!(running.host, "web-01");

    let server = tokio::task::block_in_place(|| Server::start(web_server_command(dir.path())));

    // Every acknowledged job is there, in a state it may be in.
    for ack in &acked {
        let answer = &ack.answer;
        assert_eq!(answer.verdict, DeliveryVerdict::Queued, "{answer:?}");
        assert!(!answer.duplicate, "{answer:?}");
        assert_eq!(answer.jobs_created.len(), 2, "{answer:?}");
        for id in &answer.jobs_created {
            let response = server.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "job {id} of acknowledged delivery {} lost",
                ack.delivery_id
            );
            let job = ok_json!(response, JobResponse).job;
            assert_eq!(job.delivery_id.as_ref(), Some(&ack.delivery_id));
            if *id != running.id {
                assert!(
                    matches!(job.status, JobStatus::Pending | JobStatus::Superseded),
                    "{id} is {}",
                    job.status
                );
            }
        }
    }
    let still_running = server.get_job(&running.id).await;
    assert_eq!(still_running.status, JobStatus::Running);
    assert_eq!(still_running.assigned_agent.as_ref(), Some(&agent.agent.id));

    // Nothing half-written: every delivery's jobs exist, each host has at most
    // one pending job (the newest supersedes the others).
    let jobs = ok_json!(server.get("/v1/jobs?limit=1000").await, Vec<Job>);
    let job_ids: HashSet<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    let deliveries = ok_json!(server.get("/v1/deliveries?limit=1000").await, Vec<Delivery>);
    let delivered: HashMap<&str, &Delivery> = deliveries
        .iter()
        .map(|d| (d.delivery_id.as_str(), d))
        .collect();
    for delivery in &deliveries {
        for id in &delivery.job_ids {
            assert!(job_ids.contains(id.as_str()), "{delivery:?}: {id} missing");
        }
    }
    for ack in &acked {
        let delivery = delivered
            .get(ack.delivery_id.as_str())
            .unwrap_or_else(|| panic!("delivery {} lost", ack.delivery_id));
        assert_eq!(delivery.job_ids, ack.answer.jobs_created);
    }
    for host in ["web-01", "web-02"] {
        let pending = jobs
            .iter()
            .filter(|job| job.host == host && job.status == JobStatus::Pending)
            .count();
        assert!(pending <= 1, "{host} has {pending} pending jobs");
    }

    // Redeliveries of acknowledged deliveries create nothing new.
    for ack in &acked {
        let response = server
            .push_request(Some(SECRET), &ack.delivery_id, ack.body.clone())
            .send()
            .await
            .expect("redeliver");
        let again = ok_json!(response, WebhookResponse);
        assert!(again.duplicate, "{again:?}");
        assert_eq!(again.jobs_created, ack.answer.jobs_created);
    }

    // The agent is still known, and web-01 still busy with its job.
    let answer = ok_json!(
        server
            .post_as(
                &agent.token,
                &format!("/v1/agents/{}/heartbeat", agent.agent.id),
                &json!({"status": "busy"}),
            )
            .await,
        HeartbeatResponse
    );
    assert!(answer.acknowledged);
    assert!(answer.job.is_none(), "{answer:?}");
}
