//! `deploybot config check|example`, and a server refusing a bad apps.yaml.

use std::path::Path;

use crate::common::{Server, WEB_APPS_YAML, deploybot, run, server_command, write};

/// Line 5 has an unknown key (`colour`, column 5).
const UNKNOWN_KEY_YAML: &str = r#"apps:
  - name: web
    repo: acme/web
    hosts: [web-01]
    colour: blue
    deploy:
      command: [./deploy.sh]
"#;

/// The second `web` (line 7, column 11) repeats the first app's name.
const DUPLICATE_NAME_YAML: &str = r#"apps:
  - name: web
    repo: acme/web
    hosts: [web-01]
    deploy:
      command: [./deploy.sh]
  - name: web
    repo: acme/www
    hosts: [web-02]
    deploy:
      command: [./deploy.sh]
"#;

fn check(dir: &Path, file: &str) -> crate::common::Finished {
    let mut cmd = deploybot(dir);
    cmd.args(["config", "check", file]);
    run(cmd)
}

#[test]
fn config_check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);
    let out = check(dir.path(), "apps.yaml");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("apps.yaml: ok, 1 app(s)"), "{out:?}");
    assert!(out.stdout.contains("web (acme/web)"), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn config_check_says_what_an_app_that_lists_only_tags_deploys() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path().join("apps.yaml"),
        "apps:\n  - name: release\n    repo: acme/web\n    hosts: [web-01]\n    tags: [\"v*\"]\n    deploy: {command: [./deploy]}\n",
    );
    let out = check(dir.path(), "apps.yaml");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout
            .contains("deploys tags [v*] only, no branch pushes (it lists tags and no branches)"),
        "{out:?}"
    );
}

#[test]
fn config_check_reports_an_unknown_key_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), UNKNOWN_KEY_YAML);
    let out = check(dir.path(), "apps.yaml");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("apps.yaml:5:5: "), "{out:?}");
    assert!(out.stderr.contains("colour"), "{out:?}");
    assert!(!out.stdout.contains("ok"), "{out:?}");
}

#[test]
fn config_check_reports_a_duplicate_app_name_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), DUPLICATE_NAME_YAML);
    let out = check(dir.path(), "apps.yaml");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("apps.yaml:7:11: duplicate app name \"web\""),
        "{out:?}"
    );
}

#[test]
fn config_check_of_a_missing_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), "nowhere.yaml");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: nowhere.yaml: cannot read: No such file or directory"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn config_check_of_a_missing_file_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), "nowhere.yaml");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr.matches("No such file or directory").count(),
        1,
        "{out:?}"
    );
}

#[test]
fn a_server_with_an_invalid_apps_yaml_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    // The default ./apps.yaml: optional, but used (and checked) when present.
    write(dir.path().join("apps.yaml"), UNKNOWN_KEY_YAML);
    let out = run(server_command(dir.path(), &["--data-dir", "data"]));
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("apps.yaml:5:5: "), "{out:?}");
    assert!(out.stderr.contains("colour"), "{out:?}");
    assert!(!out.stderr.contains("listening on"), "{out:?}");
}

#[test]
fn a_server_with_semantic_errors_in_apps_yaml_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), DUPLICATE_NAME_YAML);
    let out = run(server_command(
        dir.path(),
        &["--apps", "apps.yaml", "--data-dir", "data"],
    ));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("apps.yaml:7:11: duplicate app name \"web\""),
        "{out:?}"
    );
}

#[test]
fn a_server_with_an_invalid_apps_yaml_reports_each_problem_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), DUPLICATE_NAME_YAML);
    let out = run(server_command(dir.path(), &["--data-dir", "data"]));
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(
        out.stderr.matches("duplicate app name").count(),
        1,
        "{out:?}"
    );
}

#[test]
fn config_example_prints_a_commented_toml_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = deploybot(dir.path());
    cmd.args(["config", "example"]);
    let out = run(cmd);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with('#'), "{out:?}");
    for key in [
        "listen = ",
        "data_dir = ",
        "apps = ",
        "# database_url = ",
        "# webhook_secret = ",
        "lease_timeout = ",
    ] {
        assert!(out.stdout.contains(key), "{key} missing: {out:?}");
    }
}

/// `deploybot config example > server.toml`.
fn write_example_config(dir: &Path) {
    let mut cmd = deploybot(dir);
    cmd.args(["config", "example"]);
    let out = run(cmd);
    assert!(out.status.success(), "{out:?}");
    write(dir.join("server.toml"), &out.stdout);
}

#[test]
fn the_example_config_starts_a_server_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    write_example_config(dir.path());
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("fresh");
    let mut cmd = deploybot(dir.path());
    cmd.args([
        "server",
        "--config",
        "server.toml",
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(&data_dir);
    let server = Server::start(cmd);

    // --listen beat the file's 127.0.0.1:8080, --data-dir its deploybot-data.
    assert!(!server.address.ends_with(":8080"), "{}", server.address);
    assert!(
        data_dir.join("deploybot.db").is_file(),
        "the database is created on first start"
    );
    assert!(!dir.path().join("deploybot-data").exists());
    // The file's `apps = "apps.yaml"` was used.
    server
        .log
        .wait_for(0, "apps=1", crate::common::DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn the_example_config_starts_without_an_apps_yaml_like_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    write_example_config(dir.path());
    let mut cmd = deploybot(dir.path());
    cmd.args([
        "server",
        "--config",
        "server.toml",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        "data",
    ]);
    let server = Server::start(cmd);
    server
        .log
        .wait_for(0, "no apps.yaml found", crate::common::DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));
}
