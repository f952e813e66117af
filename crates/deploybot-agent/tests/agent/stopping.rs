//! Stopping deploys: timeouts, cancels, a lost lease, shutdown, and process
//! groups that must not outlive any of them.

use std::time::Duration;

use deploybot_wire::{AgentStatus, JobStatus};

use crate::support::{Fake, job, pgid_in, script, start_agent, wait_group_gone};

/// Ignores SIGTERM (so only SIGKILL ends it) and leaves a grandchild that
/// inherits that and holds the output pipes.
const STUBBORN: &str = r#"trap '' TERM
sleep 300 &
echo "pgid $$"
wait"#;

const SLEEPY: &str = r#"echo "pgid $$"
sleep 300"#;

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut job = job("job-timeout", script(dir.path(), "stubborn.sh", STUBBORN));
    job.deploy.timeout_secs = 1;
    fake.push_job(job);
    let agent = start_agent(&fake, |c| c.kill_grace = Duration::from_millis(200));

    let (report, record) = fake.report("job-timeout").await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.exit_code, None);
    let pgid = pgid_in(&record.texts("job-timeout"));
    assert_eq!(
        report.error,
        Some(format!("timed out after 1s\npgid {pgid}"))
    );
    wait_group_gone(pgid).await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn grandchildren_holding_the_pipes_do_not_hang_the_agent() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let command = script(
        dir.path(),
        "leaves.sh",
        "sleep 300 &\necho \"pgid $$\"\necho done",
    );
    fake.push_job(job("job-orphan", command));
    let agent = start_agent(&fake, |_| {});

    let (report, record) = fake.report("job-orphan").await;
    assert_eq!(report.status, JobStatus::Success);
    let texts = record.texts("job-orphan");
    assert_eq!(texts[1], "done");
    wait_group_gone(pgid_in(&texts)).await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_cancel_in_a_heartbeat_stops_the_deploy() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.push_job(job(
        "job-cancel",
        script(dir.path(), "stubborn.sh", STUBBORN),
    ));
    let agent = start_agent(&fake, |c| c.kill_grace = Duration::from_secs(2));

    let record = fake
        .wait_for("the pgid line", |r| !r.texts("job-cancel").is_empty())
        .await;
    let pgid = pgid_in(&record.texts("job-cancel"));
    let beats_before = record.heartbeats.len();
    fake.cancel("job-cancel");

    let (report, record) = fake.report("job-cancel").await;
    assert_eq!(report.status, JobStatus::Cancelled);
    assert_eq!(report.error, None);
    assert_eq!(record.texts("job-cancel").len(), 1);
    // The cancel is repeated in every answer (at once) until the report;
    // the agent paces itself instead of spinning through the 2 s grace.
    let beats = record.heartbeats.len() - beats_before;
    assert!(
        (1..=5).contains(&beats),
        "{beats} heartbeats while stopping"
    );
    wait_group_gone(pgid).await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_cancel_of_a_job_the_agent_never_got_is_answered_once() {
    let fake = Fake::start().await;
    let agent = start_agent(&fake, |_| {});
    fake.wait_for("a heartbeat", |r| !r.heartbeats.is_empty())
        .await;
    // As if the answer handing out `job-ghost` had been lost in transit.
    fake.change(|r| {
        r.leases.insert("job-ghost".into(), 7);
        r.cancels.push("job-ghost".into());
    });

    let (report, _) = fake.report("job-ghost").await;
    assert_eq!(report.status, JobStatus::Cancelled);
    assert_eq!(report.lease, None);
    assert_eq!(report.agent_id.as_deref(), Some("agent-web-01"));
    assert_eq!(
        report.error.as_deref(),
        Some("the agent was not running this job")
    );
    let seen = fake.record().heartbeats.len();
    fake.wait_for("two more heartbeats", |r| r.heartbeats.len() >= seen + 2)
        .await;
    assert_eq!(fake.record().reports.len(), 1);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_lost_lease_stops_the_deploy_without_a_report() {
    let fake = Fake::start().await;
    fake.change(|r| r.logs_answer = Some(409));
    let dir = tempfile::tempdir().unwrap();
    fake.push_job(job("job-stolen", script(dir.path(), "sleepy.sh", SLEEPY)));
    let agent = start_agent(&fake, |_| {});

    let record = fake
        .wait_for("a refused log upload", |r| !r.log_attempts.is_empty())
        .await;
    let texts: Vec<String> = record.log_attempts[0]
        .lines
        .iter()
        .map(|l| l.text.clone())
        .collect();
    wait_group_gone(pgid_in(&texts)).await;
    // Busy while the deploy ran, idle once it was dropped.
    let record = fake
        .wait_for("an idle heartbeat after the busy ones", |r| {
            let beats = &r.heartbeats;
            beats
                .iter()
                .position(|b| b.request.status == AgentStatus::Busy)
                .is_some_and(|busy| {
                    beats[busy..]
                        .iter()
                        .any(|b| b.request.status == AgentStatus::Idle)
                })
        })
        .await;
    assert!(record.reports.is_empty(), "{:?}", record.reports);
    assert_eq!(record.log_attempts.len(), 1);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_a_running_deploy_finish() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let mut command = script(
        dir.path(),
        "slow.sh",
        r#"echo started
while [ ! -e "$1" ]; do sleep 0.05; done
echo finished"#,
    );
    command.push(release.display().to_string());
    fake.push_job(job("job-drain", command));
    let mut agent = start_agent(&fake, |_| {});

    fake.wait_for("the first line", |r| !r.texts("job-drain").is_empty())
        .await;
    agent.begin_shutdown();
    fake.wait_for("a draining heartbeat", |r| {
        r.heartbeats
            .iter()
            .any(|b| b.request.draining && b.request.status == AgentStatus::Busy)
    })
    .await;
    assert!(!agent.is_finished());
    std::fs::write(&release, "").unwrap();

    agent.finished().await.unwrap();
    let record = fake.record();
    let report = record.report("job-drain").unwrap();
    assert_eq!(report.status, JobStatus::Success);
    assert_eq!(record.texts("job-drain"), ["started", "finished"]);
    // No job was handed to a draining agent, and it said goodbye.
    let last = record.heartbeats.last().unwrap();
    assert!(last.request.draining && last.request.status == AgentStatus::Idle);
}

#[tokio::test]
async fn shutdown_stops_a_deploy_that_outlasts_the_grace() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.push_job(job("job-long", script(dir.path(), "sleepy.sh", SLEEPY)));
    let agent = start_agent(&fake, |c| c.shutdown_grace = Duration::from_millis(300));

    fake.wait_for("the pgid line", |r| !r.texts("job-long").is_empty())
        .await;
    agent.stop().await.unwrap();
    let record = fake.record();
    let report = record.report("job-long").unwrap();
    let pgid = pgid_in(&record.texts("job-long"));
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.error, Some(format!("agent shut down\npgid {pgid}")));
    wait_group_gone(pgid).await;
}

#[tokio::test]
async fn shutdown_while_idle_does_not_wait_for_the_long_poll() {
    let fake = Fake::start().await;
    let agent = start_agent(&fake, |c| c.poll_wait = Duration::from_secs(25));
    fake.wait_for("a heartbeat", |r| !r.heartbeats.is_empty())
        .await;

    let started = std::time::Instant::now();
    agent.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let record = fake.record();
    assert_eq!(record.heartbeats[0].wait, Some(25));
    let last = record.heartbeats.last().unwrap();
    assert!(last.request.draining);
}
