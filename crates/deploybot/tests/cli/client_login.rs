//! `deploybot login`, where client commands find the controller and token,
//! `completions` and the help of the client commands.

use std::path::Path;

use tokio::task::block_in_place;

use crate::common::{
    ADMIN_TOKEN, Server, WEB_APPS_YAML, deploybot, run, run_with_stdin, web_server_command, write,
};

/// `deploybot` in `dir` with `XDG_CONFIG_HOME=dir/config` and neither
/// `DEPLOYBOT_URL` nor `DEPLOYBOT_TOKEN`.
fn bare(dir: &Path) -> std::process::Command {
    let mut cmd = deploybot(dir);
    cmd.env("XDG_CONFIG_HOME", dir.join("config"));
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_checks_the_token_then_saves_it_for_later_commands() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root.join("apps.yaml"), WEB_APPS_YAML);
    let server = block_in_place(|| Server::start(web_server_command(root)));
    let file = root.join("config/deploybot/cli.toml");

    // Before: the default URL, no token.
    let mut cmd = bare(root);
    cmd.arg("jobs");
    let before = block_in_place(|| run(cmd));
    assert_ne!(before.status.code(), Some(0), "{before:?}");

    // A refused token is not saved.
    let mut cmd = bare(root);
    cmd.args(["login", "--url", &server.address, "--token-stdin"]);
    let refused = block_in_place(|| run_with_stdin(cmd, "dbt_api_wrong\n"));
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    assert!(!file.exists());

    let mut cmd = bare(root);
    cmd.args(["login", "--url", &server.address, "--token-stdin"]);
    let login = block_in_place(|| run_with_stdin(cmd, &format!("{ADMIN_TOKEN}\n")));
    assert_eq!(login.status.code(), Some(0), "{login:?}");
    assert!(
        login.stdout.contains(&file.display().to_string()),
        "{login:?}"
    );
    assert!(!login.stdout.contains(ADMIN_TOKEN), "{login:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text,
        format!("url = \"{}\"\ntoken = \"{ADMIN_TOKEN}\"\n", server.address)
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let dir_mode = std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700, "{dir_mode:o}");
    }

    // Later commands use the file…
    let mut cmd = bare(root);
    cmd.arg("jobs");
    let after = block_in_place(|| run(cmd));
    assert_eq!(after.status.code(), Some(0), "{after:?}");
    // …but the environment wins over it, and a flag over the environment.
    let mut cmd = bare(root);
    cmd.env("DEPLOYBOT_TOKEN", "dbt_api_from-env").arg("jobs");
    assert_eq!(block_in_place(|| run(cmd)).status.code(), Some(4));
    let mut cmd = bare(root);
    cmd.env("DEPLOYBOT_TOKEN", "dbt_api_from-env")
        .args(["jobs", "--token", ADMIN_TOKEN]);
    assert_eq!(block_in_place(|| run(cmd)).status.code(), Some(0));
    let mut cmd = bare(root);
    cmd.env("DEPLOYBOT_URL", "http://127.0.0.1:9").arg("jobs");
    let elsewhere = block_in_place(|| run(cmd));
    assert_eq!(elsewhere.status.code(), Some(3), "{elsewhere:?}");
    assert!(
        elsewhere.stderr.contains("http://127.0.0.1:9"),
        "{elsewhere:?}"
    );
    let mut cmd = bare(root);
    cmd.env("DEPLOYBOT_URL", "http://127.0.0.1:9")
        .args(["--url", &server.address, "jobs"]);
    assert_eq!(block_in_place(|| run(cmd)).status.code(), Some(0));
}

#[test]
fn login_without_a_token_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bare(dir.path());
    cmd.args(["login", "--url", "http://127.0.0.1:9"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--token-stdin"), "{out:?}");
}

#[test]
fn completions_print_a_script_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _deploybot"),
        ("zsh", "#compdef deploybot"),
        ("fish", "complete -c deploybot"),
    ] {
        let mut cmd = deploybot(dir.path());
        cmd.args(["completions", shell]);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{shell}: {out:?}");
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        for command in ["deploy", "logs", "tokens", "explain"] {
            assert!(out.stdout.contains(command), "{shell}: {command} missing");
        }
    }
}

#[test]
fn every_client_command_has_examples_and_the_top_help_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = deploybot(dir.path());
    cmd.arg("--help");
    let top = run(cmd);
    for needle in [
        "Exit codes",
        "3  the controller cannot be reached",
        "DEPLOYBOT_URL",
        "cli.toml",
    ] {
        assert!(top.stdout.contains(needle), "{needle}: {}", top.stdout);
    }
    for command in [
        &["deploy"][..],
        &["jobs"],
        &["job"],
        &["logs"],
        &["cancel"],
        &["retry"],
        &["hosts"],
        &["agents"],
        &["agents", "revoke"],
        &["apps"],
        &["explain"],
        &["deliveries"],
        &["tokens"],
        &["tokens", "create"],
        &["tokens", "revoke"],
        &["audit"],
        &["login"],
        &["completions"],
    ] {
        let mut cmd = deploybot(dir.path());
        cmd.args(command).arg("--help");
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{command:?}: {out:?}");
        assert!(
            out.stdout.contains("Example"),
            "{command:?} has no examples:\n{}",
            out.stdout
        );
    }
    // The token's value never shows in help, wherever it comes from.
    let mut cmd = deploybot(dir.path());
    cmd.env("DEPLOYBOT_TOKEN", "dbt_api_secret-value")
        .env("DEPLOYBOT_URL", "http://secret-host:1")
        .args(["jobs", "--help"]);
    let out = run(cmd);
    assert!(!out.stdout.contains("secret"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_controller_with_a_private_ca_needs_ca_cert_which_login_saves() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cli/fixtures/tls");
    write(root.join("apps.yaml"), WEB_APPS_YAML);
    let mut cmd = web_server_command(root);
    cmd.arg("--tls-cert")
        .arg(fixtures.join("server.pem"))
        .arg("--tls-key")
        .arg(fixtures.join("server.key"));
    let server = block_in_place(|| Server::start(cmd));
    assert!(server.address.starts_with("https://"), "{}", server.address);

    let mut cmd = bare(root);
    cmd.env("DEPLOYBOT_TOKEN", ADMIN_TOKEN)
        .args(["jobs", "--url", &server.address]);
    let untrusted = block_in_place(|| run(cmd));
    assert_eq!(untrusted.status.code(), Some(3), "{untrusted:?}");
    assert!(
        untrusted.stderr.starts_with(&format!(
            "error: cannot reach the controller at {} (",
            server.address
        )),
        "{untrusted:?}"
    );
    assert!(
        untrusted.stderr.contains(
            "hint: if its certificate comes from a private CA, pass that CA with --ca-cert"
        ),
        "{untrusted:?}"
    );

    let mut cmd = bare(root);
    cmd.env("DEPLOYBOT_CA_CERT", fixtures.join("ca.pem")).args([
        "login",
        "--url",
        &server.address,
        "--token-stdin",
    ]);
    let login = block_in_place(|| run_with_stdin(cmd, ADMIN_TOKEN));
    assert_eq!(login.status.code(), Some(0), "{login:?}");
    let mut cmd = bare(root);
    cmd.arg("jobs");
    let later = block_in_place(|| run(cmd));
    assert_eq!(later.status.code(), Some(0), "{later:?}");

    let mut cmd = bare(root);
    cmd.args(["jobs", "--ca-cert"]).arg(root.join("apps.yaml"));
    let not_pem = block_in_place(|| run(cmd));
    assert_eq!(not_pem.status.code(), Some(2), "{not_pem:?}");
    assert!(not_pem.stderr.contains("no PEM certificate"), "{not_pem:?}");
}
