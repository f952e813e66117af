//! A deploy command starts with a clean environment: `PATH`, `HOME`,
//! `LANG`, `USER`, the names the agent policy's `inherit_env` lists, the
//! app's variables and secrets and the job's `DEPLOYBOT_*` ones; nothing
//! else of the agent's (its tokens, a `HOST_SECRET`, an `LD_PRELOAD`). What
//! it does inherit is redacted by name, as the job's secrets are by value.
//! A binary of its own: it changes the process environment, which is only
//! sound before other threads exist.

mod support;

use std::collections::BTreeMap;

use deploybot_agent::Policy;
use deploybot_wire::JobStatus;

use support::{Fake, job, start_agent};

const PRINT: &str = r#"echo "host=${HOST_SECRET-unset} key=${APP_SIGNING_KEY-unset} sock=${SSH_AUTH_SOCK-unset} path=${PATH:+set} db=${DB_PASSWORD-unset}""#;

#[test]
fn deploys_get_a_clean_environment_with_only_what_is_allowed() {
    // SAFETY: the only test in this binary, run before the tokio runtime (or
    // any other thread of ours) starts.
    unsafe {
        std::env::set_var("HOST_SECRET", "host-secret-value");
        std::env::set_var("APP_SIGNING_KEY", "agent-own-secret");
        std::env::set_var("SSH_AUTH_SOCK", "/tmp/agent.sock");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let fake = Fake::start().await;
        let command = vec!["sh".into(), "-c".into(), PRINT.into()];
        // The job's secret arrives with its hand-out, named like nothing
        // secret, and is hidden in the output by its value.
        let secrets = BTreeMap::from([("DB_PASSWORD".to_owned(), "pw-0123456789".to_owned())]);
        fake.change(|r| {
            r.secrets.insert("job-clean".into(), secrets.clone());
            r.secrets.insert("job-inherit".into(), secrets.clone());
        });
        fake.push_job(job("job-clean", command.clone()));
        let agent = start_agent(&fake, |_| {});
        let (report, record) = fake.report("job-clean").await;
        assert_eq!(report.status, JobStatus::Success);
        assert_eq!(
            record.texts("job-clean"),
            ["host=unset key=unset sock=unset path=set db=***"]
        );
        agent.stop().await.unwrap();

        // A policy lets some through; a secret-looking name is still hidden.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(
            &path,
            "inherit_env = [\"SSH_AUTH_SOCK\", \"APP_SIGNING_KEY\"]\n[apps.web]\n",
        )
        .unwrap();
        let policy = Policy::load(&path).unwrap();
        fake.push_job(job("job-inherit", command));
        let agent = start_agent(&fake, |c| c.policy = Some(policy));
        let (report, record) = fake.report("job-inherit").await;
        assert_eq!(report.status, JobStatus::Success);
        assert_eq!(
            record.texts("job-inherit"),
            ["host=unset key=*** sock=/tmp/agent.sock path=set db=***"]
        );
        agent.stop().await.unwrap();
    });
}
