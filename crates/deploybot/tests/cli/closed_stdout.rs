//! Every command whose reader goes away (`deploybot status | head -3`) ends
//! quietly as SIGPIPE would (exit 141), never with a panic (exit 101).

use crate::common::{
    Finished, Server, WEB_APPS_YAML, client, deploybot, run_into_closed_pipe, web_server_command,
    write,
};

fn assert_quiet_sigpipe_exit(out: &Finished) {
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

#[test]
fn local_commands_end_quietly_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);
    for args in [
        &["completions", "bash"][..],
        &["config", "example"],
        &["config", "check", "apps.yaml"],
    ] {
        let mut cmd = deploybot(dir.path());
        cmd.args(args);
        let out = run_into_closed_pipe(cmd);
        assert_quiet_sigpipe_exit(&out);
        assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
    }
}

#[test]
fn client_commands_end_quietly_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);
    let server = Server::start(web_server_command(dir.path()));
    for args in [
        &["status"][..],
        &["apps"],
        &["explain", "--repo", "acme/web", "--ref", "main"],
        &["status", "-o", "json"],
        &["jobs", "-o", "json"],
    ] {
        let mut cmd = client(dir.path(), &server.address);
        cmd.args(args);
        let out = run_into_closed_pipe(cmd);
        assert_quiet_sigpipe_exit(&out);
    }
}
