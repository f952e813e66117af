//! Every list is paged: a page has at most `limit` entries, and the last
//! one's key (or `next_after`) gets the next page, until all were seen once.

use deploybot_wire::{Agent, Delivery, HostsResponse, Job, TokensResponse};
use serde_json::json;

use crate::helpers::{SHA_A, SHA_B, SHA_C, ok_json, spawn_app};

#[tokio::test]
async fn tokens_agents_hosts_jobs_and_deliveries_come_in_pages() {
    let app = spawn_app().await;
    for n in 0..5 {
        app.make_token(json!({"name": format!("t{n}"), "role": "read"}))
            .await;
    }
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(after) => format!("/v1/tokens?limit=2&after={after}"),
            None => "/v1/tokens?limit=2".to_owned(),
        };
        let page: TokensResponse = ok_json(app.get(&query).await).await;
        assert!(page.tokens.len() <= 2);
        names.extend(page.tokens.iter().map(|t| t.name.clone()));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(names, ["t0", "t1", "t2", "t3", "t4"]);

    for host in ["web-01", "web-02", "api-01"] {
        app.register(host).await;
    }
    let first: Vec<Agent> = ok_json(app.get("/v1/agents?limit=2").await).await;
    let rest: Vec<Agent> = ok_json(
        app.get(&format!("/v1/agents?limit=2&after={}", first[1].hostname))
            .await,
    )
    .await;
    let hosts: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|a| a.hostname.as_str())
        .collect();
    assert_eq!(hosts, ["api-01", "web-01", "web-02"]);

    // apps.yaml's hosts: api-01, docs-01, web-01, web-02.
    let page: HostsResponse = ok_json(app.get("/v1/hosts?limit=3").await).await;
    assert_eq!(page.hosts.len(), 3);
    let next = page.next_after.expect("a next page");
    let last: HostsResponse =
        ok_json(app.get(&format!("/v1/hosts?limit=3&after={next}")).await).await;
    assert_eq!(
        last.hosts
            .iter()
            .map(|h| h.hostname.as_str())
            .collect::<Vec<_>>(),
        ["web-02"]
    );
    assert_eq!(last.next_after, None);

    for (n, sha) in [SHA_A, SHA_B, SHA_C].into_iter().enumerate() {
        app.push(&format!("page-{n}"), "acme/docs", "refs/heads/main", sha)
            .await;
        app.create_job_ok("acme/web", "web-02", sha).await;
    }
    let newest: Vec<Job> = ok_json(app.get("/v1/jobs?host=web-02&limit=2").await).await;
    let older: Vec<Job> = ok_json(
        app.get(&format!(
            "/v1/jobs?host=web-02&limit=2&before={}",
            newest[1].id
        ))
        .await,
    )
    .await;
    let shas: Vec<&str> = newest
        .iter()
        .chain(&older)
        .map(|j| j.sha.as_deref().unwrap())
        .collect();
    assert_eq!(shas, [SHA_C, SHA_B, SHA_A]);

    let newest: Vec<Delivery> = ok_json(app.get("/v1/deliveries?limit=2").await).await;
    let older: Vec<Delivery> = ok_json(
        app.get(&format!(
            "/v1/deliveries?limit=2&before={}",
            newest[1].delivery_id
        ))
        .await,
    )
    .await;
    let ids: Vec<&str> = newest
        .iter()
        .chain(&older)
        .map(|d| d.delivery_id.as_str())
        .collect();
    assert_eq!(ids, ["page-2", "page-1", "page-0"]);
}
