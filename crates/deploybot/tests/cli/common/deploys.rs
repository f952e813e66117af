//! apps.yaml for a test, and waiting for jobs and agents.

use super::*;

impl Api {
    /// Polls `GET /v1/jobs/{id}` until `done` holds (at most [`DEADLINE`]).
    pub async fn wait_job(&self, id: &str, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let job = self.get_job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never became {what}: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `GET /v1/jobs/{id}` until it has `status`.
    pub async fn wait_status(&self, id: &str, status: JobStatus) -> Job {
        self.wait_job(id, status.as_str(), |job| job.status == status)
            .await
    }

    /// Polls `GET /v1/hosts` until `host` has agent `agent_id` and it is idle:
    /// the agent has heartbeated (and so is long-polling) since it registered.
    pub async fn wait_agent_idle(&self, host: &str, agent_id: &str) -> HostInfo {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let hosts = ok_json!(self.get("/v1/hosts").await, HostsResponse).hosts;
            let info = hosts.into_iter().find(|h| h.hostname == host);
            if let Some(info) = &info
                && info.agent_id.as_deref() == Some(agent_id)
                && info.agent_status == AgentStatus::Idle
            {
                return info.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{host}'s agent {agent_id} never became idle: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A push to `repo` that must queue exactly one job; returns its id.
    pub async fn push_one(
        &self,
        delivery_id: &str,
        repo: &str,
        git_ref: &str,
        sha: &str,
    ) -> String {
        let answer = self.push_repo(delivery_id, repo, git_ref, sha).await;
        assert_eq!(answer.verdict, DeliveryVerdict::Queued, "{answer:?}");
        assert_eq!(answer.jobs_created.len(), 1, "{answer:?}");
        answer.jobs_created[0].clone()
    }
}

/// One app of apps.yaml: `repo` deployed to `host` by running `script`
/// (absolute path, executed directly), in `workdir` when given. No
/// `branches` key: every branch deploys.
pub fn app_entry(
    name: &str,
    repo: &str,
    host: &str,
    script: &Path,
    workdir: Option<&Path>,
) -> String {
    let mut entry = format!(
        "  - name: {name}\n    repo: {repo}\n    hosts: [{host}]\n    deploy:\n      command: [{script:?}]\n",
        script = script.display().to_string()
    );
    if let Some(workdir) = workdir {
        entry.push_str(&format!(
            "      workdir: {:?}\n",
            workdir.display().to_string()
        ));
    }
    entry
}

/// Writes `dir/apps.yaml` with these [`app_entry`]s.
pub fn write_apps(dir: &Path, entries: &[String]) {
    write(
        dir.join("apps.yaml"),
        &format!("apps:\n{}", entries.concat()),
    );
}

/// A controller in `dir` (see [`controller_command`]) and an agent for
/// `web-01` with a long-poll of `poll_wait`. Blocks until both are up: call
/// it from `tokio::task::block_in_place` in async tests.
pub fn controller_and_agent(
    dir: &Path,
    lease_timeout: &str,
    poll_wait: &str,
) -> (Server, AgentProcess) {
    let server = Server::start(controller_command(dir, "127.0.0.1:0", lease_timeout));
    let agent = AgentProcess::start(agent_command(dir, &server.address, "web-01", poll_wait));
    (server, agent)
}
