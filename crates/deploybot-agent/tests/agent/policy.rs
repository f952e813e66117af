//! The host's policy file: apps it does not list are refused without running
//! anything; a policy command replaces the controller's command, workdir and
//! env.

use std::path::Path;

use deploybot_agent::{Policy, PolicyError};
use deploybot_wire::{JobStatus, LogStream};

use crate::support::{Fake, job, script, start_agent};

fn policy(dir: &Path, text: &str) -> Policy {
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    Policy::load(&path).unwrap()
}

#[tokio::test]
async fn an_app_the_policy_does_not_list_is_refused_and_nothing_runs() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let touched = dir.path().join("touched");
    let mut refused = job(
        "job-refused",
        vec!["touch".into(), touched.display().to_string()],
    );
    refused.app = "web".into();
    let mut allowed = job("job-allowed", vec!["echo".into(), "api deployed".into()]);
    allowed.app = "api".into();
    fake.push_job(refused);
    let policy = policy(dir.path(), "[apps.api]\n");
    let agent = start_agent(&fake, |c| c.policy = Some(policy));

    let (report, record) = fake.report("job-refused").await;
    let message = "refused by agent policy: app web is not allowed on this host";
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.exit_code, None);
    assert_eq!(report.error.as_deref(), Some(message));
    let lines = &record.stored["job-refused"];
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].stream, LogStream::Stderr);
    assert_eq!(lines[0].text, format!("[deploybot agent] {message}"));
    assert!(!touched.exists());

    // A listed app without `command` runs the controller's spec. (Queued only
    // now: like the real controller, the fake must not hand a busy host a
    // second job.)
    fake.push_job(allowed);
    let (report, record) = fake.report("job-allowed").await;
    assert_eq!(report.status, JobStatus::Success);
    assert_eq!(record.texts("job-allowed"), ["api deployed"]);
    assert!(!touched.exists());
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_policy_command_replaces_the_controllers_command_workdir_and_env() {
    let fake = Fake::start().await;
    let scripts = tempfile::tempdir().unwrap();
    let controller_dir = tempfile::tempdir().unwrap();
    let policy_dir = tempfile::tempdir().unwrap();

    let controllers = script(
        scripts.path(),
        "controller.sh",
        "touch controller-ran\necho controller",
    );
    let mut job = job("job-local", controllers);
    job.deploy.workdir = Some(controller_dir.path().display().to_string());
    for (name, value) in [
        ("RAILS_ENV", "staging"),
        ("FROM_CONTROLLER", "injected"),
        ("LD_PRELOAD", "/nonexistent/evil.so"),
    ] {
        job.deploy.env.insert(name.into(), value.into());
    }
    fake.push_job(job);

    let local = script(
        scripts.path(),
        "local.sh",
        r#"echo "$1" > policy-ran
printf 'arg=%s\n' "$1"
printf 'pwd=%s\n' "$(pwd -P)"
printf 'rails_env=%s\n' "$RAILS_ENV"
printf 'from_controller=%s\n' "${FROM_CONTROLLER-unset}"
printf 'ld_preload=%s\n' "${LD_PRELOAD-unset}"
printf 'job=%s app=%s\n' "$DEPLOYBOT_JOB_ID" "$DEPLOYBOT_APP""#,
    );
    let text = format!(
        "[apps.web]\ncommand = [{:?}, {:?}, \"--prod\"]\nworkdir = {:?}\nenv = {{ RAILS_ENV = \"production\" }}\n",
        local[0],
        local[1],
        policy_dir.path().display().to_string(),
    );
    let policy = policy(scripts.path(), &text);
    let agent = start_agent(&fake, |c| c.policy = Some(policy));

    let (report, record) = fake.report("job-local").await;
    assert_eq!(report.status, JobStatus::Success, "{:?}", report.error);
    let workdir = policy_dir.path().canonicalize().unwrap();
    assert_eq!(
        record.texts("job-local"),
        [
            "arg=--prod".to_owned(),
            format!("pwd={}", workdir.display()),
            "rails_env=production".into(),
            "from_controller=unset".into(),
            "ld_preload=unset".into(),
            "job=job-local app=web".into(),
        ]
    );
    assert_eq!(
        std::fs::read_to_string(policy_dir.path().join("policy-ran")).unwrap(),
        "--prod\n"
    );
    assert!(!controller_dir.path().join("controller-ran").exists());
    assert!(!policy_dir.path().join("controller-ran").exists());
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn the_controllers_timeout_still_applies_to_a_policy_command() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut job = job("job-slow", vec!["true".into()]);
    job.deploy.timeout_secs = 1;
    fake.push_job(job);
    let policy = policy(dir.path(), "[apps.web]\ncommand = [\"sleep\", \"300\"]\n");
    let agent = start_agent(&fake, |c| c.policy = Some(policy));

    let (report, _) = fake.report("job-slow").await;
    assert_eq!(report.status, JobStatus::Failed);
    assert_eq!(report.error.as_deref(), Some("timed out after 1s"));
    agent.stop().await.unwrap();
}

#[test]
fn an_invalid_policy_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploybot-policy.toml");
    for (text, expected) in [
        ("[apps.web\n", "TOML parse error"),
        ("[apps.web]\nrun = [\"x\"]\n", "unknown field `run`"),
        ("[apps.web]\ncommand = []\n", "`command` must not be empty"),
        (
            "[apps.web]\ncommand = [\"x\"]\nworkdir = \"srv\"\n",
            "`workdir` must be an absolute path",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = Policy::load(&path).unwrap_err();
        assert!(matches!(err, PolicyError::Invalid { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("invalid agent policy {}: ", path.display())),
            "{message}"
        );
        assert!(message.contains(expected), "{message}");
    }
    let missing = dir.path().join("missing.toml");
    let err = Policy::load(&missing).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "cannot read the agent policy {}: ",
            missing.display()
        )),
        "{err}"
    );
}
