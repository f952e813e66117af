//! The README's recipe for several instances, behind a real nginx: three
//! controllers on one PostgreSQL database, the README's nginx `upstream`
//! and `location` blocks (read from the README itself, so the documented
//! recipe stays true) in front, and agents, webhooks, the CLI and the live
//! log stream all going through nginx, which sends each request to the
//! next instance in turn. One instance is killed and restarted mid-run.
//!
//! Needs nginx (`apt-get install nginx`; `.ci/run` installs it) and
//! PostgreSQL. Without nginx the test says it was skipped, except under CI
//! (`CI` set), where it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploybot_wire::{DeliveryVerdict, JobStatus};
use tokio::task::block_in_place;

use crate::common::{
    AgentProcess, Api, DEADLINE, Database, EventStream, Server, agent_command, app_entry,
    controller_command, port_of, sha, write, write_apps, write_script,
};

const CONTROLLERS: usize = 3;
const HOSTS: [&str; 3] = ["nx-1", "nx-2", "nx-3"];

/// nginx's binary, or `None` (after saying so) when it is not installed
/// and the tests do not run under CI.
fn nginx_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is not installed, and CI must run the nginx test: apt-get install nginx"
        );
        eprintln!(
            "SKIPPED: the nginx test needs nginx (apt-get install nginx); \
             it runs under CI, which installs it"
        );
    }
    found
}

/// The README's nginx configuration for several instances.
fn readme_recipe() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&readme).expect("read README.md");
    text.split("```nginx\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("upstream deploybot"))
        .expect("README.md has an nginx block with `upstream deploybot`")
        .to_owned()
}

/// The README's recipe made runnable here: its upstream servers replaced
/// by `upstreams`, plain HTTP on 127.0.0.1:`port` instead of TLS on 443,
/// and every file nginx writes in `dir`. Every other line is the README's.
fn nginx_conf(recipe: &str, upstreams: &[String], port: u16, dir: &Path) -> String {
    let mut servers = upstreams.iter();
    let mut body = String::new();
    for line in recipe.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("server 10.") {
            let address = servers
                .next()
                .expect("as many instances as the README lists");
            let (_, options) = trimmed.split_once(' ').unwrap_or_default();
            let (_, options) = options.split_once(' ').unwrap_or(("", ";"));
            body.push_str(&format!(
                "{indent}server {} {options}\n",
                address.trim_start_matches("http://")
            ));
        } else if trimmed.starts_with("listen ") {
            body.push_str(&format!("{indent}listen 127.0.0.1:{port};\n"));
        } else if trimmed.starts_with("ssl_") {
            continue;
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    assert!(
        servers.next().is_none(),
        "the README lists fewer upstream servers than the test runs"
    );
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log notice;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         log_format balanced '\"$request\" $status \"$upstream_addr\"';\n\
         access_log {d}/access.log balanced;\n\
         client_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         {body}}}\n"
    )
}

/// One line of nginx's access log.
#[derive(Debug)]
struct Answered {
    request: String,
    status: u16,
    /// The instances nginx tried, in order (`A, B` when A failed).
    upstreams: String,
}

/// nginx, stopped when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(binary: &Path, conf: &str, dir: &Path, port: u16) -> Nginx {
        std::fs::create_dir_all(dir).expect("nginx dir");
        let path = dir.join("nginx.conf");
        write(&path, conf);
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx {
            child,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", nginx.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx never listened:\n{}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Every request nginx answered so far.
    fn answered(&self) -> Vec<Answered> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                // "POST /v1/agents/ID/heartbeat?wait=2 HTTP/1.1" 200 "127.0.0.1:PORT"
                let mut quoted = line.split('"');
                let request = quoted.nth(1)?.to_owned();
                let status = quoted.next()?.trim().parse().ok()?;
                let upstreams = quoted.next()?.to_owned();
                Some(Answered {
                    request,
                    status,
                    upstreams,
                })
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("bound").port()
}

/// Pushes `n` through `api` and waits until its three jobs succeeded.
async fn deploy(api: &Api, n: usize) -> Vec<String> {
    let answer = api
        .push(&format!("nginx-{n}"), "refs/heads/main", &sha(n))
        .await;
    assert_eq!(answer.verdict, DeliveryVerdict::Queued, "{answer:?}");
    assert_eq!(answer.jobs_created.len(), HOSTS.len(), "{answer:?}");
    for id in &answer.jobs_created {
        let job = api.wait_job(id, "final", |job| job.status.is_final()).await;
        assert_eq!(job.status, JobStatus::Success, "{job:?}");
    }
    answer.jobs_created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_nginx_recipe_balances_three_instances_without_losing_anything() {
    let Some(nginx_bin) = nginx_binary() else {
        return;
    };
    let Some(db) = Database::create("deploybot_cli") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(
        &script,
        "echo \"deploying $DEPLOYBOT_SHA on $DEPLOYBOT_HOST\"\nsleep 0.2\necho done\n",
    );
    let apps: Vec<String> = vec![
        app_entry("web", "acme/web", "nx-1", &script, None)
            .replace("hosts: [nx-1]", &format!("hosts: [{}]", HOSTS.join(", "))),
    ];
    let start_controller = |c: usize, listen: &str| {
        let dir = root.join(format!("controller-{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        write_apps(&dir, &apps);
        let mut cmd = controller_command(&dir, listen, "10s");
        cmd.args(["--database-url", &db.url])
            .args(["--trusted-proxies", "127.0.0.1"]);
        Server::start(cmd)
    };
    let mut servers: Vec<Server> = block_in_place(|| {
        (0..CONTROLLERS)
            .map(|c| start_controller(c, "127.0.0.1:0"))
            .collect()
    });
    let addresses: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();
    let port = free_port();
    let nginx = block_in_place(|| {
        Nginx::start(
            &nginx_bin,
            &nginx_conf(&readme_recipe(), &addresses, port, &root.join("nginx")),
            &root.join("nginx"),
            port,
        )
    });
    let through = Api {
        address: format!("http://127.0.0.1:{port}"),
        client: servers[0].client.clone(),
    };

    // Agents enroll through nginx, with every instance running.
    let agents: Vec<AgentProcess> = block_in_place(|| {
        HOSTS
            .iter()
            .map(|host| AgentProcess::start(agent_command(root, &through.address, host, "2s")))
            .collect()
    });
    for (host, agent) in HOSTS.iter().zip(&agents) {
        through.wait_agent_idle(host, &agent.id).await;
    }

    // The live stream through nginx shows a deploy's lines as they come.
    let mut stream = EventStream::open(&through, "/v1/logs/stream").await;
    let first = deploy(&through, 1).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = stream
            .next(deadline)
            .await
            .expect("a live event through nginx");
        if event.event == "log" && event.data.contains(&format!("deploying {}", sha(1))) {
            break;
        }
    }

    // One instance is killed: nginx sends the next requests to the others,
    // and nothing is lost. Then it comes back on its address.
    block_in_place(|| servers[1].kill9());
    let second = deploy(&through, 2).await;
    let listen = format!("127.0.0.1:{}", port_of(&addresses[1]));
    let restarted = block_in_place(|| start_controller(1, &listen));
    let _dead = std::mem::replace(&mut servers[1], restarted);
    let third = deploy(&through, 3).await;

    // No job lost; every agent registered once and was never told it is
    // unknown (no 404), though its requests reached every instance.
    for id in first.iter().chain(&second).chain(&third) {
        assert_eq!(through.get_job(id).await.status, JobStatus::Success);
    }
    let answered = nginx.answered();
    let mut registrations = 0;
    let mut heartbeats_by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut instances_by_agent: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for answer in &answered {
        assert_ne!(answer.status, 404, "answered 404: {answer:?}");
        if answer.request.starts_with("POST /v1/agents/register ") {
            registrations += 1;
        } else if let Some(agent) = answer
            .request
            .strip_prefix("POST /v1/agents/")
            .and_then(|rest| rest.split_once("/heartbeat"))
            .map(|(agent, _)| agent.to_owned())
        {
            *heartbeats_by_status.entry(answer.status).or_default() += 1;
            let last_tried = answer.upstreams.rsplit(", ").next().unwrap_or_default();
            instances_by_agent
                .entry(agent)
                .or_default()
                .insert(last_tried.to_owned());
        }
    }
    assert_eq!(registrations, HOSTS.len(), "{answered:#?}");
    // Round robin: some agent's heartbeats reached several instances
    // (which one depends on how the requests of all clients interleave).
    assert!(
        instances_by_agent
            .values()
            .any(|instances| instances.len() > 1),
        "every agent reached one instance only: {instances_by_agent:?}"
    );
    eprintln!(
        "nginx: agents' heartbeats answered {heartbeats_by_status:?}, reaching {:?}",
        instances_by_agent
            .values()
            .map(BTreeSet::len)
            .collect::<Vec<_>>()
    );
    drop(stream);
    drop(agents);
    drop((nginx, servers));
}
