//! A round-robin HTTP balancer for the cluster tests: every request, even
//! on one keep-alive connection, goes to the next controller in turn, as
//! nginx's default upstream balancing sends them. A controller that refuses
//! the connection is skipped (nginx's `proxy_next_upstream error`); one
//! that fails after taking the request gets the client a 502.
//!
//! It also counts what the agents got: every answer to a request made with
//! an agent token, by status, and each error answer, so a test can say "no
//! agent ever got a 404".

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, hyper::Error>;

/// What agents were answered, through the balancer.
#[derive(Debug, Default, Clone)]
pub struct AgentAnswers {
    /// Status code → count, of requests made with an agent token.
    pub by_status: BTreeMap<u16, usize>,
    /// `METHOD PATH → STATUS` of every error an agent got.
    pub errors: Vec<String>,
}

struct Shared {
    upstreams: Vec<SocketAddr>,
    next: AtomicUsize,
    answers: Mutex<AgentAnswers>,
}

/// A running balancer; stops when dropped.
pub struct RoundRobin {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    /// Balances over `upstreams` (`http://127.0.0.1:PORT` each).
    pub async fn start(upstreams: &[String]) -> RoundRobin {
        let upstreams = upstreams
            .iter()
            .map(|url| {
                url.trim_start_matches("http://")
                    .parse()
                    .unwrap_or_else(|err| panic!("{url}: {err}"))
            })
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("bound"));
        let shared = Arc::new(Shared {
            upstreams,
            next: AtomicUsize::new(0),
            answers: Mutex::new(AgentAnswers::default()),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        RoundRobin {
            address,
            shared,
            task,
        }
    }

    /// What agents got so far.
    pub fn agent_answers(&self) -> AgentAnswers {
        self.shared.answers.lock().unwrap().clone()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, hyper::Error>(forward(&shared, request).await) }
            });
            // A client going away mid-request is not the test's concern.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sends `request` to the next upstream that takes a connection.
async fn forward(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let by_agent = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("Bearer dbt_agent_"));
    let what = format!("{} {}", request.method(), request.uri().path());
    let first = shared.next.fetch_add(1, Ordering::Relaxed);
    let count = shared.upstreams.len();
    let mut response = None;
    for upstream in (0..count).map(|i| shared.upstreams[(first + i) % count]) {
        let Ok(stream) = TcpStream::connect(upstream).await else {
            continue;
        };
        response = Some(send(stream, request).await);
        break;
    }
    let response = response.unwrap_or_else(|| bad_gateway("no upstream took the connection"));
    if by_agent {
        let status = response.status();
        let mut answers = shared.answers.lock().unwrap();
        *answers.by_status.entry(status.as_u16()).or_default() += 1;
        if status.is_client_error() || status.is_server_error() {
            answers.errors.push(format!("{what} → {status}"));
        }
    }
    response
}

async fn send(stream: TcpStream, request: Request<Incoming>) -> Response<Body> {
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(handshake) => handshake,
            Err(err) => return bad_gateway(&err.to_string()),
        };
    tokio::spawn(connection);
    match sender.send_request(request).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(err) => bad_gateway(&err.to_string()),
    }
}

fn bad_gateway(why: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("bad gateway: {why}")))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
