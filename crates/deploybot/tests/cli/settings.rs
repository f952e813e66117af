//! Settings precedence: defaults < config file < DEPLOYBOT_* env < flags,
//! observed through where the server creates its database.

use std::path::Path;

use crate::common::{Server, deploybot, write};

/// A config file whose `listen` cannot be parsed: a server that starts with
/// it proves an upper layer replaced it.
fn write_config(path: &Path, data_dir: &Path) {
    write(
        path,
        &format!(
            "listen = \"not an address\"\ndata_dir = \"{}\"\n",
            data_dir.display()
        ),
    );
}

fn assert_database_in(dir: &Path) {
    assert!(
        dir.join("deploybot.db").is_file(),
        "no database in {}",
        dir.display()
    );
}

#[test]
fn the_environment_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_dir, env_dir) = (dir.path().join("A"), dir.path().join("B"));
    write_config(&dir.path().join("server.toml"), &file_dir);
    let mut cmd = deploybot(dir.path());
    cmd.arg("server")
        .env("DEPLOYBOT_CONFIG", "server.toml")
        .env("DEPLOYBOT_LISTEN", "127.0.0.1:0")
        .env("DEPLOYBOT_DATA_DIR", &env_dir);
    let _server = Server::start(cmd);

    assert_database_in(&env_dir);
    assert!(!file_dir.exists(), "the file's data_dir was used");
}

#[test]
fn flags_beat_the_environment_and_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_dir, env_dir, flag_dir) = (
        dir.path().join("A"),
        dir.path().join("B"),
        dir.path().join("C"),
    );
    write_config(&dir.path().join("server.toml"), &file_dir);
    let mut cmd = deploybot(dir.path());
    cmd.args(["server", "--config", "server.toml"])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&flag_dir)
        .env("DEPLOYBOT_LISTEN", "not an address either")
        .env("DEPLOYBOT_DATA_DIR", &env_dir);
    let _server = Server::start(cmd);

    assert_database_in(&flag_dir);
    assert!(!env_dir.exists(), "the environment's data_dir was used");
    assert!(!file_dir.exists(), "the file's data_dir was used");
}

#[test]
fn the_config_file_beats_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file_dir = dir.path().join("A");
    write(
        dir.path().join("server.toml"),
        &format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            file_dir.display()
        ),
    );
    let mut cmd = deploybot(dir.path());
    cmd.args(["server", "--config", "server.toml"]);
    let _server = Server::start(cmd);

    assert_database_in(&file_dir);
    assert!(!dir.path().join("deploybot-data").exists());
}

#[test]
fn with_no_settings_the_database_is_created_in_deploybot_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = deploybot(dir.path());
    // listen must not be the default 8080, which another process may hold.
    cmd.args(["server", "--listen", "127.0.0.1:0"]);
    let server = Server::start(cmd);

    assert_database_in(&dir.path().join("deploybot-data"));
    server
        .log
        .wait_for(0, "no apps.yaml found", crate::common::DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));
}

#[test]
fn an_unknown_key_in_the_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path().join("server.toml"),
        "listen = \"127.0.0.1:0\"\nlisten_port = 1\n",
    );
    let mut cmd = deploybot(dir.path());
    cmd.args(["server", "--config", "server.toml"]);
    let out = crate::common::run(cmd);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("server.toml"), "{out:?}");
    assert!(out.stderr.contains("listen_port"), "{out:?}");
}

#[test]
fn a_data_directory_others_may_read_is_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("open-data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = crate::common::server_command(dir.path(), &[]);
    cmd.arg("--data-dir").arg(&data);
    let server = Server::start(cmd);
    let line = server
        .log
        .wait_for(0, "has mode 755", crate::common::DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(line.contains("chmod 700"), "{line}");
    let db = data.join("deploybot.db");
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", db.display());
}
