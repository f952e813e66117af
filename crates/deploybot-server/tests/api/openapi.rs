//! The OpenAPI document (`/openapi.json`) says what the API really does:
//! every parameter where it is sent, every status an operation may answer,
//! operations named once and linked to what follows them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::helpers::{ok_json, spawn_app};

/// Every operation of the document, as (method, path, operation).
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            all.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

async fn document() -> Value {
    let app = spawn_app().await;
    ok_json(app.get("/openapi.json").await).await
}

#[tokio::test]
async fn the_openapi_document_describes_the_jobs_api() {
    let document = document().await;

    let paths = document["paths"].as_object().expect("paths object");
    for path in [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/status",
        "/v1/agents/{id}/heartbeat",
        "/v1/webhooks/github",
        "/v1/hosts",
        "/health",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    assert!(paths["/v1/jobs"]["post"].is_object());
    assert!(paths["/v1/jobs"]["get"].is_object());
    // Every answer of every operation declares the request id it carries.
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    response["headers"]["X-Request-Id"].is_object(),
                    "{method} {path} {status} declares no X-Request-Id"
                );
            }
        }
    }
}

#[tokio::test]
async fn operation_ids_are_unique() {
    let document = document().await;

    let mut seen = BTreeMap::new();
    for (method, path, operation) in operations(&document) {
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"))
            .to_owned();
        if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
            panic!("{id} names both {other} and {method} {path}");
        }
    }
    assert!(seen.len() >= 26, "{seen:?}");
}

#[tokio::test]
async fn path_parameters_are_in_the_path_and_the_rest_in_the_query_or_headers() {
    let document = document().await;

    for (method, path, operation) in operations(&document) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().unwrap();
            let placed = parameter["in"].as_str().unwrap();
            let in_template = path.contains(&format!("{{{name}}}"));
            assert_eq!(
                placed == "path",
                in_template,
                "{method} {path}: parameter {name} is declared in {placed}"
            );
        }
    }
    let explain = &document["paths"]["/v1/explain"]["get"]["parameters"];
    let query: BTreeSet<&str> = explain
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(query, BTreeSet::from(["repo", "ref"]));
    let limit = document["paths"]["/v1/jobs/{id}/logs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .cloned()
        .unwrap();
    assert_eq!(limit["schema"]["maximum"], 5000);
    assert_eq!(limit["schema"]["minimum"], 1);
}

#[tokio::test]
async fn every_operation_declares_the_answers_it_shares_with_others() {
    let document = document().await;

    for (method, path, operation) in operations(&document) {
        let responses = operation["responses"].as_object().unwrap();
        let declares = |status: &str| responses.contains_key(status);
        let bearer = match operation.get("security") {
            Some(requirements) => requirements
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.get("bearer").is_some()),
            None => true,
        };
        if bearer {
            for status in ["401", "403", "429"] {
                assert!(
                    declares(status),
                    "{method} {path} does not declare {status}"
                );
            }
            assert!(
                responses["429"]["headers"]["Retry-After"].is_object(),
                "{method} {path}: 429 without Retry-After"
            );
        }
        let json_body = operation["requestBody"]["content"]["application/json"].is_object();
        if json_body {
            for status in ["400", "413", "415"] {
                assert!(
                    declares(status),
                    "{method} {path} does not declare {status}"
                );
            }
        }
        let query = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["in"] == "query");
        if query {
            assert!(declares("400"), "{method} {path} does not declare 400");
        }
        // Any operation may meet a controller short of a resource; those
        // that declare their own 503 (the probes) say what it means there.
        assert!(declares("503"), "{method} {path} does not declare 503");
        if bearer {
            assert!(
                responses["503"]["headers"]["Retry-After"].is_object(),
                "{method} {path}: 503 without Retry-After"
            );
        }
    }
}

#[tokio::test]
async fn links_lead_from_what_was_made_to_what_can_be_done_with_it() {
    let document = document().await;
    let operations = operations(&document);
    let by_id: BTreeMap<&str, &Value> = operations
        .iter()
        .map(|(_, _, op)| (op["operationId"].as_str().unwrap(), op))
        .collect();

    let mut links = BTreeSet::new();
    for (_, _, operation) in &operations {
        let from = operation["operationId"].as_str().unwrap();
        for response in operation["responses"].as_object().unwrap().values() {
            for link in response["links"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, l)| l)
            {
                let to = link["operationId"].as_str().unwrap();
                let target = by_id
                    .get(to)
                    .unwrap_or_else(|| panic!("{from} links to unknown {to}"));
                for name in link["parameters"].as_object().unwrap().keys() {
                    let declared = target["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"] == name.as_str());
                    assert!(declared, "{from} -> {to}: {to} has no parameter {name}");
                }
                links.insert((from.to_owned(), to.to_owned()));
            }
        }
    }
    for (from, to) in [
        ("createJob", "getJob"),
        ("createJob", "cancelJob"),
        ("createJob", "retryJob"),
        ("createJob", "getJobLogs"),
        ("createToken", "revokeToken"),
        ("registerAgent", "heartbeat"),
    ] {
        assert!(
            links.contains(&(from.to_owned(), to.to_owned())),
            "no link {from} -> {to}"
        );
    }
}

#[tokio::test]
async fn the_log_stream_declares_its_events() {
    let document = document().await;

    let content = &document["paths"]["/v1/logs/stream"]["get"]["responses"]["200"]["content"];
    let events: BTreeSet<&str> = content["text/event-stream"]["schema"]["oneOf"]
        .as_array()
        .expect("the stream's events")
        .iter()
        .map(|event| event["properties"]["event"]["enum"][0].as_str().unwrap())
        .collect();
    assert_eq!(events, BTreeSet::from(["ready", "log", "status"]));
    assert!(document["components"]["schemas"]["StatusEvent"].is_object());
}

#[tokio::test]
async fn request_schemas_carry_the_rules_the_server_applies() {
    let document = document().await;
    let schemas = &document["components"]["schemas"];

    let job = &schemas["CreateJobRequest"]["properties"];
    for field in ["repo", "ref", "host"] {
        assert!(
            job[field]["pattern"].is_string(),
            "CreateJobRequest.{field}"
        );
    }
    let token = &schemas["CreateTokenRequest"]["properties"];
    assert_eq!(token["name"]["maxLength"], 64);
    assert_eq!(token["expires_in"]["minimum"], 1);
    assert_eq!(
        schemas["AppendLogsRequest"]["properties"]["lines"]["maxItems"],
        10000
    );
    let reported: BTreeSet<&str> =
        schemas["UpdateJobStatusRequest"]["properties"]["status"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
    assert_eq!(
        reported,
        BTreeSet::from(["running", "success", "failed", "cancelled"])
    );
}
