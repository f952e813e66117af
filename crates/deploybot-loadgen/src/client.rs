//! A minimal keep-alive HTTP/1.1 client on hyper's connection API: no pool,
//! no redirects, nothing between the load and the socket.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Request {
    inner: hyper::Request<Full<Bytes>>,
}

impl Request {
    pub fn new(method: hyper::Method, path: &str, body: String) -> Self {
        let mut inner = hyper::Request::new(Full::new(Bytes::from(body)));
        *inner.method_mut() = method;
        *inner.uri_mut() = path.parse().unwrap_or_default();
        Request { inner }
    }

    pub fn post(path: &str, body: String) -> Self {
        Self::new(hyper::Method::POST, path, body)
    }

    /// A JSON request.
    pub fn json(method: hyper::Method, path: &str, body: &serde_json::Value) -> Self {
        Self::new(method, path, body.to_string()).header("content-type", "application/json")
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub fn header(mut self, name: &'static str, value: impl AsRef<str>) -> Self {
        if let Ok(value) = value.as_ref().parse() {
            self.inner.headers_mut().insert(name, value);
        }
        self
    }
}

pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    pub async fn open(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            host: addr.to_owned(),
        })
    }

    /// Sends one request and reads the whole answer: (status, body).
    pub async fn send(&mut self, request: Request) -> anyhow::Result<(u16, Bytes)> {
        let response = self.send_streaming(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Sends one request and returns the answer with its body unread (streams).
    pub async fn send_streaming(
        &mut self,
        mut request: Request,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        if let Ok(host) = self.host.parse() {
            request
                .inner
                .headers_mut()
                .insert(hyper::header::HOST, host);
        }
        self.sender.ready().await?;
        Ok(self.sender.send_request(request.inner).await?)
    }
}
