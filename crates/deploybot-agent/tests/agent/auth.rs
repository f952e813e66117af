//! Enrollment and agent tokens: sending them, registering again when the
//! agent token is refused (without losing or repeating any output), the
//! saved token, and never logging either.

use std::time::Duration;

use deploybot_agent::{AgentError, Token};
use deploybot_wire::JobStatus;

use crate::support::fake::CallKind;
use crate::support::{Fake, capture_logs, job, script, start_agent, start_agent_in, test_config};

const ENROLLMENT: &str = "enroll-s3cret-token";

/// A controller that requires [`ENROLLMENT`] to register.
async fn secure_fake() -> Fake {
    let fake = Fake::start().await;
    fake.change(|r| r.enrollment_token = Some(ENROLLMENT.into()));
    fake
}

fn enrollment() -> Option<Token> {
    Some(Token::new(ENROLLMENT))
}

/// Prints `before 1..3`, waits for the file `$1`, prints `after 1..3`.
const GATED: &str = r#"for i in 1 2 3; do echo "before $i"; done
while [ ! -e "$1" ]; do sleep 0.02; done
for i in 1 2 3; do echo "after $i"; done"#;

#[tokio::test]
async fn registers_with_the_enrollment_token_and_sends_its_agent_token() {
    let (logs, _guard) = capture_logs();
    let fake = secure_fake().await;
    fake.push_job(job("job-auth", vec!["echo".into(), "hello".into()]));
    let agent = start_agent(&fake, |c| c.enrollment_token = enrollment());

    let (report, record) = fake.report("job-auth").await;
    assert_eq!(report.status, JobStatus::Success);
    assert_eq!(record.texts("job-auth"), ["hello"]);
    let registers = record.calls_of(CallKind::Register);
    assert_eq!(registers.len(), 1);
    assert_eq!(
        registers[0].authorization.as_deref(),
        Some("Bearer enroll-s3cret-token")
    );
    for kind in [CallKind::Heartbeat, CallKind::Logs, CallKind::Status] {
        let calls = record.calls_of(kind);
        assert!(!calls.is_empty(), "no {kind:?} call");
        for call in calls {
            assert_eq!(
                call.authorization.as_deref(),
                Some("Bearer agent-secret-1"),
                "{kind:?}"
            );
            assert_eq!(call.status, 200, "{kind:?}");
        }
    }
    agent.stop().await.unwrap();

    // Not even at trace level, by any crate.
    let logs = logs.text();
    assert!(logs.contains("agent registered"), "{logs}");
    assert!(!logs.contains(ENROLLMENT), "{logs}");
    assert!(!logs.contains("agent-secret-1"), "{logs}");
}

#[tokio::test]
async fn open_mode_needs_no_enrollment_token() {
    let fake = Fake::start().await;
    fake.push_job(job("job-open", vec!["true".into()]));
    let agent = start_agent(&fake, |_| {});
    let (report, record) = fake.report("job-open").await;
    assert_eq!(report.status, JobStatus::Success);
    assert_eq!(record.calls_of(CallKind::Register)[0].authorization, None);
    // The token it got is sent all the same.
    let beats = record.calls_of(CallKind::Heartbeat);
    assert_eq!(
        beats[0].authorization.as_deref(),
        Some("Bearer agent-secret-1")
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_revoked_token_mid_deploy_loses_and_repeats_no_output() {
    let (logs, _guard) = capture_logs();
    let fake = secure_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let mut command = script(dir.path(), "gated.sh", GATED);
    command.push(release.display().to_string());
    fake.push_job(job("job-revoked", command));
    // A long poll: the refused upload, not the next heartbeat, must be what
    // makes the agent register again.
    let agent = start_agent(&fake, |c| {
        c.enrollment_token = enrollment();
        c.poll_wait = Duration::from_secs(20);
    });

    fake.wait_for("the first lines", |r| r.texts("job-revoked").len() == 3)
        .await;
    fake.revoke_token();
    std::fs::write(&release, "").unwrap();

    let (report, record) = fake.report("job-revoked").await;
    assert_eq!(report.status, JobStatus::Success);
    assert_eq!(report.lease, Some(100));
    assert_eq!(
        record.texts("job-revoked"),
        [
            "before 1", "before 2", "before 3", "after 1", "after 2", "after 3"
        ]
    );
    assert_eq!((record.duplicates, record.gaps), (0, 0));
    assert_eq!(record.reports.len(), 1);

    // The refused batch went out again, unchanged, with the new token.
    let attempts = &record.log_attempts;
    let refused = attempts.iter().position(|a| a.status == 401).unwrap();
    assert_eq!(attempts[refused + 1].status, 200);
    assert_eq!(attempts[refused].lines, attempts[refused + 1].lines);
    // It registered again with its own token first (refused: revoked),
    // then with the enrollment token.
    let registers: Vec<(Option<&str>, u16)> = record
        .calls_of(CallKind::Register)
        .iter()
        .map(|c| (c.authorization.as_deref(), c.status))
        .collect();
    assert_eq!(
        registers,
        [
            (Some("Bearer enroll-s3cret-token"), 200),
            (Some("Bearer agent-secret-1"), 401),
            (Some("Bearer enroll-s3cret-token"), 200),
        ]
    );
    let last_upload = record.calls_of(CallKind::Logs).pop().unwrap();
    assert_eq!(
        last_upload.authorization.as_deref(),
        Some("Bearer agent-secret-2")
    );
    // It did not wait for the long-poll to end and fail too.
    assert!(
        record
            .calls_of(CallKind::Heartbeat)
            .iter()
            .all(|c| c.status == 200)
    );
    // Heartbeats go on with the new token.
    let record = fake
        .wait_for("a heartbeat with the new token", |r| {
            r.calls.iter().any(|c| {
                c.kind == CallKind::Heartbeat
                    && c.authorization.as_deref() == Some("Bearer agent-secret-2")
            })
        })
        .await;
    // The refused upload, and the refused registration with the old token.
    assert_eq!(record.answered(401), 2);
    agent.stop().await.unwrap();

    let logs = logs.text();
    assert!(logs.contains("registering again"), "{logs}");
    for secret in [ENROLLMENT, "agent-secret-1", "agent-secret-2"] {
        assert!(!logs.contains(secret), "{secret} logged: {logs}");
    }
}

#[tokio::test]
async fn a_report_refused_with_401_is_sent_once_more_after_registering() {
    let fake = secure_fake().await;
    fake.change(|r| r.revoke_on_report = true);
    fake.push_job(job("job-report", vec!["echo".into(), "done".into()]));
    let agent = start_agent(&fake, |c| c.enrollment_token = enrollment());

    let (report, record) = fake.report("job-report").await;
    assert_eq!(report.status, JobStatus::Success);
    assert_eq!(record.texts("job-report"), ["done"]);
    let statuses: Vec<_> = record
        .calls_of(CallKind::Status)
        .iter()
        .map(|c| (c.status, c.authorization.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        statuses,
        [
            (401, "Bearer agent-secret-1".to_owned()),
            (200, "Bearer agent-secret-2".to_owned())
        ]
    );
    assert_eq!(record.reports.len(), 1);
    assert_eq!(record.registrations.len(), 2);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn without_an_enrollment_token_a_refused_token_is_an_error_not_a_tight_loop() {
    let (logs, _guard) = capture_logs();
    // Open at first, so the agent gets a token without an enrollment token.
    let fake = Fake::start().await;
    let agent = start_agent(&fake, |_| {});
    fake.wait_for("a heartbeat", |r| !r.heartbeats.is_empty())
        .await;

    // Then it requires one, and revokes the agent's token.
    fake.change(|r| r.enrollment_token = Some(ENROLLMENT.into()));
    fake.revoke_token();
    logs.wait_for(
        "agent token refused and no enrollment token configured: set DEPLOYBOT_ENROLLMENT_TOKEN",
    )
    .await;

    // Nothing to await here: what is measured is that little happens.
    let before = fake.record().calls.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A refused credential waits the longest backoff (jittered up to 30 s).
    let during = fake.record().calls.len() - before;
    assert!(during <= 3, "{during} requests in 2 s");
    assert!(!agent.is_finished());
    // Its own (revoked) token, then no token at all: nothing else.
    assert!(
        fake.record()
            .calls_of(CallKind::Register)
            .iter()
            .all(|c| matches!(
                c.authorization.as_deref(),
                None | Some("Bearer agent-secret-1")
            ))
    );
    agent.stop().await.unwrap();
    assert!(!logs.text().contains("agent-secret-1"));
}

#[tokio::test]
async fn a_restarted_agent_registers_again_with_its_saved_token() {
    let fake = secure_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let agent = start_agent_in(&fake, &state_dir, |c| c.enrollment_token = enrollment());
    fake.wait_for("a heartbeat", |r| !r.heartbeats.is_empty())
        .await;
    agent.stop().await.unwrap();

    // With or without an enrollment token (or a used-up one), the saved
    // agent token registers it again: the host stays its own, and the
    // controller learns that the previous run's job is gone.
    for (n, enrollment_token) in [enrollment(), None, Some(Token::new("used-up"))]
        .into_iter()
        .enumerate()
    {
        let seen = fake.record().calls.len();
        let agent = start_agent_in(&fake, &state_dir, |c| {
            c.enrollment_token = enrollment_token;
        });
        let record = fake
            .wait_for("a heartbeat after the restart", |r| {
                r.calls[seen..]
                    .iter()
                    .any(|c| c.kind == CallKind::Heartbeat && c.status == 200)
            })
            .await;
        let after: Vec<(CallKind, Option<&str>, u16)> = record.calls[seen..]
            .iter()
            .take(2)
            .map(|c| (c.kind, c.authorization.as_deref(), c.status))
            .collect();
        let previous = format!("Bearer agent-secret-{}", n + 1);
        let new = format!("Bearer agent-secret-{}", n + 2);
        assert_eq!(
            after,
            [
                (CallKind::Register, Some(previous.as_str()), 200),
                (CallKind::Heartbeat, Some(new.as_str()), 200),
            ]
        );
        agent.stop().await.unwrap();
    }

    // Once that token is refused too (revoked), with no enrollment token
    // configured, the agent says so and ends.
    fake.revoke_token();
    let config = {
        let mut config = crate::support::test_config(&fake, dir.path());
        config.state_dir = state_dir.clone();
        config.enrollment_token = None;
        config
    };
    let err = deploybot_agent::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::EnrollmentTokenMissing { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_host_with_another_agent_is_not_taken_with_the_enrollment_token() {
    let fake = secure_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let first = start_agent_in(&fake, &dir.path().join("first"), |c| {
        c.enrollment_token = enrollment()
    });
    fake.wait_for("a heartbeat", |r| !r.heartbeats.is_empty())
        .await;

    // A second agent for the same host, with nothing saved: refused, and
    // the first keeps the host.
    let mut config = crate::support::test_config(&fake, &dir.path().join("second"));
    config.enrollment_token = enrollment();
    let err = deploybot_agent::run(config.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::Rejected { status: 409, .. }),
        "{err:?}"
    );
    assert_eq!(fake.record().registrations.len(), 1);

    // With a token made for the host, it takes the host over.
    fake.change(|r| r.enrollment_replaces = true);
    let second = tokio::spawn(deploybot_agent::run(config, std::future::pending()));
    fake.wait_for("the second registration", |r| r.registrations.len() == 2)
        .await;
    second.abort();
    first.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_enrollment_with_nothing_saved_ends_the_agent() {
    let fake = secure_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let run = |token: Option<Token>| {
        let mut config = test_config(&fake, dir.path());
        config.enrollment_token = token;
        deploybot_agent::run(config, std::future::pending())
    };

    let err = run(None).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::EnrollmentTokenMissing { message } if message == "invalid or expired enrollment token"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("set DEPLOYBOT_ENROLLMENT_TOKEN"),
        "{err}"
    );

    let err = run(Some(Token::new("expired"))).await.unwrap_err();
    assert!(
        matches!(err, AgentError::EnrollmentTokenRefused { status: 401, .. }),
        "{err:?}"
    );

    // An agent token is not an enrollment token for another host.
    let agent = start_agent(&fake, |c| c.enrollment_token = enrollment());
    fake.wait_for("a heartbeat", |r| !r.heartbeats.is_empty())
        .await;
    let mut config = test_config(&fake, dir.path());
    config.hostname = "another-host".into();
    config.enrollment_token = Some(Token::new("agent-secret-1"));
    let err = deploybot_agent::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::EnrollmentTokenRefused { status: 403, .. }),
        "{err:?}"
    );
    agent.stop().await.unwrap();
}

#[test]
fn debug_output_masks_the_enrollment_token() {
    let url = "http://127.0.0.1:9".parse().unwrap();
    let mut config = deploybot_agent::AgentConfig::new(url, "web-01", "/tmp/state");
    config.enrollment_token = Some(Token::new("xyz-s3cret"));
    let debug = format!("{config:?}");
    assert!(!debug.contains("xyz-s3cret"), "{debug}");
    assert!(debug.contains("Token(***)"), "{debug}");
}
