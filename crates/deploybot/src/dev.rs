//! `deploybot dev`: the controller on the embedded default plus an agent for
//! this machine, with an example app whose deploy runs a harmless script.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use deploybot_server::settings::Secret;
use deploybot_server::{Controller, Settings, SettingsLayer};
use deploybot_wire::names;

/// The webhook secret of the demo, unless DEPLOYBOT_WEBHOOK_SECRET is set.
const DEV_SECRET: &str = "dev-secret";
const DEMO_REPO: &str = "demo/hello";
const DEMO_APP: &str = "demo";

const DEMO_SCRIPT: &str = r#"#!/bin/sh
# The demo's deploy command. The job's fields reach it only as environment
# variables (never on a command line), so a hostile ref is just data here.
echo "deploying $DEPLOYBOT_APP ($DEPLOYBOT_REPO) $DEPLOYBOT_REF_NAME @ ${DEPLOYBOT_SHA:-its current commit (no sha given)}"
echo "on $DEPLOYBOT_HOST, job $DEPLOYBOT_JOB_ID, attempt $DEPLOYBOT_ATTEMPT"
for step in fetch build migrate restart; do
    echo "step: $step"
    sleep 1
done
echo "warning: this was only a demo" >&2
echo "done"
"#;

#[derive(Args)]
pub struct DevArgs {
    /// Address to listen on.
    #[arg(long, env = "DEPLOYBOT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Directory for the database and the demo's files.
    #[arg(long, env = "DEPLOYBOT_DATA_DIR", default_value = "deploybot-data")]
    data_dir: PathBuf,
}

fn write_demo_files(dir: &Path, host: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let script = dir.join("demo-deploy.sh");
    std::fs::write(&script, DEMO_SCRIPT)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    let script = std::fs::canonicalize(&script)?;
    let apps = dir.join("apps.yaml");
    let yaml = format!(
        "# Written by `deploybot dev`: one app deploying {DEMO_REPO} to this machine.\n\
         apps:\n  - name: {DEMO_APP}\n    repo: {DEMO_REPO}\n    hosts: [{host}]\n    deploy:\n      \
         command: [{script:?}]\n      timeout: 5m\n",
        script = script.display().to_string()
    );
    std::fs::write(&apps, yaml)?;
    Ok(apps)
}

fn print_tour(addr: &str, secret: &str, admin_token: &str) {
    outln!(
        r#"
DeployBot is running: controller on http://{addr} (docs: http://{addr}/docs),
with an agent for this machine. Authentication is on, as in production: this
run's admin token (a new one each start) is

  export DEPLOYBOT_URL=http://{addr} DEPLOYBOT_TOKEN={admin_token}

Try it from another terminal (after that export):

  # 1. Follow deploy output live:
  deploybot logs -f
  # or: curl -N http://{addr}/v1/logs/stream -H "Authorization: Bearer $DEPLOYBOT_TOKEN"

  # 2. Push to {DEMO_REPO}, signed like GitHub does:
  body='{{"ref":"refs/heads/main","after":"'$(openssl rand -hex 20)'","repository":{{"full_name":"{DEMO_REPO}"}}}}'
  sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac {secret} | sed 's/^.* //')
  curl -s http://{addr}/v1/webhooks/github -H 'Content-Type: application/json' \
    -H 'X-GitHub-Event: push' -H "X-Hub-Signature-256: sha256=$sig" -d "$body"

  # 3. See the jobs, the hosts, and deploy by hand:
  deploybot jobs
  deploybot hosts
  deploybot deploy --app {DEMO_APP} --ref main --wait

Ctrl-C stops everything.
"#
    );
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    crate::serving_connections();
    crate::logging::init();
    let host = deploybot_agent::default_hostname();
    let host = if names::check_hostname(&host).is_ok() {
        host
    } else {
        "localhost".to_owned()
    };
    let dev_dir = args.data_dir.join("dev");
    let apps = write_demo_files(&dev_dir, &host)?;
    let secret = std::env::var("DEPLOYBOT_WEBHOOK_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEV_SECRET.to_owned());
    // Real tokens, made for this run: the demo exercises authentication.
    let admin_token = deploybot_server::new_token(deploybot_server::API_PREFIX);
    let enrollment_token = deploybot_server::new_token(deploybot_server::ENROLL_PREFIX);
    let settings = Settings::resolve(SettingsLayer {
        listen: Some(args.listen),
        data_dir: Some(args.data_dir),
        apps: Some(apps),
        webhook_secret: Some(Secret::new(secret.clone())),
        admin_token: Some(Secret::new(admin_token.clone())),
        enrollment_token: Some(Secret::new(enrollment_token.clone())),
        ..SettingsLayer::default()
    })?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let controller = Controller::start(settings).await?;
        let shutdown = crate::signals::shutdown();
        let addr = controller.local_addr()?.to_string();
        tracing::info!("listening on http://{addr}");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let server = tokio::spawn(controller.run(until_stopped(stopped.clone())));
        let agent = tokio::spawn(deploybot_agent::run(
            deploybot_agent::AgentConfig {
                controller: format!("http://{addr}").parse()?,
                hostname: host,
                state_dir: dev_dir.join("agent"),
                capabilities: vec!["dev".into()],
                poll_wait: Duration::from_secs(25),
                kill_grace: Duration::from_secs(5),
                shutdown_grace: Duration::from_secs(10),
                enrollment_token: Some(deploybot_agent::Token::new(enrollment_token)),
                policy: None,
                ca_cert: None,
            },
            until_stopped(stopped),
        ));
        print_tour(&addr, &secret, &admin_token);
        shutdown.await;
        let _ = stop.send(true);
        agent.await??;
        server.await??;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
