//! The proof that several controllers on one PostgreSQL database behave as
//! one: three controller processes, fifty agent processes, five hundred
//! signed webhooks sent to random instances while one instance is killed
//! with SIGKILL and restarted on its address (as a supervisor would). Two
//! modes:
//! - direct: the agent of host `i` talks to instance `i % 3` only;
//! - round-robin: every agent talks to a balancer that sends each request
//!   to the next instance in turn (as nginx does), so an agent's
//!   consecutive requests reach different instances; and a few agents
//!   enroll only after the kill.
//!
//! Then, in both:
//! - every webhook answered 2xx has its jobs, and the database holds no
//!   other jobs (a redelivery after a lost answer queues nothing new);
//! - no job ran twice (the deploy script logs each run);
//! - no host ran two jobs at once (the runs' intervals never overlap);
//! - every job reached a final state, and none was lost but those handed
//!   out in the instant of the kill (their answer died with the instance;
//!   the README's failover section says so);
//! - each agent registered once: no instance ever failed to know an agent
//!   (through the balancer, no agent request was ever answered 404).
//!
//! Skipped with `DEPLOYBOT_TEST_POSTGRES=skip`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deploybot_wire::{
    AgentStatus, DeliveryVerdict, HostsResponse, Job, JobStatus, WebhookResponse,
};
use tokio::sync::watch;
use tokio::task::block_in_place;

use crate::common::RoundRobin;
use crate::common::{
    AgentProcess, Api, DEADLINE, Database, Log, SECRET, Server, agent_command, controller_command,
    ok_json, port_of, push_body, sha, write, write_script,
};

/// Where the agents send their requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The agent of host `i` to instance `i % CONTROLLERS`.
    Direct,
    /// Every agent to a round-robin balancer over all instances.
    RoundRobin,
}

/// In round-robin mode, the last this many hosts' agents enroll only once
/// the killed instance is back.
const LATE_AGENTS: usize = 5;
/// A job lost at the kill was claimed at most this long before it (its
/// answer was being written) or after it (the claim was in flight).
const KILL_WINDOW: Duration = Duration::from_secs(2);

const CONTROLLERS: usize = 3;
/// The instance killed mid-run (agents of host `i` talk to `i % CONTROLLERS`).
const KILLED: usize = 1;
/// Instance 0 is never killed: the test reads results through it.
const WITNESS: usize = 0;
const HOSTS: usize = 50;
/// Apps 0–4 deploy to a block of ten consecutive hosts each, apps 5–9 to
/// every fifth host: each host is in two apps, so two apps' jobs compete for
/// it, and each push queues ten jobs.
const APPS: usize = 10;
const HOSTS_PER_APP: usize = 10;
const WEBHOOKS: usize = 500;
/// Concurrent senders.
const PUSHERS: usize = 6;
/// The instance is killed once this many webhooks were answered 2xx.
const KILL_AFTER: usize = 200;
/// Lease timeout of the controllers.
const LEASE: &str = "10s";
/// Long-poll of the agents.
const POLL_WAIT: &str = "2s";
/// A delivery refused or unanswered is sent again (same delivery id, as
/// GitHub redelivers) to a random instance, at most this many times.
const MAX_ATTEMPTS: usize = 60;
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long every job may take to reach a final state once the last
/// webhook was answered.
const SETTLE: Duration = Duration::from_secs(60);

fn host(i: usize) -> String {
    format!("h-{i:02}")
}

fn app_name(app: usize) -> String {
    format!("app-{app}")
}

fn repo(app: usize) -> String {
    format!("acme/app-{app}")
}

/// The hosts `app` deploys to.
fn app_hosts(app: usize) -> Vec<usize> {
    if app < APPS / 2 {
        (app * HOSTS_PER_APP..(app + 1) * HOSTS_PER_APP).collect()
    } else {
        (0..HOSTS)
            .filter(|i| i % (APPS / 2) == app - APPS / 2)
            .collect()
    }
}

/// apps.yaml: every app runs `script`.
fn apps_yaml(script: &Path) -> String {
    let mut yaml = String::from("apps:\n");
    for app in 0..APPS {
        let hosts: Vec<String> = app_hosts(app).into_iter().map(host).collect();
        yaml.push_str(&format!(
            "  - name: {name}\n    repo: {repo}\n    hosts: [{hosts}]\n    deploy:\n      command: [{script:?}]\n",
            name = app_name(app),
            repo = repo(app),
            hosts = hosts.join(", "),
            script = script.display().to_string(),
        ));
    }
    yaml
}

/// xorshift64*: random enough to pick instances and apps; the seed is
/// printed so a failing run can be told apart.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// One webhook delivery and what became of each attempt to send it.
struct Delivery {
    id: String,
    app: usize,
    sha: String,
    /// The 2xx answer and the instance that gave it (the last attempt).
    answer: Option<(usize, WebhookResponse)>,
    /// Instances that refused or did not answer, and why.
    failures: Vec<(usize, String)>,
}

/// Sends one signed push; `Ok` only for a 2xx answer read in full.
async fn send(api: &Api, delivery: &str, body: Vec<u8>) -> Result<WebhookResponse, String> {
    let response = api
        .push_request(Some(SECRET), delivery, body)
        .send()
        .await
        .map_err(|err| format!("not sent: {err}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|err| format!("{status}, answer cut: {err}"))?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    Ok(serde_json::from_str(&text).unwrap_or_else(|err| {
        panic!("{delivery}: a {status} answer that is not JSON: {err}: {text}")
    }))
}

/// Takes delivery numbers from `next` until [`WEBHOOKS`] are taken, and
/// sends each to random instances until one answers 2xx.
async fn pusher(
    apis: Arc<Vec<Api>>,
    next: Arc<AtomicUsize>,
    mut rng: Rng,
    answered: Arc<watch::Sender<usize>>,
    failed: Arc<[AtomicUsize; CONTROLLERS]>,
) -> Vec<Delivery> {
    let mut sent = Vec::new();
    loop {
        let n = next.fetch_add(1, Ordering::SeqCst);
        if n >= WEBHOOKS {
            return sent;
        }
        let app = rng.below(APPS);
        let mut delivery = Delivery {
            id: format!("proof-{n:04}"),
            app,
            sha: sha(n),
            answer: None,
            failures: Vec::new(),
        };
        let body = push_body(&repo(app), "refs/heads/main", &delivery.sha);
        for _ in 0..MAX_ATTEMPTS {
            let to = rng.below(CONTROLLERS);
            match send(&apis[to], &delivery.id, body.clone()).await {
                Ok(answer) => {
                    delivery.answer = Some((to, answer));
                    answered.send_modify(|count| *count += 1);
                    break;
                }
                Err(why) => {
                    failed[to].fetch_add(1, Ordering::SeqCst);
                    delivery.failures.push((to, why));
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        sent.push(delivery);
    }
}

/// Waits until every controller of `shown_by[i]` shows the agent of host
/// `i` as idle.
async fn wait_agents_idle(
    servers: &[Server],
    agents: &[AgentProcess],
    shown_by: impl Fn(usize) -> Vec<usize>,
) {
    let deadline = Instant::now() + DEADLINE;
    for (c, server) in servers.iter().enumerate() {
        loop {
            let hosts = ok_json!(server.get("/v1/hosts").await, HostsResponse).hosts;
            let waiting: Vec<String> = (0..agents.len())
                .filter(|&i| shown_by(i).contains(&c))
                .filter(|&i| {
                    !hosts.iter().any(|h| {
                        h.hostname == host(i)
                            && h.agent_id.as_deref() == Some(agents[i].id.as_str())
                            && h.agent_status == AgentStatus::Idle
                    })
                })
                .map(host)
                .collect();
            if waiting.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "agents never idle on controller {c}: {waiting:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How many times each hostname registered, from `witness`'s audit log.
async fn registrations(witness: &Api) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut before: Option<i64> = None;
    loop {
        let path = match before {
            Some(id) => format!("/v1/audit?limit=1000&before={id}"),
            None => "/v1/audit?limit=1000".to_owned(),
        };
        let page = ok_json!(witness.get(&path).await, deploybot_wire::AuditResponse).entries;
        let Some(last) = page.last() else {
            return counts;
        };
        before = Some(last.id);
        for entry in page.iter().filter(|e| e.action == "register") {
            // "agent ID (HOSTNAME)"
            let hostname = entry
                .target
                .rsplit_once('(')
                .map(|(_, rest)| rest.trim_end_matches(')').to_owned())
                .unwrap_or_else(|| panic!("a register entry without a host: {entry:?}"));
            *counts.entry(hostname).or_default() += 1;
        }
    }
}

/// Starts the agents of `hosts`, in parallel, talking to `address_of(i)`.
fn start_agents(
    root: &Path,
    hosts: std::ops::Range<usize>,
    address_of: impl Fn(usize) -> String + Sync,
) -> Vec<AgentProcess> {
    block_in_place(|| {
        std::thread::scope(|scope| {
            let starting: Vec<_> = hosts
                .map(|i| {
                    let address = address_of(i);
                    scope.spawn(move || {
                        AgentProcess::start(agent_command(root, &address, &host(i), POLL_WAIT))
                    })
                })
                .collect();
            starting
                .into_iter()
                .map(|agent| agent.join().expect("an agent did not start"))
                .collect()
        })
    })
}

/// Pending and running jobs, as `witness` sees them.
async fn open_jobs(witness: &Api) -> Vec<Job> {
    let mut open = Vec::new();
    for status in [JobStatus::Pending, JobStatus::Running] {
        let path = format!("/v1/jobs?status={status}&limit=1000");
        open.extend(ok_json!(witness.get(&path).await, Vec<Job>));
    }
    open
}

/// Every job, host by host (each host has far fewer than the 1,000 a page
/// holds).
async fn all_jobs(witness: &Api) -> HashMap<String, Job> {
    let mut jobs = HashMap::new();
    for i in 0..HOSTS {
        let path = format!("/v1/jobs?host={}&limit=1000", host(i));
        let page = ok_json!(witness.get(&path).await, Vec<Job>);
        assert!(
            page.len() < 1000,
            "{}: a full page; raise the limit",
            host(i)
        );
        for job in page {
            jobs.insert(job.id.clone(), job);
        }
    }
    jobs
}

/// Now, as `date +%s%N` prints it.
fn epoch_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// One run of the deploy script, from its log.
#[derive(Debug, Default)]
struct Run {
    host: String,
    starts: Vec<u128>,
    ends: Vec<u128>,
}

/// `JOB HOST start|end NANOS` lines, by job.
fn read_runs(path: &Path) -> BTreeMap<String, Run> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [job, host, what, at] = fields[..] else {
            panic!("a garbled line in the run log: {line:?}");
        };
        let at: u128 = at.parse().unwrap_or_else(|err| panic!("{line:?}: {err}"));
        let run = runs.entry(job.to_owned()).or_default();
        if run.host.is_empty() {
            run.host = host.to_owned();
        }
        assert_eq!(run.host, host, "job {job} ran on two hosts: {line:?}");
        match what {
            "start" => run.starts.push(at),
            "end" => run.ends.push(at),
            _ => panic!("a garbled line in the run log: {line:?}"),
        }
    }
    runs
}

/// The processes whose logs explain a problem.
struct Witnesses<'a> {
    logs: Vec<(String, &'a Log)>,
}

impl Witnesses<'_> {
    /// Every log line mentioning `needle`, by process.
    fn mentions(&self, needle: &str) -> String {
        let mut out = String::new();
        for (name, log) in &self.logs {
            for line in log.text().lines().filter(|l| l.contains(needle)) {
                out.push_str(&format!("  [{name}] {line}\n"));
            }
        }
        out
    }

    /// A job and what every process logged about it.
    fn job(&self, job: &Job) -> String {
        format!(
            "job {} on {}: status {}, agent {:?}, lease {:?}, error {:?}, started {:?}, completed {:?}\n{}",
            job.id,
            job.host,
            job.status,
            job.assigned_agent,
            job.lease,
            job.error,
            job.started_at,
            job.completed_at,
            self.mentions(&job.id)
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_fifty_agents_five_hundred_webhooks_and_a_kill_9() {
    prove(Mode::Direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_behind_a_round_robin_balancer_with_agents_enrolling_mid_run() {
    prove(Mode::RoundRobin).await;
}

/// The proofs run one at a time: together, their six controllers' pools
/// would ask more of PostgreSQL than its default 100 connections.
static ONE_PROOF_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn prove(mode: Mode) {
    let Some(db) = Database::create("deploybot_cli") else {
        return;
    };
    let _alone = ONE_PROOF_AT_A_TIME.lock().await;
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let run_log = root.join("runs.log");
    let script = root.join("deploy.sh");
    write_script(
        &script,
        &format!(
            "log={log:?}\n\
             echo \"$DEPLOYBOT_JOB_ID $DEPLOYBOT_HOST start $(date +%s%N)\" >> \"$log\"\n\
             sleep 0.05\n\
             echo \"$DEPLOYBOT_JOB_ID $DEPLOYBOT_HOST end $(date +%s%N)\" >> \"$log\"\n",
            log = run_log.display().to_string()
        ),
    );
    let controller_dirs: Vec<_> = (0..CONTROLLERS)
        .map(|c| {
            let dir = root.join(format!("controller-{c}"));
            std::fs::create_dir(&dir).unwrap();
            write(dir.join("apps.yaml"), &apps_yaml(&script));
            dir
        })
        .collect();
    let start_controller = |c: usize, listen: &str| {
        let mut cmd = controller_command(&controller_dirs[c], listen, LEASE);
        cmd.args(["--database-url", &db.url]);
        Server::start(cmd)
    };

    // Three controllers; then the agents, started in parallel: host i on
    // controller i % 3, or all on the balancer (but the late ones).
    let mut servers: Vec<Server> = block_in_place(|| {
        (0..CONTROLLERS)
            .map(|c| start_controller(c, "127.0.0.1:0"))
            .collect()
    });
    let addresses: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();
    let balancer = match mode {
        Mode::Direct => None,
        Mode::RoundRobin => Some(RoundRobin::start(&addresses).await),
    };
    let agent_address = |i: usize| match &balancer {
        Some(balancer) => balancer.address.clone(),
        None => addresses[i % CONTROLLERS].clone(),
    };
    let early = match mode {
        Mode::Direct => 0..HOSTS,
        Mode::RoundRobin => 0..HOSTS - LATE_AGENTS,
    };
    let mut agents = start_agents(root, early, agent_address);
    // Every instance shows every agent the same (round-robin), or its own.
    wait_agents_idle(&servers, &agents, |i| match mode {
        Mode::Direct => vec![i % CONTROLLERS],
        Mode::RoundRobin => (0..CONTROLLERS).collect(),
    })
    .await;
    let ready = began.elapsed();

    // The webhooks, from PUSHERS concurrent senders.
    let seed = epoch_nanos() as u64 | 1;
    eprintln!("cluster proof: seed {seed:#x}, ready after {ready:?}");
    let apis = Arc::new(servers.iter().map(Server::api).collect::<Vec<_>>());
    let next = Arc::new(AtomicUsize::new(0));
    let failed: Arc<[AtomicUsize; CONTROLLERS]> = Arc::new(Default::default());
    let (answered, mut answered_count) = watch::channel(0usize);
    let answered = Arc::new(answered);
    let pushing = Instant::now();
    let pushers: Vec<_> = (0..PUSHERS)
        .map(|p| {
            let rng = Rng(seed.wrapping_mul(p as u64 * 2 + 1) | 1);
            tokio::spawn(pusher(
                apis.clone(),
                next.clone(),
                rng,
                answered.clone(),
                failed.clone(),
            ))
        })
        .collect();
    drop(answered);

    // Mid-run, SIGKILL one instance; it restarts on its address once a
    // webhook sent to it has failed.
    if answered_count
        .wait_for(|count| *count >= KILL_AFTER)
        .await
        .is_err()
    {
        for pusher in pushers {
            pusher.await.expect("a pusher failed");
        }
        panic!("the pushers stopped before {KILL_AFTER} answers");
    }
    let killed_at = pushing.elapsed();
    let answered_before_kill = *answered_count.borrow();
    let failed_before_kill = failed[KILLED].load(Ordering::SeqCst);
    let killed_epoch = epoch_nanos();
    block_in_place(|| servers[KILLED].kill9());
    let down = Instant::now();
    // Clients see it gone before it comes back.
    let deadline = down + DEADLINE;
    while failed[KILLED].load(Ordering::SeqCst) == failed_before_kill
        && !pushers.iter().all(|p| p.is_finished())
    {
        assert!(
            Instant::now() < deadline,
            "nothing was sent to the killed instance"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let listen = format!("127.0.0.1:{}", port_of(&addresses[KILLED]));
    let restarted = block_in_place(|| start_controller(KILLED, &listen));
    assert_eq!(restarted.address, addresses[KILLED]);
    let downtime = down.elapsed();
    let back_at = epoch_nanos();
    let dead = std::mem::replace(&mut servers[KILLED], restarted);
    // The late agents enroll now, with every instance up and running.
    if mode == Mode::RoundRobin {
        agents.extend(start_agents(
            root,
            HOSTS - LATE_AGENTS..HOSTS,
            agent_address,
        ));
    }

    let mut deliveries = Vec::new();
    for pusher in pushers {
        deliveries.extend(pusher.await.expect("a pusher failed"));
    }
    let pushed = pushing.elapsed();

    // Every job reaches a final state.
    let witness = servers[WITNESS].api();
    let mut names = vec![(format!("controller-{KILLED} (killed)"), &dead.log)];
    names.extend(servers.iter().enumerate().map(|(c, server)| {
        let name = if c == KILLED {
            format!("controller-{c} (restarted)")
        } else {
            format!("controller-{c}")
        };
        (name, &server.log)
    }));
    names.extend(
        agents
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("agent {}", host(i)), &a.log)),
    );
    let witnesses = Witnesses { logs: names };
    let settle_deadline = Instant::now() + SETTLE;
    loop {
        let open = open_jobs(&witness).await;
        if open.is_empty() {
            break;
        }
        if Instant::now() >= settle_deadline {
            let shown: Vec<String> = open.iter().take(10).map(|j| witnesses.job(j)).collect();
            panic!(
                "{} jobs still open {SETTLE:?} after the last webhook:\n{}",
                open.len(),
                shown.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = pushing.elapsed();

    let jobs = all_jobs(&witness).await;
    let runs = read_runs(&run_log);
    let mut problems: Vec<String> = Vec::new();

    // Every delivery was answered 2xx in the end (two instances were always
    // up), and every 2xx answer's jobs are in the database: one per host of
    // the app, of this delivery and commit.
    let mut answered_jobs: HashSet<String> = HashSet::new();
    let (mut attempts, mut duplicates) = (0, 0);
    let mut failures_by_instance = [0usize; CONTROLLERS];
    for delivery in &deliveries {
        attempts += delivery.failures.len() + usize::from(delivery.answer.is_some());
        for (to, _) in &delivery.failures {
            failures_by_instance[*to] += 1;
        }
        let Some((to, answer)) = &delivery.answer else {
            problems.push(format!(
                "delivery {} never answered 2xx: {:?}",
                delivery.id, delivery.failures
            ));
            continue;
        };
        duplicates += usize::from(answer.duplicate);
        if answer.verdict != DeliveryVerdict::Queued || answer.jobs_created.len() != HOSTS_PER_APP {
            problems.push(format!(
                "delivery {} (app {}) answered by controller {to}: {answer:?}",
                delivery.id, delivery.app
            ));
        }
        let mut hosts_seen: Vec<String> = Vec::new();
        for id in &answer.jobs_created {
            answered_jobs.insert(id.clone());
            let Some(job) = jobs.get(id) else {
                problems.push(format!(
                    "delivery {} was answered {answer:?} by controller {to}, but its job {id} is not in the database",
                    delivery.id
                ));
                continue;
            };
            if job.delivery_id.as_deref() != Some(delivery.id.as_str())
                || job.sha.as_deref() != Some(delivery.sha.as_str())
                || job.app != app_name(delivery.app)
            {
                problems.push(format!(
                    "delivery {} (app {}, sha {}) answered with job {id}, which is {job:?}",
                    delivery.id, delivery.app, delivery.sha
                ));
            }
            hosts_seen.push(job.host.clone());
        }
        hosts_seen.sort();
        let expected: Vec<String> = app_hosts(delivery.app).into_iter().map(host).collect();
        if answer.jobs_created.len() == hosts_seen.len() && hosts_seen != expected {
            problems.push(format!(
                "delivery {}: jobs on {hosts_seen:?}, app {} deploys to {expected:?}",
                delivery.id, delivery.app
            ));
        }
    }
    // …and there is no other job: nothing was queued twice.
    let unanswered: Vec<&Job> = jobs
        .values()
        .filter(|j| !answered_jobs.contains(&j.id))
        .collect();
    for job in unanswered.iter().take(10) {
        problems.push(format!(
            "a job no 2xx answer named (delivery {:?}): {}",
            job.delivery_id,
            witnesses.job(job)
        ));
    }

    // Every job is final.
    for job in jobs.values().filter(|j| !j.status.is_final()) {
        problems.push(format!("not final: {}", witnesses.job(job)));
    }

    // No job ran twice; each run ended, on the job's host, and a run that
    // ended is a success (and every success ran).
    for (id, run) in &runs {
        if run.starts.len() != 1 || run.ends.len() != 1 {
            problems.push(format!(
                "job {id} on {} started {} times and ended {} times",
                run.host,
                run.starts.len(),
                run.ends.len()
            ));
        }
        match jobs.get(id) {
            None => problems.push(format!(
                "job {id} ran on {} but is not in the database",
                run.host
            )),
            Some(job) if job.host != run.host || job.status != JobStatus::Success => {
                problems.push(format!(
                    "job {id} ran on {}: {}",
                    run.host,
                    witnesses.job(job)
                ));
            }
            Some(_) => {}
        }
    }
    for job in jobs.values() {
        if job.status == JobStatus::Success && !runs.contains_key(&job.id) {
            problems.push(format!("a success that never ran: {}", witnesses.job(job)));
        }
    }

    // No host ran two jobs at once.
    let mut by_host: BTreeMap<&str, Vec<(u128, u128, &str)>> = BTreeMap::new();
    for (id, run) in &runs {
        let start = run.starts.iter().copied().min().unwrap_or(0);
        let end = run.ends.iter().copied().max().unwrap_or(u128::MAX);
        by_host
            .entry(run.host.as_str())
            .or_default()
            .push((start, end, id.as_str()));
    }
    for (host, intervals) in &mut by_host {
        intervals.sort();
        for pair in intervals.windows(2) {
            let ((_, end, first), (start, _, second)) = (pair[0], pair[1]);
            if start <= end {
                problems.push(format!(
                    "{host} ran {second} from {start} while {first} ran until {end}:\n{}{}",
                    witnesses.mentions(first),
                    witnesses.mentions(second)
                ));
            }
        }
    }

    // Nothing was lost but hand-outs whose answer died with the killed
    // instance (the README's failover section).
    let window = KILL_WINDOW.as_nanos();
    for job in jobs.values().filter(|j| j.status == JobStatus::Lost) {
        let claimed = job
            .started_at
            .map(|at| at.unix_timestamp_nanos() as u128)
            .unwrap_or(0);
        let at_the_kill = claimed + window >= killed_epoch && claimed <= killed_epoch + window;
        let handed_out = job
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not running this job"));
        if !(at_the_kill && handed_out) {
            problems.push(format!(
                "lost, and not a hand-out at the kill: {}",
                witnesses.job(job)
            ));
        }
    }

    // Each agent registered once, and through the balancer no agent
    // request was ever answered 404.
    let registered = registrations(&witness).await;
    for i in 0..HOSTS {
        let count = registered.get(&host(i)).copied().unwrap_or(0);
        if count != 1 {
            problems.push(format!(
                "{} registered {count} times:\n{}",
                host(i),
                witnesses.mentions("register")
            ));
        }
    }
    let agent_answers = balancer.as_ref().map(RoundRobin::agent_answers);
    if let Some(answers) = &agent_answers {
        let not_found: Vec<&String> = answers
            .errors
            .iter()
            .filter(|e| e.ends_with("404 Not Found"))
            .collect();
        if !not_found.is_empty() {
            problems.push(format!(
                "{} agent requests were answered 404: {:?}",
                not_found.len(),
                not_found.iter().take(10).collect::<Vec<_>>()
            ));
        }
    }

    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for job in jobs.values() {
        *statuses.entry(job.status.to_string()).or_default() += 1;
    }
    let lost_handouts = witnesses
        .mentions("its agent does not have it")
        .lines()
        .count();
    eprintln!(
        "cluster proof ({mode:?}): agents were answered {:?}; {} deliveries in {attempts} attempts ({duplicates} answered as duplicates; \
         failed attempts by instance {failures_by_instance:?}); {answered_before_kill} answered when \
         controller {KILLED} was killed at {killed_at:?}, back after {downtime:?}; all answered after \
         {pushed:?}, all final after {settled:?}; {} jobs {statuses:?}, {} runs on {} hosts; \
         {lost_handouts} hand-outs lost with the killed instance; total {:?}",
        agent_answers.map(|a| a.by_status),
        deliveries.len(),
        jobs.len(),
        runs.len(),
        by_host.len(),
        began.elapsed()
    );
    assert!(deliveries.len() >= WEBHOOKS);
    assert!(
        problems.is_empty(),
        "{} problems (seed {seed:#x}):\n{}",
        problems.len(),
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Runs happened on every host, through every instance's agents.
    assert_eq!(
        by_host.len(),
        HOSTS,
        "hosts that ran something: {:?}",
        by_host.keys().collect::<Vec<_>>()
    );
    // The agents of the killed instance came back to it and deployed again;
    // through the balancer, the late agents deployed.
    let after_restart: Vec<usize> = match mode {
        Mode::Direct => (KILLED..HOSTS).step_by(CONTROLLERS).collect(),
        Mode::RoundRobin => (HOSTS - LATE_AGENTS..HOSTS).collect(),
    };
    let idle_after: Vec<String> = after_restart
        .into_iter()
        .map(host)
        .filter(|h| {
            !by_host
                .get(h.as_str())
                .is_some_and(|runs| runs.iter().any(|&(start, _, _)| start > back_at))
        })
        .collect();
    assert!(
        idle_after.is_empty(),
        "hosts that ran nothing after controller {KILLED} restarted: {idle_after:?}"
    );
    drop(agents);
    drop((servers, dead, balancer));
}
