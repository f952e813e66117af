//! Tests only: the PostgreSQL server the tests run against, and a fresh
//! database per test on it.
//!
//! The server is the one `DEPLOYBOT_TEST_POSTGRES_URL` names, by default
//! this machine's on 127.0.0.1:5432 (user `postgres`, trust auth, as
//! `.ci/postgres.sh` sets it up). When none answers there and PostgreSQL's
//! programs are installed (`initdb`, `postgres`), each test process starts
//! a throwaway server of its own in a temporary directory, stopped and
//! removed once the process has exited. With neither, the PostgreSQL tests
//! are skipped with a message saying how to run them, except under CI
//! (`CI` set), where that is a failure. `DEPLOYBOT_TEST_POSTGRES=skip`
//! skips them on purpose.
//!
//! Databases are made and dropped with `psql`, which comes with the server.

#![forbid(unsafe_code)]

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the tests look for a server when the environment says nothing. No
/// TLS on loopback: unoptimized test builds would spend their time in it.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

/// How long a throwaway server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The admin URL of the server the tests use, or `None` when they are
/// skipped (after saying so, once per process).
pub fn server() -> Option<&'static str> {
    static SERVER: OnceLock<Option<String>> = OnceLock::new();
    SERVER.get_or_init(find_server).as_deref()
}

/// Says `message` on stderr even while the test harness captures the
/// tests' output (it captures `eprintln!`, not writes to the handle).
fn say(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

fn find_server() -> Option<String> {
    if std::env::var("DEPLOYBOT_TEST_POSTGRES").as_deref() == Ok("skip") {
        say("DEPLOYBOT_TEST_POSTGRES=skip: the PostgreSQL tests are skipped");
        return None;
    }
    let configured = std::env::var("DEPLOYBOT_TEST_POSTGRES_URL").ok();
    let url = configured.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
    if answers(&url) {
        return Some(url);
    }
    if configured.is_some() {
        panic!(
            "DEPLOYBOT_TEST_POSTGRES_URL names a PostgreSQL server that does not answer ({})",
            redact(&url)
        );
    }
    match bin_dir() {
        Some(bin) => Some(start_throwaway(&bin)),
        None => {
            let how = "Run them with a PostgreSQL server on 127.0.0.1:5432 (`.ci/postgres.sh` \
                       installs and starts one), or with PostgreSQL's programs installed \
                       (`apt-get install postgresql`: the tests then start a server of their \
                       own), or point DEPLOYBOT_TEST_POSTGRES_URL at a server.";
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI must run the PostgreSQL tests, but no server answers and none can be started. {how}"
                );
            }
            say(&format!(
                "SKIPPED: the PostgreSQL tests (no server answers on 127.0.0.1:5432, and PostgreSQL is not installed). {how}"
            ));
            None
        }
    }
}

/// Whether `psql` can run a query on the server `url` names.
fn answers(url: &str) -> bool {
    let Some(address) = host_and_port(url) else {
        return false;
    };
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    reachable
        && Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-d", url, "-c", "SELECT 1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn host_and_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    })
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}***{}", &url[..start + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The directory holding `initdb` and `postgres`, if PostgreSQL is installed.
fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    // Debian keeps them out of PATH, one directory per major version.
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    on_path
        .into_iter()
        .chain(debian)
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
}

/// Starts a server of this process's own; its admin URL. PostgreSQL will not
/// run as root: as root, it runs as the `postgres` user the package made.
#[expect(
    clippy::zombie_processes,
    reason = "the watcher outlives this process on purpose: it stops the server once the tests are gone"
)]
fn start_throwaway(bin: &Path) -> String {
    let dir = tempfile::Builder::new()
        .prefix("deploybot-test-postgres-")
        .tempdir()
        .expect("a temporary directory for the test server")
        .keep();
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    let run_as = |program: &Path| {
        let mut cmd = if as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        cmd.stdin(Stdio::null());
        cmd
    };
    if as_root {
        let owned = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(owned, "cannot give {} to the postgres user", dir.display());
    }
    let data = dir.join("data");
    let initdb = run_as(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
        .stdout(Stdio::null())
        .output()
        .expect("run initdb");
    assert!(
        initdb.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    // The server runs under a watcher that stops it, and removes its
    // directory, once this test process is gone.
    let postgres = format!(
        "{} -D {} -p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
        bin.join("postgres").display(),
        data.display(),
        dir.display()
    );
    let watcher = format!(
        "{postgres} >{log} 2>&1 & pg=$!\n\
         while [ -d /proc/{me} ] && kill -0 $pg 2>/dev/null; do sleep 1; done\n\
         kill -INT $pg 2>/dev/null; wait $pg; rm -rf {dir}",
        log = dir.join("server.log").display(),
        me = std::process::id(),
        dir = dir.display(),
    );
    let mut sh = run_as(Path::new("/bin/sh"));
    sh.args(["-c", &watcher])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sh.spawn().expect("start the test PostgreSQL server");
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let deadline = Instant::now() + START_TIMEOUT;
    while !answers(&url) {
        assert!(
            Instant::now() < deadline,
            "the test PostgreSQL server did not start: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    say(&format!(
        "the PostgreSQL tests run on a server of their own at 127.0.0.1:{port} (none answered on 127.0.0.1:5432)"
    ));
    url
}

/// A database made for one test, dropped when this is dropped.
pub struct Database {
    /// Its URL.
    pub url: String,
    pub name: String,
    /// The server's admin URL, for statements about the database itself.
    pub admin_url: &'static str,
}

impl Database {
    /// A fresh database named `{prefix}_…`, or `None` when the PostgreSQL
    /// tests are skipped.
    pub fn create(prefix: &str) -> Option<Database> {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let server = server()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "{prefix}_{}_{nanos}_{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        );
        psql(
            server,
            &format!("CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"),
        );
        Some(Database {
            url: with_database(server, &name),
            name,
            admin_url: server,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(
            self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` on the server `url` names; panics if it fails.
pub fn psql(url: &str, sql: &str) {
    let status = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .status()
        .unwrap_or_else(|err| panic!("psql: {err} (it comes with PostgreSQL's client)"));
    assert!(
        status.success(),
        "psql {sql:?} failed against {}",
        redact(url)
    );
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{database}{query}", &base[..authority_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_and_put_together() {
        assert_eq!(
            host_and_port("postgres://postgres@127.0.0.1:5432/test?sslmode=disable").as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(
            host_and_port("postgres://u:p@db/x").as_deref(),
            Some("db:5432")
        );
        assert_eq!(
            with_database("postgres://u@h:1/test?sslmode=disable", "other"),
            "postgres://u@h:1/other?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://u:p@db?sslmode=disable", "x"),
            "postgresql://u:p@db/x?sslmode=disable"
        );
        assert_eq!(redact("postgres://u:secret@h/x"), "postgres://***@h/x");
    }
}
