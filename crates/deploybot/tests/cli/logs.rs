//! The controller's own log: JSON lines when stderr is not a terminal,
//! each parseable, carrying the ids of what it is about as fields.

use serde_json::Value;

use crate::common::{Server, WEB_APPS_YAML, sha, web_server_command, write};

#[tokio::test]
async fn off_a_terminal_the_log_is_json_lines_carrying_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);
    let mut cmd = web_server_command(dir.path());
    // `auto`, the default: stderr is a pipe here, so JSON.
    cmd.env_remove("DEPLOYBOT_LOG_FORMAT");
    let server = Server::start(cmd);

    let answer = server.push("log-ids-1", "refs/heads/main", &sha(1)).await;
    let line = server
        .log
        .wait_for(0, "webhook received", crate::common::DEADLINE)
        .expect("the webhook is logged");

    let mut lines = 0;
    for text in server.log.text().lines() {
        let parsed: Value = serde_json::from_str(text)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {text}"));
        assert!(
            parsed["level"].is_string() && parsed["timestamp"].is_string(),
            "{text}"
        );
        lines += 1;
    }
    assert!(lines >= 3, "{}", server.log.text());
    let received: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(received["message"], "webhook received");
    assert_eq!(received["delivery"], "log-ids-1");
    assert_eq!(received["jobs"], answer.jobs_created.len());
    // No secret reaches the log.
    assert!(!server.log.text().contains(crate::common::ADMIN_TOKEN));
    assert!(!server.log.text().contains(crate::common::SECRET));
}
