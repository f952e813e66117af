//! Authentication as an operator meets it: the first start without an admin
//! token makes one and shows it once; the open mode warns on every start.

use reqwest::StatusCode;

use crate::common::{Server, WEB_APPS_YAML, server_command, write};

fn server_without_admin_token(dir: &std::path::Path) -> Server {
    let mut cmd = server_command(dir, &["--apps", "apps.yaml", "--data-dir", "data"]);
    cmd.env_remove("DEPLOYBOT_ADMIN_TOKEN");
    Server::start(cmd)
}

/// The `dbt_api_…` token in the server's log, if it printed one.
fn printed_token(server: &Server) -> Option<String> {
    server
        .log
        .text()
        .split_whitespace()
        .find(|word| word.starts_with("dbt_api_"))
        .map(str::to_owned)
}

#[tokio::test]
async fn the_first_start_without_an_admin_token_makes_one_and_shows_it_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);

    let mut first = server_without_admin_token(dir.path());
    let token = printed_token(&first).expect("the first start prints an admin token");
    let with_token = first
        .client
        .get(first.url("/v1/tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);
    let without = reqwest::get(first.url("/v1/jobs")).await.unwrap();
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    first.signal("TERM");
    first.wait_exit();

    let second = server_without_admin_token(dir.path());
    assert_eq!(printed_token(&second), None, "{}", second.log.text());
    let still_valid = second
        .client
        .get(second.url("/v1/tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(still_valid.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_open_mode_needs_no_token_and_warns_loudly() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);
    let server = Server::start(server_command(
        dir.path(),
        &[
            "--apps",
            "apps.yaml",
            "--data-dir",
            "data",
            "--insecure-no-auth",
        ],
    ));

    let open = reqwest::get(server.url("/v1/jobs")).await.unwrap();

    assert_eq!(open.status(), StatusCode::OK);
    assert!(
        server.log.text().contains("AUTHENTICATION IS OFF"),
        "{}",
        server.log.text()
    );
}

/// A second machine that says it is web-01 is refused while the first has
/// the host; `deploybot agents replace web-01` makes the token that lets it
/// take the host over, and the first is then out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_replace_makes_the_token_that_moves_a_host_to_a_new_agent() {
    use crate::common::{AgentProcess, DEADLINE, agent_command, client, controller_command, run};
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);
    let server = tokio::task::block_in_place(|| {
        Server::start(controller_command(dir.path(), "127.0.0.1:0", "10s"))
    });
    let old_dir = dir.path().join("old");
    let new_dir = dir.path().join("new");
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let old = tokio::task::block_in_place(|| {
        AgentProcess::start(agent_command(&old_dir, &server.address, "web-01", "2s"))
    });

    // The shared enrollment token does not take the host.
    let mut second = agent_command(&new_dir, &server.address, "web-01", "2s");
    second.stderr(std::process::Stdio::piped());
    let refused = tokio::task::block_in_place(|| run(second));
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("deploybot agents replace web-01"),
        "{refused:?}"
    );

    // The admin makes a token for the host; the new agent enrolls with it.
    let mut replace = client(dir.path(), &server.address);
    replace.args(["agents", "replace", "web-01"]);
    let made = tokio::task::block_in_place(|| run(replace));
    assert!(made.status.success(), "{made:?}");
    let token = made.stdout.trim().to_owned();
    assert!(token.starts_with("dbt_enroll_"), "{made:?}");
    assert!(made.stderr.contains("takes the host over"), "{made:?}");
    let token_file = new_dir.join("token");
    write(&token_file, &token);
    let mut cmd = agent_command(&new_dir, &server.address, "web-01", "2s");
    cmd.env_remove("DEPLOYBOT_ENROLLMENT_TOKEN")
        .arg("--enrollment-token-file")
        .arg(&token_file);
    let new = tokio::task::block_in_place(|| AgentProcess::start(cmd));
    assert_eq!(new.id, old.id, "one host, one agent id");
    // The old agent is refused from now on, and says why.
    old.log
        .wait_for(0, "gave this host to another agent", DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));
    drop((old, new, server));
}
