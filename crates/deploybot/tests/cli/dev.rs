//! `deploybot dev`: the quick start's controller, agent and demo app.

use std::process::{Child, Stdio};

use crate::common::{DEADLINE, Log, deploybot, run};

/// `deploybot dev` on a port of its own; killed when dropped.
struct Dev {
    child: Child,
    stdout: Log,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The banner gives everything the CLI needs on a port other than the
// default (`export DEPLOYBOT_URL=… DEPLOYBOT_TOKEN=…`), and the CLI commands
// it names work as printed; the demo's script says when it got no sha
// rather than printing an empty one.
#[test]
fn the_dev_banner_exports_what_the_cli_needs_and_its_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = deploybot(dir.path());
    cmd.args(["dev", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn deploybot dev");
    let stdout = Log::follow(child.stdout.take().expect("piped stdout"));
    let dev = Dev { child, stdout };
    let banner = dev
        .stdout
        .wait_for(0, "Ctrl-C stops everything", DEADLINE)
        .map(|_| dev.stdout.text())
        .unwrap_or_else(|err| panic!("no banner: {err}"));
    let export = banner
        .lines()
        .find_map(|line| line.trim().strip_prefix("export "))
        .unwrap_or_else(|| panic!("no export line in {banner}"));
    let vars: Vec<(&str, &str)> = export
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let [("DEPLOYBOT_URL", url), ("DEPLOYBOT_TOKEN", token)] = vars[..] else {
        panic!("unexpected export line {export:?}");
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_ne!(url, "http://127.0.0.1:8080", "{banner}");
    for command in ["deploybot logs -f", "deploybot jobs", "deploybot hosts"] {
        assert!(banner.contains(command), "{command} missing: {banner}");
    }

    let client = |args: &[&str]| {
        let mut cmd = deploybot(dir.path());
        cmd.env("DEPLOYBOT_URL", url)
            .env("DEPLOYBOT_TOKEN", token)
            .args(args);
        run(cmd)
    };
    let deployed = client(&["deploy", "--app", "demo", "--ref", "main", "--wait"]);
    assert!(deployed.status.success(), "{deployed:?}");
    assert!(
        deployed
            .stdout
            .contains("deploying demo (demo/hello) main @ its current commit (no sha given)"),
        "{deployed:?}"
    );
    let jobs = client(&["jobs"]);
    assert!(jobs.status.success(), "{jobs:?}");
    assert!(jobs.stdout.contains("  demo  "), "{jobs:?}");
    assert!(jobs.stdout.contains("  success  "), "{jobs:?}");
}
