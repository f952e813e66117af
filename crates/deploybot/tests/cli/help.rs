//! `--help` and `--version`.

use crate::common::{deploybot, run};

#[test]
fn help_lists_the_server_and_config_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = deploybot(dir.path());
    cmd.arg("--help");
    let out = run(cmd);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("server"), "{out:?}");
    assert!(out.stdout.contains("config"), "{out:?}");
}

#[test]
fn server_help_lists_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = deploybot(dir.path());
    cmd.args(["server", "--help"]);
    let out = run(cmd);
    assert!(out.status.success(), "{out:?}");
    for flag in [
        "--listen",
        "--config",
        "--data-dir",
        "--apps",
        "--database-url",
        "--lease-timeout",
        "SIGHUP",
    ] {
        assert!(out.stdout.contains(flag), "{flag} missing: {out:?}");
    }
}

#[test]
fn version_prints_the_package_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = deploybot(dir.path());
    cmd.arg("--version");
    let out = run(cmd);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!("deploybot {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn no_command_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(deploybot(dir.path()));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("Usage"), "{out:?}");
}
