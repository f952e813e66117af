//! The controller's HTTP API as the agent uses it: one method per call, one
//! error type that says whether trying again can help, and the agent token
//! every call but registration sends.
//!
//! Registration (with the enrollment token, if any) gets a new agent token
//! and the previous one stops working. All clones of a [`Client`] share the
//! current token, so a job's uploads and report use the one the heartbeat
//! loop got last; a 401 marks it refused, which the loop answers by
//! registering again and the job tasks by waiting for that
//! ([`Client::renewed`]) before they retry.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deploybot_wire::{
    AppendLogsRequest, ErrorBody, HeartbeatRequest, HeartbeatResponse, Job, RegisterAgentRequest,
    RegisteredAgent, UpdateJobStatusRequest,
};
use reqwest::header::HeaderValue;
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

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

    /// 401: the credential sent was not accepted (for an agent call: the
    /// agent token was replaced or revoked).
    pub(crate) fn is_unauthorized(&self) -> bool {
        self.status() == Some(StatusCode::UNAUTHORIZED)
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

/// A credential: an enrollment token or an agent token. Its `Debug` output
/// is masked, and it has no `Display`, so it cannot end up in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Token(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// A job's W3C trace context (`traceparent`), sent with the job's log
/// uploads and report, so that the controller's trace of what created the
/// job goes on with them.
#[derive(Debug, Clone)]
pub(crate) struct TraceParent(HeaderValue);

impl TraceParent {
    /// The job's, if it has one in the W3C form (`00-<32 hex>-<16 hex>-<2
    /// hex>`, lowercase; later versions may append fields). Anything else is
    /// dropped: a header reqwest cannot send would fail the call every time.
    pub(crate) fn of(job: &Job) -> Option<Self> {
        let text = job.traceparent.as_deref()?;
        if !well_formed(text) {
            tracing::debug!(job = %job.id, "ignoring the job's malformed traceparent");
            return None;
        }
        HeaderValue::from_str(text).ok().map(TraceParent)
    }
}

fn well_formed(traceparent: &str) -> bool {
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let mut parts = traceparent.split('-');
    traceparent.len() <= 256
        && [2, 32, 16, 2]
            .iter()
            .all(|&len| parts.next().is_some_and(|part| hex(part, len)))
        // Version ff is invalid.
        && !traceparent.starts_with("ff")
}

/// The agent token in use, shared by every clone of a [`Client`].
#[derive(Debug, Default)]
struct Session {
    token: Option<Token>,
    /// Counts tokens, so that a 401 to a call made with an older token (in
    /// flight while a new one arrived) is not taken for a refusal of this one.
    generation: u64,
    /// The controller answered 401 to this token.
    refused: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    session: Arc<watch::Sender<Session>>,
}

impl Client {
    pub(crate) fn new(base: &Url, ca_cert: Option<&std::path::Path>) -> Result<Self, AgentError> {
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
        let mut http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("deploybot-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let bad = |why: String| AgentError::CaCert {
                path: path.to_owned(),
                why,
            };
            let pem = std::fs::read(path).map_err(|err| bad(err.to_string()))?;
            let roots =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| bad(err.to_string()))?;
            if roots.is_empty() {
                return Err(bad("no PEM certificate in it".to_owned()));
            }
            for root in roots {
                http = http.add_root_certificate(root);
            }
        }
        let http = http.build().map_err(AgentError::HttpClient)?;
        Ok(Client {
            http,
            base,
            session: Arc::new(watch::Sender::new(Session::default())),
        })
    }

    /// The controller's base URL, as every call uses it.
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// Makes `token` the one every agent call sends from now on.
    pub(crate) fn set_token(&self, token: Option<Token>) {
        self.session.send_modify(|session| {
            session.token = token;
            session.generation += 1;
            session.refused = false;
        });
    }

    /// The agent token in use.
    pub(crate) fn token(&self) -> Option<Token> {
        self.session.borrow().token.clone()
    }

    /// Resolves once the controller has refused the token in use (at once if
    /// it has already).
    pub(crate) async fn refused(&self) {
        let mut session = self.session.subscribe();
        if session.wait_for(|s| s.refused).await.is_err() {
            // Not reachable: `self` holds the sender.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once the token in use is not known to be refused: at once,
    /// or when the heartbeat loop has registered again.
    pub(crate) async fn renewed(&self) {
        let mut session = self.session.subscribe();
        if session.wait_for(|s| !s.refused).await.is_err() {
            // Not reachable; but returning would let a caller spin.
            std::future::pending::<()>().await;
        }
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

    /// Registers with `enrollment` (none for a controller in open mode) and
    /// makes the agent token it answers the one every later call sends.
    pub(crate) async fn register(
        &self,
        request: &RegisterAgentRequest,
        enrollment: Option<&Token>,
    ) -> Result<RegisteredAgent, CallError> {
        let url = self.url(&["v1", "agents", "register"]);
        let builder = with_token(self.http.post(url).json(request), enrollment);
        let registered: RegisteredAgent = decode(send(builder).await?).await?;
        if let Some(warning) = &registered.warning {
            tracing::warn!(host = %registered.agent.hostname, "{warning}");
        }
        let token = Some(Token::new(registered.token.clone())).filter(|t| !t.is_empty());
        self.set_token(token);
        Ok(registered)
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
        decode(self.send_as_agent(builder).await?).await
    }

    pub(crate) async fn append_logs(
        &self,
        job_id: &str,
        traceparent: Option<&TraceParent>,
        request: &AppendLogsRequest,
    ) -> Result<(), CallError> {
        let url = self.url(&["v1", "jobs", job_id, "logs"]);
        let builder = with_traceparent(self.http.post(url), traceparent);
        self.send_as_agent(builder.json(request)).await.map(drop)
    }

    pub(crate) async fn update_status(
        &self,
        job_id: &str,
        traceparent: Option<&TraceParent>,
        request: &UpdateJobStatusRequest,
    ) -> Result<(), CallError> {
        let url = self.url(&["v1", "jobs", job_id, "status"]);
        let builder = with_traceparent(self.http.put(url), traceparent);
        self.send_as_agent(builder.json(request)).await.map(drop)
    }

    /// Sends with the agent token; a 401 marks that token refused.
    async fn send_as_agent(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let (token, generation) = {
            let session = self.session.borrow();
            (session.token.clone(), session.generation)
        };
        let result = send(with_token(builder, token.as_ref())).await;
        if let Err(err) = &result
            && err.is_unauthorized()
        {
            self.mark_refused(generation);
        }
        result
    }

    /// Marks the token of `generation` refused, if it is still the one in use.
    fn mark_refused(&self, generation: u64) {
        self.session.send_if_modified(|session| {
            let now_refused = session.generation == generation && !session.refused;
            session.refused |= now_refused;
            now_refused
        });
    }
}

/// `Authorization: Bearer …` when there is a token. reqwest marks the header
/// sensitive, so its own `Debug` output masks it too.
fn with_token(builder: reqwest::RequestBuilder, token: Option<&Token>) -> reqwest::RequestBuilder {
    match token {
        Some(token) if !token.is_empty() => builder.bearer_auth(token.expose()),
        _ => builder,
    }
}

fn with_traceparent(
    builder: reqwest::RequestBuilder,
    traceparent: Option<&TraceParent>,
) -> reqwest::RequestBuilder {
    match traceparent {
        Some(TraceParent(value)) => builder.header("traceparent", value.clone()),
        None => builder,
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
        let client = Client::new(&base, None).unwrap();
        assert_eq!(
            client.url(&["v1", "jobs", "a/../b?x", "logs"]).as_str(),
            "http://ctl.example:8080/deploybot/v1/jobs/a%2F..%2Fb%3Fx/logs"
        );
        let bare: Url = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            Client::new(&bare, None)
                .unwrap()
                .url(&["v1", "agents", "register"])
                .as_str(),
            "http://127.0.0.1:8080/v1/agents/register"
        );
    }

    #[tokio::test]
    async fn only_a_refusal_of_the_token_in_use_counts() {
        let base: Url = "http://127.0.0.1:9".parse().unwrap();
        let client = Client::new(&base, None).unwrap();
        let clone = client.clone();
        client.set_token(Some(Token::new("first")));
        let first = client.session.borrow().generation;
        client.set_token(Some(Token::new("second")));

        // A call made with the first token, answered after the switch.
        client.mark_refused(first);
        assert!(!client.session.borrow().refused);
        clone.renewed().await;

        client.mark_refused(first + 1);
        assert!(clone.session.borrow().refused);
        clone.refused().await;
        let renewed = tokio::spawn({
            let clone = clone.clone();
            async move { clone.renewed().await }
        });
        tokio::task::yield_now().await;
        assert!(!renewed.is_finished());
        client.set_token(Some(Token::new("third")));
        renewed.await.unwrap();
        assert_eq!(format!("{:?}", clone.token()), "Some(Token(***))");
    }

    #[test]
    fn refuses_urls_without_paths() {
        let url: Url = "mailto:ops@example.com".parse().unwrap();
        assert!(matches!(
            Client::new(&url, None),
            Err(AgentError::InvalidController { .. })
        ));
    }

    #[test]
    fn only_well_formed_traceparents_are_sent() {
        fn of(traceparent: &str) -> Option<&str> {
            well_formed(traceparent).then_some(traceparent)
        }
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(of(good), Some(good));
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(of(later), Some(later));
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nX-Evil: 1",
        ] {
            assert_eq!(of(bad), None, "{bad:?}");
        }
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
