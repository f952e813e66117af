//! Running a deploy command: its environment, no shell, exit codes, commands
//! that cannot start.

use deploybot_wire::JobStatus;

use crate::support::fake::CallKind;
use crate::support::{Fake, SHA, job, script, start_agent};

#[tokio::test]
async fn runs_the_command_with_job_env_and_no_shell() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = script(
        dir.path(),
        "deploy.sh",
        r#"printf 'arg=%s\n' "$1"
printf 'pwd=%s\n' "$(pwd -P)"
printf 'rails_env=%s\n' "$RAILS_ENV"
env | grep '^DEPLOYBOT_' | sort"#,
    );
    // Shell syntax in an argument and in the ref must stay text.
    command.push("$HOME;touch${IFS}pwned-arg".into());
    let mut job = job("job-env", command);
    job.git_ref = "main;touch${IFS}pwned".into();
    job.sha = None;
    job.deploy.workdir = Some(dir.path().display().to_string());
    job.deploy
        .env
        .insert("RAILS_ENV".into(), "production".into());
    job.deploy
        .env
        .insert("DEPLOYBOT_JOB_ID".into(), "spoofed".into());
    fake.push_job(job);
    let agent = start_agent(&fake, |_| {});

    let (report, record) = fake.report("job-env").await;
    assert_eq!(report.status, JobStatus::Success);
    assert_eq!(report.exit_code, Some(0));
    assert_eq!(report.error, None);
    assert_eq!(report.agent_id.as_deref(), Some("agent-web-01"));
    assert_eq!(report.lease, Some(100));
    let workdir = dir.path().canonicalize().unwrap();
    assert_eq!(
        record.texts("job-env"),
        [
            "arg=$HOME;touch${IFS}pwned-arg".to_owned(),
            format!("pwd={}", workdir.display()),
            "rails_env=production".into(),
            "DEPLOYBOT_APP=web".into(),
            "DEPLOYBOT_ATTEMPT=1".into(),
            "DEPLOYBOT_HOST=web-01".into(),
            "DEPLOYBOT_JOB_ID=job-env".into(),
            "DEPLOYBOT_REF=main;touch${IFS}pwned".into(),
            "DEPLOYBOT_REF_NAME=main;touch${IFS}pwned".into(),
            "DEPLOYBOT_REPO=acme/web".into(),
            // No sha: the variable is not set at all, never set empty.
        ]
    );
    assert!(!dir.path().join("pwned").exists());
    assert!(!dir.path().join("pwned-arg").exists());
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn the_sha_is_passed_when_known() {
    let fake = Fake::start().await;
    fake.push_job(job(
        "job-sha",
        vec!["sh".into(), "-c".into(), "echo \"$DEPLOYBOT_SHA\"".into()],
    ));
    let agent = start_agent(&fake, |_| {});
    let (report, record) = fake.report("job-sha").await;
    assert_eq!(report.status, JobStatus::Success);
    assert_eq!(record.texts("job-sha"), [SHA]);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_command_reports_its_exit_code_and_last_lines() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let command = script(
        dir.path(),
        "fail.sh",
        r#"i=1
while [ $i -le 30 ]; do echo "line $i"; i=$((i+1)); done
exit 3"#,
    );
    fake.push_job(job("job-fail", command));
    let agent = start_agent(&fake, |_| {});

    let (report, record) = fake.report("job-fail").await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.exit_code, Some(3));
    let last_20: Vec<String> = (11..=30).map(|i| format!("line {i}")).collect();
    assert_eq!(report.error, Some(last_20.join("\n")));
    assert_eq!(record.texts("job-fail").len(), 30);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn commands_that_cannot_start_are_reported_failed() {
    let fake = Fake::start().await;
    fake.push_job(job("job-missing", vec!["./does-not-exist.sh".into()]));
    let agent = start_agent(&fake, |_| {});

    let (report, record) = fake.report("job-missing").await;
    let expected = "cannot start ./does-not-exist.sh: No such file or directory";
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.exit_code, None);
    assert_eq!(report.error.as_deref(), Some(expected));
    assert_eq!(
        record.texts("job-missing"),
        [format!("[deploybot agent] {expected}")]
    );

    // The agent takes the next job once the first is reported.
    let mut next = job("job-no-dir", vec!["true".into()]);
    next.deploy.workdir = Some("/nonexistent/deploybot-test".into());
    fake.push_job(next);
    let (report, _) = fake.report("job-no-dir").await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(
        report.error.as_deref(),
        Some(
            "cannot start true: working directory /nonexistent/deploybot-test: No such file or directory"
        )
    );
    let empty = job("job-empty", vec![]);
    fake.push_job(empty);
    let (report, _) = fake.report("job-empty").await;
    assert_eq!(report.error.as_deref(), Some("the deploy command is empty"));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_job_handed_out_as_the_previous_one_ends_runs_instead_of_being_turned_down() {
    // The fake hands out the next job as soon as it is asked, which is
    // what the controller does once the previous job's report frees the
    // host; the agent may still be tidying up that job then.
    let fake = Fake::start().await;
    for n in 0..5 {
        fake.push_job(job(
            &format!("job-quick-{n}"),
            vec!["echo".into(), format!("quick {n}")],
        ));
    }
    let agent = start_agent(&fake, |_| {});

    for n in 0..5 {
        let id = format!("job-quick-{n}");
        let (report, record) = fake.report(&id).await;
        assert_eq!(report.status, JobStatus::Success, "{id}: {report:?}");
        assert_eq!(record.texts(&id), [format!("quick {n}")]);
    }
    agent.stop().await.unwrap();
}

/// A job that carries a trace context (the controller exports traces)
/// hands it back: its log uploads and its report send it as `traceparent`,
/// so that they join the trace of the request that created the job. A job
/// without one sends none, and neither do heartbeats.
#[tokio::test]
async fn uploads_and_the_report_carry_the_jobs_traceparent() {
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut traced = job("job-traced", script(dir.path(), "traced.sh", "echo one"));
    traced.traceparent = Some(TRACEPARENT.into());
    fake.push_job(traced);
    let mut malformed = job("job-malformed", script(dir.path(), "bad.sh", "echo two"));
    malformed.traceparent = Some("00-not-a-trace\r\nX-Injected: 1".into());
    fake.push_job(malformed);
    fake.push_job(job(
        "job-plain",
        script(dir.path(), "plain.sh", "echo three"),
    ));
    let agent = start_agent(&fake, |_| {});

    for id in ["job-traced", "job-malformed", "job-plain"] {
        let (report, _) = fake.report(id).await;
        assert_eq!(report.status, JobStatus::Success, "{id}");
    }
    let record = fake.record();
    let sent = |id: &str, kind: CallKind| -> Vec<Option<String>> {
        record
            .calls_of(kind)
            .into_iter()
            .filter(|call| call.job_id.as_deref() == Some(id))
            .map(|call| call.traceparent.clone())
            .collect()
    };
    for kind in [CallKind::Logs, CallKind::Status] {
        let traced = sent("job-traced", kind);
        assert!(!traced.is_empty(), "{kind:?}");
        assert!(
            traced.iter().all(|t| t.as_deref() == Some(TRACEPARENT)),
            "{kind:?}: {traced:?}"
        );
        for id in ["job-malformed", "job-plain"] {
            let untraced = sent(id, kind);
            assert!(!untraced.is_empty(), "{id} {kind:?}");
            assert!(
                untraced.iter().all(Option::is_none),
                "{id} {kind:?}: {untraced:?}"
            );
        }
    }
    let beats = record.calls_of(CallKind::Heartbeat);
    assert!(beats.iter().all(|call| call.traceparent.is_none()));
    agent.stop().await.unwrap();
}
