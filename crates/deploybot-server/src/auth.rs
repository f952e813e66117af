//! Who is calling: bearer tokens resolved to a [`Caller`], and what each
//! caller may do.
//!
//! Tokens are 256 random bits behind a prefix that names their kind
//! (`dbt_api_`, `dbt_enroll_`, `dbt_agent_`), so secret scanners can spot a
//! leak. Only SHA-256 hashes are stored; a presented token is hashed and
//! looked up, so no comparison ever runs over a secret. Configured tokens
//! (`DEPLOYBOT_ADMIN_TOKEN`, `DEPLOYBOT_ENROLLMENT_TOKEN`) are kept as
//! hashes too and compared in constant time.
//!
//! Lookups are cached for [`CACHE_TTL`]: revocation through this controller
//! drops the entry at once, and reaches every other instance within a
//! second.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use deploybot_store::Store;
use deploybot_wire::{TokenInfo, TokenRole};
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::failures::FailureTable;
use crate::settings::Secret;
use crate::state::AppState;

pub const API_PREFIX: &str = "dbt_api_";
pub const ENROLL_PREFIX: &str = "dbt_enroll_";
pub const AGENT_PREFIX: &str = "dbt_agent_";

/// How long a resolved token is trusted without asking the database.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Bound of the token cache: past it, it is cleared, not grown.
const MAX_CACHED: usize = 100_000;

/// A new secret token of a kind: the prefix, then 64 hex digits.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// A token's public id, safe to log and show: derived from nothing secret.
pub fn new_token_id() -> String {
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    format!("tok_{}", hex::encode(bytes))
}

/// The hex SHA-256 that the database keeps instead of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The credential behind a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// `--insecure-no-auth`: everyone may do everything.
    Open,
    /// The configured admin token.
    ConfiguredAdmin,
    /// The configured enrollment token.
    ConfiguredEnrollment,
    /// A token made through the API (or the bootstrap admin token). Boxed:
    /// the token cache holds a `Caller` per token in use, mostly agents'.
    Token(Box<TokenInfo>),
    /// An agent, by its own token.
    Agent { id: String, host: String },
}

impl Caller {
    /// Who did it, for the audit log and our own logs.
    pub fn actor(&self) -> String {
        match self {
            Caller::Open => "anonymous".to_owned(),
            Caller::ConfiguredAdmin => "admin:config".to_owned(),
            Caller::ConfiguredEnrollment => "enroll:config".to_owned(),
            Caller::Token(token) => format!("token:{}", token.id),
            Caller::Agent { id, .. } => format!("agent:{id}"),
        }
    }

    fn role(&self) -> Option<TokenRole> {
        match self {
            Caller::Open | Caller::ConfiguredAdmin => Some(TokenRole::Admin),
            Caller::ConfiguredEnrollment => Some(TokenRole::Enroll),
            Caller::Token(token) => Some(token.role),
            Caller::Agent { .. } => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Caller::Agent { .. } => "an agent token".to_owned(),
            other => format!(
                "this token (role {})",
                other.role().map_or("none", TokenRole::as_str)
            ),
        }
    }

    /// GET endpoints, logs and the live stream.
    pub fn require_read(&self) -> Result<(), ApiError> {
        match self.role() {
            Some(TokenRole::Read | TokenRole::Deploy | TokenRole::Admin) => Ok(()),
            _ => Err(ApiError::forbidden(format!(
                "{} cannot read the API; it needs role read, deploy or admin",
                self.describe()
            ))),
        }
    }

    /// Create, cancel or retry jobs of `app`.
    pub fn require_deploy(&self, app: &str) -> Result<(), ApiError> {
        match (self.role(), self) {
            (Some(TokenRole::Admin), _) => Ok(()),
            (Some(TokenRole::Deploy), Caller::Token(token)) => match &token.apps {
                Some(apps) if !apps.iter().any(|a| a == app) => Err(ApiError::forbidden(format!(
                    "token {} may deploy only {}; not {app}",
                    token.id,
                    apps.join(", ")
                ))),
                _ => Ok(()),
            },
            _ => Err(ApiError::forbidden(format!(
                "{} cannot deploy; it needs role deploy or admin",
                self.describe()
            ))),
        }
    }

    /// Whether this caller may deploy at least one app.
    pub fn may_deploy_some_app(&self) -> bool {
        matches!(self.role(), Some(TokenRole::Deploy | TokenRole::Admin))
    }

    /// A deploy token limited to some apps: checks need the job's app.
    pub fn deploys_only_some_apps(&self) -> bool {
        matches!(self, Caller::Token(t) if t.role == TokenRole::Deploy && t.apps.is_some())
    }

    /// Agents, tokens, the audit log.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role() {
            Some(TokenRole::Admin) => Ok(()),
            _ => Err(ApiError::forbidden(format!(
                "{} cannot do this; it needs role admin",
                self.describe()
            ))),
        }
    }

    /// Registering an agent for `hostname`: an enrollment token, or the
    /// agent's own token (to register again: a new token, same agent).
    /// `true` when the registration may take the host from an agent that
    /// has it now: the agent itself, an enrollment token made for the host,
    /// or open mode. Any other enrollment token registers only a host
    /// without an agent.
    pub fn may_register(&self, hostname: &str) -> Result<bool, ApiError> {
        match self {
            Caller::Open => Ok(true),
            Caller::Agent { host, .. } if host == hostname => Ok(true),
            Caller::Agent { host, .. } => Err(ApiError::forbidden(format!(
                "this agent token belongs to host {host}; it cannot register {hostname}"
            ))),
            Caller::ConfiguredEnrollment => Ok(false),
            Caller::Token(token) if token.role == TokenRole::Enroll => match &token.hostname {
                None => Ok(false),
                Some(host) if host == hostname => Ok(true),
                Some(host) => Err(ApiError::forbidden(format!(
                    "enrollment token {} is for host {host} only, not {hostname}",
                    token.id
                ))),
            },
            other => Err(ApiError::forbidden(format!(
                "{} cannot register agents; that needs an enrollment token (or the agent's own token)",
                other.describe()
            ))),
        }
    }

    /// An agent's own calls: `Some(agent id)` for an agent token, `None` in
    /// open mode (anyone may act for any agent, as in the seed).
    pub fn require_agent(&self) -> Result<Option<&str>, ApiError> {
        match self {
            Caller::Open => Ok(None),
            Caller::Agent { id, .. } => Ok(Some(id)),
            other => Err(ApiError::forbidden(format!(
                "{} cannot act as an agent; agents use the token registration gave them",
                other.describe()
            ))),
        }
    }
}

/// The agent a job write (log upload, status report) is made as: the
/// token's agent. A body naming another agent is refused; in open mode the
/// body's `agent_id`, if any, is taken as given.
pub fn writing_agent(caller: &Caller, named: Option<String>) -> Result<Option<String>, ApiError> {
    match (caller.require_agent()?, named) {
        (Some(own), Some(named)) if own != named => Err(ApiError::forbidden(format!(
            "this agent token belongs to agent {own}, not {named}"
        ))),
        (Some(own), _) => Ok(Some(own.to_owned())),
        (None, named) => Ok(named),
    }
}

/// Credentials the controller checks, and what it remembers of them.
pub struct Auth {
    insecure: bool,
    admin: Option<[u8; 32]>,
    enrollment: Option<[u8; 32]>,
    /// Keyed by the token's SHA-256: 32 bytes inline, no second allocation.
    cache: Mutex<HashMap<[u8; 32], (Caller, Instant)>>,
    /// Wrong tokens per address; past the allowance, 429 instead of 401.
    failures: Mutex<FailureTable>,
}

impl Auth {
    /// `failures_allowed`: wrong tokens an address may present per minute
    /// before it is answered 429 (0: no limit).
    pub fn new(
        insecure: bool,
        admin: Option<&Secret>,
        enrollment: Option<&Secret>,
        failures_allowed: u32,
    ) -> Self {
        Auth {
            insecure,
            admin: admin.map(|s| digest(s.expose())),
            enrollment: enrollment.map(|s| digest(s.expose())),
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(FailureTable::new(failures_allowed)),
        }
    }

    pub fn has_configured_admin(&self) -> bool {
        self.admin.is_some()
    }

    /// Resolves the request's bearer token.
    pub async fn caller(
        &self,
        store: &dyn Store,
        authorization: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<Caller, ApiError> {
        if self.insecure {
            return Ok(Caller::Open);
        }
        let result = self.resolve(store, authorization).await;
        // Only presented tokens that fail count: they are guesses. A missing
        // token is a mistake, not an attack, and a valid credential is never
        // held up by someone else's bad guesses from the same address (NAT,
        // a proxy).
        let guessed = bearer(authorization).is_ok();
        if let (Err(err), Some(address)) = (&result, address)
            && guessed
            && err.status() == StatusCode::UNAUTHORIZED
        {
            self.failed(address);
            self.check_not_throttled(address)?;
        }
        result
    }

    async fn resolve(
        &self,
        store: &dyn Store,
        authorization: Option<&str>,
    ) -> Result<Caller, ApiError> {
        let token = bearer(authorization)?;
        let presented = digest(token);
        if self
            .admin
            .is_some_and(|admin| constant_time_eq(&admin, &presented))
        {
            return Ok(Caller::ConfiguredAdmin);
        }
        if self
            .enrollment
            .is_some_and(|enrollment| constant_time_eq(&enrollment, &presented))
        {
            return Ok(Caller::ConfiguredEnrollment);
        }
        if let Some(caller) = self.cached(&presented) {
            return Ok(caller);
        }
        let hash = hex::encode(presented);
        let caller = if token.starts_with(AGENT_PREFIX) {
            let agent = store.agent_by_token(hash).await?.ok_or_else(|| {
                ApiError::unauthorized(
                    "invalid_token",
                    "agent token not recognised: it was replaced by a newer registration or revoked; register again",
                )
            })?;
            Caller::Agent {
                id: agent.agent_id,
                host: agent.hostname,
            }
        } else {
            let info = store
                .token_by_hash(hash)
                .await?
                .ok_or_else(|| ApiError::unauthorized("invalid_token", "token not recognised"))?;
            Caller::Token(Box::new(info))
        };
        // Revoked, expired and used-up tokens are checked on every use, from
        // the cache too, so they are never cached as good.
        if let Caller::Token(info) = &caller {
            check_usable(info)?;
        }
        self.remember(presented, caller.clone());
        Ok(caller)
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Caller> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (caller, at) = cache.get(hash)?;
        if at.elapsed() > CACHE_TTL {
            return None;
        }
        if let Caller::Token(info) = caller
            && check_usable(info).is_err()
        {
            return None;
        }
        Some(caller.clone())
    }

    fn remember(&self, hash: [u8; 32], caller: Caller) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(hash, (caller, Instant::now()));
    }

    /// Forgets cached tokens of this agent (re-registered or revoked).
    pub fn forget_agent(&self, agent_id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (caller, _)| !matches!(caller, Caller::Agent { id, .. } if id == agent_id));
    }

    /// Forgets a cached API or enrollment token (revoked or used up).
    pub fn forget_token(&self, token_id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (caller, _)| !matches!(caller, Caller::Token(t) if t.id == token_id));
    }

    fn check_not_throttled(&self, address: IpAddr) -> Result<(), ApiError> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.throttled(address, Instant::now()) {
            Some(retry) => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_auth_failures",
                format!(
                    "too many requests with bad credentials from {address}; try again in {retry}s"
                ),
            )
            .retry_after(retry)),
            None => Ok(()),
        }
    }

    fn failed(&self, address: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed(address, Instant::now());
    }
}

fn bearer(authorization: Option<&str>) -> Result<&str, ApiError> {
    let header = authorization.ok_or_else(|| {
        ApiError::unauthorized(
            "missing_token",
            "this endpoint needs a token: send `Authorization: Bearer <token>`",
        )
    })?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing_token",
                "the Authorization header must be `Bearer <token>`",
            )
        })
}

fn check_usable(info: &TokenInfo) -> Result<(), ApiError> {
    if info.revoked_at.is_some() {
        return Err(ApiError::unauthorized(
            "invalid_token",
            format!("token {} was revoked", info.id),
        ));
    }
    if info
        .expires_at
        .is_some_and(|at| at <= OffsetDateTime::now_utc())
    {
        return Err(ApiError::unauthorized(
            "invalid_token",
            format!("token {} has expired", info.id),
        ));
    }
    if info.single_use && info.used_at.is_some() {
        return Err(ApiError::unauthorized(
            "invalid_token",
            format!("enrollment token {} was already used", info.id),
        ));
    }
    Ok(())
}

/// The caller's address: the connection's peer, or, when that peer is a
/// trusted reverse proxy, the address the proxy appended to
/// `X-Forwarded-For` (the last entry: earlier ones are the client's to
/// forge). When that last entry is not an address, the proxy's own
/// address is used: nothing left of it can be trusted.
pub fn client_address(parts: &Parts, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())?;
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let last_hop = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .and_then(forwarded_address);
    Some(last_hop.unwrap_or(peer))
}

/// One `X-Forwarded-For` entry as an address: `1.2.3.4`, `2001:db8::1`,
/// or with a port, `1.2.3.4:5678` and `[2001:db8::1]:443` (some proxies
/// add it); `None` for anything else (`unknown`, an obfuscated name).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let authorization = parts
            .headers
            .get(AUTHORIZATION)
            .map(|value| value.to_str().unwrap_or(""));
        state
            .auth
            .caller(
                state.queue.store(),
                authorization,
                client_address(parts, &state.trusted_proxies),
            )
            .await
    }
}

/// Callers whose right is checked as the request's head is read, before its
/// body: a caller without the right gets 403 whatever the body holds.
macro_rules! caller_with_right {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        pub struct $name(pub Caller);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, ApiError> {
                let caller = Caller::from_request_parts(parts, state).await?;
                let check: fn(&Caller) -> Result<(), ApiError> = $check;
                check(&caller)?;
                Ok($name(caller))
            }
        }
    };
}

caller_with_right!(
    /// May deploy at least one app (which one is checked with the body).
    Deployer,
    |caller| {
        if caller.may_deploy_some_app() {
            Ok(())
        } else {
            caller.require_deploy("")
        }
    }
);
caller_with_right!(
    /// An admin.
    Admin,
    Caller::require_admin
);
caller_with_right!(
    /// May register agents: an enrollment token, or an agent's own token
    /// (which host, with the body).
    Enroller,
    |caller| match caller {
        Caller::Open | Caller::ConfiguredEnrollment | Caller::Agent { .. } => Ok(()),
        Caller::Token(token) if token.role == TokenRole::Enroll => Ok(()),
        other => Err(ApiError::forbidden(format!(
            "{} cannot register agents; that needs an enrollment token (or the agent's own token)",
            other.describe()
        ))),
    }
);
caller_with_right!(
    /// An agent, by its own token (or anyone in open mode).
    AgentCaller,
    |caller| caller.require_agent().map(drop)
);

/// The caller's address, for the audit log.
pub struct Address(pub Option<String>);

impl FromRequestParts<AppState> for Address {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Address(
            client_address(parts, &state.trusted_proxies).map(|ip| ip.to_string()),
        ))
    }
}

#[cfg(test)]
mod forwarded_tests {
    use super::*;

    fn parts(peer: &str, forwarded: &[&str]) -> Parts {
        let mut request = axum::http::Request::builder();
        for value in forwarded {
            request = request.header("x-forwarded-for", *value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        parts
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn only_the_hop_the_trusted_proxy_added_is_believed() {
        let proxy = ["10.0.0.1".parse().unwrap()];
        let cases = [
            (vec!["1.1.1.1, 7.7.7.7"], ip("7.7.7.7")),
            (vec!["1.1.1.1", "7.7.7.7"], ip("7.7.7.7")),
            (vec!["7.7.7.7:1234"], ip("7.7.7.7")),
            (vec!["[2001:db8::1]:443"], ip("2001:db8::1")),
            (vec!["[2001:db8::1]"], ip("2001:db8::1")),
            (vec!["2001:db8::1"], ip("2001:db8::1")),
            // Unparsable last hop: never the client-written entry left of it.
            (vec!["1.1.1.1, unknown"], ip("10.0.0.1")),
            (vec!["1.1.1.1, 7.7.7.7:bad"], ip("10.0.0.1")),
            (vec!["1.1.1.1", ""], ip("10.0.0.1")),
            (vec![], ip("10.0.0.1")),
        ];
        for (forwarded, expected) in cases {
            let parts = parts("10.0.0.1:5000", &forwarded);
            assert_eq!(client_address(&parts, &proxy), expected, "{forwarded:?}");
        }
        // From anyone else, the header is ignored.
        let parts = parts("8.8.8.8:5000", &["7.7.7.7"]);
        assert_eq!(client_address(&parts, &proxy), ip("8.8.8.8"));
    }
}
