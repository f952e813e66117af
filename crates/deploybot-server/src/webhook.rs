//! Reading a GitHub delivery: its headers and the fields of its payload we use.

use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use crate::error::ApiError;

/// The parts of any GitHub event payload we look at; the rest is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Payload {
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub after: Option<String>,
    #[serde(default)]
    pub deleted: bool,
    pub repository: Option<Repository>,
    pub pusher: Option<Pusher>,
    pub head_commit: Option<Commit>,
    pub compare: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Repository {
    pub full_name: String,
    /// In a push: when it was pushed, in Unix seconds (in other events a
    /// date string, which we do not use).
    #[serde(default)]
    pub pushed_at: Option<serde_json::Value>,
}

impl Repository {
    /// When the push was made, if the payload says so as a push does.
    pub fn pushed_at(&self) -> Option<time::OffsetDateTime> {
        let seconds = self.pushed_at.as_ref()?.as_i64()?;
        time::OffsetDateTime::from_unix_timestamp(seconds).ok()
    }
}

#[derive(Debug, Deserialize)]
pub struct Pusher {
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Commit {
    pub message: Option<String>,
}

#[derive(Deserialize)]
struct Form {
    payload: String,
}

/// The longest delivery id we keep (GitHub's are UUIDs).
const MAX_DELIVERY_ID: usize = 100;

/// `X-GitHub-Event`.
pub fn event(headers: &HeaderMap) -> Result<String, ApiError> {
    let event = headers
        .get("x-github-event")
        .ok_or_else(|| ApiError::bad_request("missing X-GitHub-Event header"))?;
    event
        .to_str()
        .ok()
        .filter(|e| !e.is_empty() && e.len() <= 64 && e.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request("X-GitHub-Event header is not a valid event name"))
}

/// `X-GitHub-Delivery`, or `None` when absent.
pub fn delivery_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("x-github-delivery") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_DELIVERY_ID
                && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(|id| Some(id.to_owned()))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "X-GitHub-Delivery header must be 1-{MAX_DELIVERY_ID} printable characters"
            ))
        })
}

/// Parses the body as GitHub sends it: JSON, or a form with a `payload` field.
pub fn payload(headers: &HeaderMap, body: &[u8]) -> Result<Payload, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let invalid = |err: &dyn std::fmt::Display| {
        ApiError::bad_request(format!("the webhook payload is not valid: {err}"))
    };
    match content_type.as_str() {
        "application/json" => serde_json::from_slice(body).map_err(|e| invalid(&e)),
        "application/x-www-form-urlencoded" => {
            let form: Form = serde_urlencoded::from_bytes(body).map_err(|e| invalid(&e))?;
            serde_json::from_str(&form.payload).map_err(|e| invalid(&e))
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "webhook content type {other:?} is not supported: configure the GitHub webhook with application/json"
            ),
        )),
    }
}

/// The first line of a commit message, at most 200 characters.
pub fn headline(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}
