//! Secrets in the agent's own environment (inherited by deploy commands) are
//! redacted too. A binary of its own: it changes the process environment,
//! which is only sound before other threads exist.

mod support;

use deploybot_wire::JobStatus;

use support::{Fake, job, start_agent};

#[test]
fn secrets_in_the_agents_own_environment_are_redacted() {
    // SAFETY: the only test in this binary, run before the tokio runtime (or
    // any other thread of ours) starts.
    unsafe { std::env::set_var("APP_SIGNING_KEY", "agent-own-secret") };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let fake = Fake::start().await;
        let command = vec![
            "sh".into(),
            "-c".into(),
            "echo \"key=$APP_SIGNING_KEY\"".into(),
        ];
        fake.push_job(job("job-own-env", command));
        let agent = start_agent(&fake, |_| {});
        let (report, record) = fake.report("job-own-env").await;
        assert_eq!(report.status, JobStatus::Success);
        assert_eq!(record.texts("job-own-env"), ["key=***"]);
        agent.stop().await.unwrap();
    });
}
