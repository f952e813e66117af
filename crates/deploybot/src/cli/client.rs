//! The controller's API as the CLI calls it: one HTTP client (the place to
//! add TLS options such as a CA certificate), the bearer token on every
//! call, and every failure turned into a [`CliError`] whose kind is the
//! process's exit code.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use deploybot_wire::ErrorBody;
use reqwest::header::{ACCEPT, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::Target;

/// A controller that does not accept the connection by then is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a one-shot call may take. Streams have no overall limit; they
/// watch for silence instead (see `sse`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Error bodies are quoted; a proxy's HTML page must not flood the terminal.
const MAX_QUOTED_BODY: usize = 200;

/// What went wrong, as the exit code tells it (documented in `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A deploy (or the wait for it) ended badly, or a local failure.
    Failed,
    /// The command line makes no sense (clap uses 2 too).
    Usage,
    /// No connection to the controller.
    Unreachable,
    /// The token was refused (401) or lacks the right (403).
    Auth,
    /// No such job, token or agent, or an ambiguous short id.
    NotFound,
    /// Any other error answer of the controller.
    Api,
    /// Ctrl-C.
    Interrupted,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Failed => 1,
            Kind::Usage => 2,
            Kind::Unreachable => 3,
            Kind::Auth => 4,
            Kind::NotFound => 5,
            Kind::Api => 6,
            Kind::Interrupted => 130,
        }
    }
}

/// A failure of a CLI command: one line of message, maybe one of hint.
#[derive(Debug)]
pub struct CliError {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
    /// The controller's answer, when it gave one.
    pub status: Option<u16>,
}

impl CliError {
    pub fn new(kind: Kind, message: impl Into<String>) -> CliError {
        CliError {
            kind,
            message: message.into(),
            hint: None,
            status: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// The controller's API. Cheap to clone (the connection pool is shared).
///
/// No `Debug`: it holds the token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client for `target`'s controller (`http(s)://host:port`, maybe
    /// with a path prefix when behind a proxy).
    pub fn new(target: &Target) -> Result<Client> {
        let base = target.url.as_str();
        let invalid = |why: &str| {
            CliError::new(
                Kind::Usage,
                format!("invalid controller URL {base:?}: {why}"),
            )
            .with_hint("give one like http://deploy.internal:8080 with --url or DEPLOYBOT_URL")
        };
        let mut url = Url::parse(base).map_err(|err| invalid(&err.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(invalid("the scheme must be http or https"));
        }
        url.set_query(None);
        url.set_fragment(None);
        // `…/v1` or `…/docs` pasted from the browser: API paths are ours to add.
        let last = url
            .path_segments()
            .and_then(|mut segments| segments.rfind(|s| !s.is_empty()).map(str::to_owned));
        if let Some(last @ ("v1" | "docs" | "openapi.json" | "health" | "ready" | "metrics")) =
            last.as_deref()
        {
            let mut base_url = url.clone();
            let path = url.path().trim_end_matches('/');
            base_url.set_path(path.strip_suffix(last).unwrap_or(path));
            return Err(CliError::new(
                Kind::Usage,
                format!("{base:?} is a page of the controller, not its base URL"),
            )
            .with_hint(format!("give the controller's base URL: {base_url}")));
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("deploybot-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &target.ca_cert {
            for root in read_ca_cert(path)? {
                http = http.add_root_certificate(root);
            }
        }
        let http = http.build().map_err(|err| {
            CliError::new(
                Kind::Failed,
                format!("cannot set up the HTTP client: {err}"),
            )
        })?;
        Ok(Client {
            http,
            base: url,
            token: target.token.clone(),
        })
    }

    /// The controller's URL, for messages.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + `segments` (each percent-encoded: ids come from users) +
    /// the query pairs whose value is given.
    pub fn url(&self, segments: &[&str], query: &[(&str, Option<String>)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        let given: Vec<_> = query
            .iter()
            .filter_map(|(key, value)| value.as_ref().map(|v| (key, v)))
            .collect();
        if !given.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in given {
                pairs.append_pair(key, value);
            }
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET`, answered with a `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, Option<String>)],
    ) -> Result<T> {
        let url = self.url(segments, query);
        let response = self.send(self.request(Method::GET, url)).await?;
        self.read_json(response).await
    }

    /// `POST` with a JSON body (or none), answered with a `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<T> {
        let mut request = self.request(Method::POST, self.url(segments, &[]));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request).await?;
        self.read_json(response).await
    }

    /// `DELETE`, answered with a `T`.
    pub async fn delete<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T> {
        let response = self
            .send(self.request(Method::DELETE, self.url(segments, &[])))
            .await?;
        self.read_json(response).await
    }

    /// Opens `GET /v1/logs/stream` with these filters, resuming after
    /// `last_event_id`. The answer's body is the event stream.
    pub async fn open_stream(
        &self,
        query: &[(&str, Option<String>)],
        last_event_id: Option<i64>,
    ) -> Result<Response> {
        let mut request = self
            .request(Method::GET, self.url(&["v1", "logs", "stream"], query))
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        // No timeout on the body: a stream lasts as long as the deploy. The
        // answer's head, though, must come.
        let response = tokio::time::timeout(REQUEST_TIMEOUT, request.send())
            .await
            .map_err(|_| {
                CliError::new(
                    Kind::Unreachable,
                    format!(
                        "cannot reach the controller at {} (no answer within {}s)",
                        self.base(),
                        REQUEST_TIMEOUT.as_secs()
                    ),
                )
            })?
            .map_err(|err| self.unreachable(&err))?;
        self.check(response).await
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        self.check(response).await
    }

    async fn read_json<T: DeserializeOwned>(&self, response: Response) -> Result<T> {
        let url = response.url().path().to_owned();
        let body = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(&err))?;
        serde_json::from_slice(&body).map_err(|err| {
            CliError::new(
                Kind::Api,
                format!(
                    "the controller's answer to {url} is not what this CLI expects: {err}: {}",
                    quote(&body)
                ),
            )
            .with_hint("is the CLI as new as the controller? `deploybot --version`")
        })
    }

    /// A transport failure: the controller could not be reached, or the
    /// connection broke.
    pub fn unreachable(&self, err: &reqwest::Error) -> CliError {
        let reason = transport_reason(err);
        if self.base.scheme() == "https" && speaks_plain_http(&reason) {
            let mut plain = self.base.clone();
            // Infallible for an https URL.
            let _ = plain.set_scheme("http");
            return CliError::new(
                Kind::Unreachable,
                format!(
                    "the controller at {} speaks plain HTTP, not HTTPS",
                    self.base()
                ),
            )
            .with_hint(format!("use {plain}"));
        }
        let hint = if reason.contains("certificate") {
            "if its certificate comes from a private CA, pass that CA with --ca-cert or DEPLOYBOT_CA_CERT"
        } else {
            "is it running? set --url or DEPLOYBOT_URL"
        };
        CliError::new(
            Kind::Unreachable,
            format!("cannot reach the controller at {} ({reason})", self.base()),
        )
        .with_hint(hint)
    }

    /// A 2xx answer passes; anything else becomes the error it means.
    async fn check(&self, response: Response) -> Result<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => error.error.message,
            Err(_) if body.is_empty() => status.to_string(),
            Err(_) => format!("{status}: {}", quote(&body)),
        };
        let mut error = self.refusal(status, message);
        error.status = Some(status.as_u16());
        Err(error)
    }

    fn refusal(&self, status: StatusCode, message: String) -> CliError {
        match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => CliError::new(
                Kind::Auth,
                format!("the controller at {} needs a token", self.base()),
            )
            .with_hint("set DEPLOYBOT_TOKEN, pass --token, or run `deploybot login`"),
            StatusCode::UNAUTHORIZED => CliError::new(
                Kind::Auth,
                format!("the controller refused the token: {message}"),
            )
            .with_hint("check DEPLOYBOT_TOKEN or --token, or run `deploybot login` again"),
            StatusCode::FORBIDDEN => CliError::new(Kind::Auth, message)
                .with_hint("this needs a token with another role; an admin can make one"),
            StatusCode::NOT_FOUND => CliError::new(Kind::NotFound, message),
            _ => CliError::new(Kind::Api, format!("{message} ({status})")),
        }
    }
}

/// The certificates of a PEM file (a bundle may hold several).
fn read_ca_cert(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let bad = |why: String| {
        CliError::new(
            Kind::Usage,
            format!("cannot use the CA certificate {}: {why}", path.display()),
        )
        .with_hint("give a PEM file with --ca-cert or DEPLOYBOT_CA_CERT")
    };
    let pem = std::fs::read(path).map_err(|err| bad(err.to_string()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| bad(err.to_string()))?;
    if roots.is_empty() {
        return Err(bad("no PEM certificate in it".to_owned()));
    }
    Ok(roots)
}

/// Why a request got no answer, in a few words: the innermost cause says
/// it best (connection refused, no such host…).
/// A TLS handshake that got an HTTP answer instead (rustls' words for it).
fn speaks_plain_http(reason: &str) -> bool {
    [
        "InvalidContentType",
        "corrupt message",
        "wrong version number",
    ]
    .iter()
    .any(|sign| reason.contains(sign))
}

fn transport_reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind;
        let known = match io.kind() {
            ErrorKind::ConnectionRefused => Some("connection refused"),
            ErrorKind::ConnectionReset => Some("connection reset"),
            ErrorKind::ConnectionAborted => Some("connection aborted"),
            ErrorKind::TimedOut => Some("timed out"),
            ErrorKind::UnexpectedEof => Some("the connection closed early"),
            _ => None,
        };
        if let Some(known) = known {
            return known.to_owned();
        }
    }
    cause.to_string()
}

/// The start of a body, on one line, for an error message.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(MAX_QUOTED_BODY).collect();
    super::output::escape_cell(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target {
            url: url.to_owned(),
            token: None,
            ca_cert: None,
        }
    }

    #[test]
    fn urls_keep_a_path_prefix_and_encode_segments_and_values() {
        let client = Client::new(&target("http://proxy:8080/deploybot/")).unwrap();
        let url = client.url(
            &["v1", "jobs", "a/b c"],
            &[("after", Some("3".into())), ("limit", None)],
        );
        assert_eq!(
            url.as_str(),
            "http://proxy:8080/deploybot/v1/jobs/a%2Fb%20c?after=3"
        );
        let client = Client::new(&target("http://127.0.0.1:8080")).unwrap();
        let url = client.url(
            &["v1", "explain"],
            &[("ref", Some("refs/heads/a&b".into()))],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/v1/explain?ref=refs%2Fheads%2Fa%26b"
        );
    }

    #[test]
    fn a_url_that_is_not_http_is_a_usage_error() {
        for bad in ["127.0.0.1:8080", "ftp://x", "not a url"] {
            let err = Client::new(&target(bad)).err().unwrap();
            assert_eq!(err.kind, Kind::Usage, "{bad}: {err}");
        }
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        let codes: Vec<u8> = [
            Kind::Failed,
            Kind::Usage,
            Kind::Unreachable,
            Kind::Auth,
            Kind::NotFound,
            Kind::Api,
            Kind::Interrupted,
        ]
        .map(Kind::exit_code)
        .to_vec();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 130]);
    }
}
