//! Uploading output: numbering, streams, batching, retries, redaction.

use deploybot_wire::{JobStatus, LogStream};

use crate::support::{Fake, job, script, start_agent};

const COUNTING: &str = r#"i=1
while [ $i -le "$1" ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done"#;

#[tokio::test]
async fn lines_are_numbered_and_uploaded_in_order_with_their_streams() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = script(dir.path(), "count.sh", COUNTING);
    command.push("600".into());
    fake.push_job(job("job-lines", command));
    let agent = start_agent(&fake, |_| {});

    let (report, record) = fake.report("job-lines").await;
    assert_eq!(report.status, JobStatus::Success);
    let lines = &record.stored["job-lines"];
    assert_eq!(lines.len(), 1200);
    assert_eq!((record.duplicates, record.gaps), (0, 0));
    for (index, line) in lines.iter().enumerate() {
        assert_eq!(line.line, index as u64 + 1);
        let prefix = match line.stream {
            LogStream::Stdout => "out ",
            LogStream::Stderr => "err ",
        };
        assert!(line.text.starts_with(prefix), "{line:?}");
    }
    // Arrival order across the two pipes is the OS's business; within each
    // stream the order is the script's.
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let numbers: Vec<u32> = lines
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text[4..].parse().unwrap())
            .collect();
        assert_eq!(numbers, (1..=600).collect::<Vec<_>>());
    }
    // 500 lines at most per request, and every request succeeded once.
    assert!(record.log_attempts.len() >= 3);
    assert!(
        record
            .log_attempts
            .iter()
            .all(|a| a.lines.len() <= 500 && a.status == 200)
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn failed_log_uploads_are_retried_without_duplicates_or_reordering() {
    let fake = Fake::start().await;
    fake.change(|r| r.fail_logs = 2);
    let dir = tempfile::tempdir().unwrap();
    let mut command = script(dir.path(), "count.sh", COUNTING);
    command.push("350".into());
    fake.push_job(job("job-retry", command));
    let agent = start_agent(&fake, |_| {});

    let (report, record) = fake.report("job-retry").await;
    assert_eq!(report.status, JobStatus::Success);
    let attempts = &record.log_attempts;
    assert_eq!(attempts[0].status, 500);
    assert_eq!(attempts[1].status, 500);
    assert_eq!(attempts[2].status, 200);
    // The same batch, line numbers and all, each time.
    assert_eq!(attempts[0].lines, attempts[1].lines);
    assert_eq!(attempts[1].lines, attempts[2].lines);
    let lines = &record.stored["job-retry"];
    assert_eq!(lines.len(), 700);
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| l.line == i as u64 + 1)
    );
    assert_eq!((record.duplicates, record.gaps), (0, 0));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn secrets_from_the_job_env_are_redacted() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let command = script(
        dir.path(),
        "leak.sh",
        r#"echo "token=$API_TOKEN"
echo "password=$Db_Password and again $Db_Password" >&2
echo "short=$SHORT_KEY plain=$PLAIN"
exit 1"#,
    );
    let mut job = job("job-secret", command);
    for (name, value) in [
        ("API_TOKEN", "tok-123456"),
        ("Db_Password", "hunter22"),
        ("SHORT_KEY", "abc"),
        ("PLAIN", "visible-value"),
    ] {
        job.deploy.env.insert(name.into(), value.into());
    }
    fake.push_job(job);
    let agent = start_agent(&fake, |_| {});

    let (report, record) = fake.report("job-secret").await;
    let mut texts = record.texts("job-secret");
    texts.sort();
    assert_eq!(
        texts,
        [
            "password=*** and again ***",
            "short=abc plain=visible-value",
            "token=***",
        ]
    );
    let error = report.error.unwrap();
    assert!(
        !error.contains("tok-123456") && !error.contains("hunter22"),
        "{error}"
    );
    agent.stop().await.unwrap();
}
