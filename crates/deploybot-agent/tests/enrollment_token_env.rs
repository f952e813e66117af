//! Deploy commands do not inherit the agent's enrollment token, and it is
//! hidden in their output all the same. A binary of its own: it changes the
//! process environment, which is only sound before other threads exist.

mod support;

use deploybot_wire::JobStatus;

use support::{Fake, job, start_agent};

#[test]
fn deploys_do_not_inherit_the_enrollment_token() {
    // SAFETY: the only test in this binary, run before the tokio runtime (or
    // any other thread of ours) starts.
    unsafe { std::env::set_var(deploybot_agent::ENROLLMENT_TOKEN_ENV, "enroll-from-env") };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let fake = Fake::start().await;
        let command = vec![
            "sh".into(),
            "-c".into(),
            "echo \"env=${DEPLOYBOT_ENROLLMENT_TOKEN-unset}\"; echo enroll-from-env".into(),
        ];
        fake.push_job(job("job-env", command));
        let agent = start_agent(&fake, |_| {});
        let (report, record) = fake.report("job-env").await;
        assert_eq!(report.status, JobStatus::Success);
        assert_eq!(record.texts("job-env"), ["env=unset", "***"]);
        agent.stop().await.unwrap();
    });
}
