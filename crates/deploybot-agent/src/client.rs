//! The controller's HTTP API as the agent uses it: one method per call, and
//! one error type that says whether trying again can help.

use std::time::Duration;

use deploybot_wire::{
    Agent, AppendLogsRequest, ErrorBody, HeartbeatRequest, HeartbeatResponse, RegisterAgentRequest,
    UpdateJobStatusRequest,
};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::AgentError;

/// Every call but the long-poll must answer within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than the requested wait a heartbeat may take: the
/// controller answers at the end of the wait, plus network and queueing time.
const LONG_POLL_SLACK: Duration = Duration::from_secs(10);
/// The controller refuses longer waits (400).
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Error bodies are quoted in logs; a proxy's HTML page should not flood them.
const MAX_MESSAGE_CHARS: usize = 300;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("cannot reach the controller: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("the controller answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("unreadable answer from the controller: {0}")]
    Decode(#[source] reqwest::Error),
}

impl CallError {
    /// Worth trying again later: the network, an overloaded or restarting
    /// controller. A 4xx means the request itself is refused.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            CallError::Transport(_) | CallError::Decode(_) => true,
            CallError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
        }
    }

    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// 404 (the job is gone) or 409 (its lease went to someone else): the job
    /// is no longer ours, so nothing more may be written about it.
    pub(crate) fn is_lease_lost(&self) -> bool {
        matches!(
            self.status(),
            Some(StatusCode::NOT_FOUND | StatusCode::CONFLICT)
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    pub(crate) fn new(base: &Url) -> Result<Self, AgentError> {
        if base.cannot_be_a_base() {
            return Err(AgentError::InvalidController {
                url: base.to_string(),
                why: "it cannot hold a path",
            });
        }
        if !matches!(base.scheme(), "http" | "https") {
            return Err(AgentError::InvalidController {
                url: base.to_string(),
                why: "the scheme must be http or https",
            });
        }
        let mut base = base.clone();
        base.set_query(None);
        base.set_fragment(None);
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("deploybot-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AgentError::HttpClient)?;
        Ok(Client { http, base })
    }

    /// `base` + `/v1/...`; segments are percent-encoded, so an id can never
    /// change which route is called.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `new` refused cannot-be-a-base URLs, the only ones without segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    pub(crate) async fn register(
        &self,
        request: &RegisterAgentRequest,
    ) -> Result<Agent, CallError> {
        let url = self.url(&["v1", "agents", "register"]);
        decode(send(self.http.post(url).json(request)).await?).await
    }

    /// Blocks at the controller until a job or a cancel is ready, or `wait` ends.
    pub(crate) async fn heartbeat(
        &self,
        agent_id: &str,
        request: &HeartbeatRequest,
        wait: Duration,
    ) -> Result<HeartbeatResponse, CallError> {
        let wait = wait.min(MAX_WAIT);
        let mut url = self.url(&["v1", "agents", agent_id, "heartbeat"]);
        url.query_pairs_mut()
            .append_pair("wait", &wait.as_secs().to_string());
        let builder = self
            .http
            .post(url)
            .timeout(wait + LONG_POLL_SLACK)
            .json(request);
        decode(send(builder).await?).await
    }

    pub(crate) async fn append_logs(
        &self,
        job_id: &str,
        request: &AppendLogsRequest,
    ) -> Result<(), CallError> {
        let url = self.url(&["v1", "jobs", job_id, "logs"]);
        send(self.http.post(url).json(request)).await.map(drop)
    }

    pub(crate) async fn update_status(
        &self,
        job_id: &str,
        request: &UpdateJobStatusRequest,
    ) -> Result<(), CallError> {
        let url = self.url(&["v1", "jobs", job_id, "status"]);
        send(self.http.put(url).json(request)).await.map(drop)
    }
}

/// Sends the request; any answer but 2xx becomes [`CallError::Status`].
async fn send(builder: reqwest::RequestBuilder) -> Result<reqwest::Response, CallError> {
    let response = builder.send().await.map_err(CallError::Transport)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(CallError::Status {
        status,
        message: error_message(&body),
    })
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, CallError> {
    response.json().await.map_err(CallError::Decode)
}

/// The controller's `{"error": {"message"}}`, or the start of whatever else
/// answered (a proxy, a load balancer).
fn error_message(body: &str) -> String {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(parsed) => parsed.error.message,
        Err(_) => body.trim().chars().take(MAX_MESSAGE_CHARS).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_base_path_and_escape_ids() {
        let base: Url = "http://ctl.example:8080/deploybot/".parse().unwrap();
        let client = Client::new(&base).unwrap();
        assert_eq!(
            client.url(&["v1", "jobs", "a/../b?x", "logs"]).as_str(),
            "http://ctl.example:8080/deploybot/v1/jobs/a%2F..%2Fb%3Fx/logs"
        );
        let bare: Url = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            Client::new(&bare)
                .unwrap()
                .url(&["v1", "agents", "register"])
                .as_str(),
            "http://127.0.0.1:8080/v1/agents/register"
        );
    }

    #[test]
    fn refuses_urls_without_paths() {
        let url: Url = "mailto:ops@example.com".parse().unwrap();
        assert!(matches!(
            Client::new(&url),
            Err(AgentError::InvalidController { .. })
        ));
    }

    #[test]
    fn error_messages_prefer_the_controllers_body() {
        let body = serde_json::to_string(&ErrorBody::new("conflict", "stale lease")).unwrap();
        assert_eq!(error_message(&body), "stale lease");
        assert_eq!(
            error_message("  <html>bad gateway</html> "),
            "<html>bad gateway</html>"
        );
    }
}
