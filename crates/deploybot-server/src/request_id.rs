//! Every request's id: the client's `X-Request-Id` when it is sane
//! (printable ASCII, at most 128 characters), a new UUID otherwise. The
//! request span carries it (`trace.rs`), so every log line written while
//! handling the request names it, and the answer returns it.
//!
//! Its own small layer rather than tower-http's `SetRequestId` and
//! `PropagateRequestId`: those keep whatever id the client sent, and keep
//! it as the very `HeaderValue` hyper parsed, which is a slice of the
//! connection's read buffer; held through a long-poll, it would pin that
//! buffer (see BENCHMARKS.md). Here the id is always a copy of its own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-chosen id kept.
const MAX_LEN: usize = 128;

/// A request's id while the request is handled: a made one is kept as the
/// 16 bytes of its UUID, not as text on the heap, since a held long-poll
/// keeps it for as long as it waits.
enum Id {
    Made(uuid::Uuid),
    Given(HeaderValue),
}

impl Id {
    fn header(&self) -> HeaderValue {
        match self {
            Id::Made(uuid) => {
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                let text = uuid.hyphenated().encode_lower(&mut text);
                HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
            }
            Id::Given(value) => value.clone(),
        }
    }

    fn into_header(self) -> HeaderValue {
        match self {
            Id::Given(value) => value,
            made => made.header(),
        }
    }
}

/// The client's id if it is printable ASCII of 1 to 128 characters, copied
/// out of the request; a new one otherwise.
fn request_id(given: Option<&HeaderValue>) -> Id {
    given
        .map(HeaderValue::as_bytes)
        .filter(|id| {
            (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| (b' '..=b'~').contains(b))
        })
        .and_then(|id| HeaderValue::from_bytes(id).ok())
        .map_or_else(|| Id::Made(uuid::Uuid::now_v7()), Id::Given)
}

#[derive(Clone, Copy)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

/// Sets `X-Request-Id` on the request (for the span) and on the answer.
#[derive(Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = request_id(request.headers().get(X_REQUEST_ID));
        request.headers_mut().insert(X_REQUEST_ID, id.header());
        Answered {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct Answered<F> {
        #[pin]
        inner: F,
        id: Option<Id>,
    }
}

impl<F, ResBody, E> Future for Answered<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(id)) = (&mut result, this.id.take()) {
            response
                .headers_mut()
                .insert(X_REQUEST_ID, id.into_header());
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(text: &[u8]) -> HeaderValue {
        request_id(Some(&HeaderValue::from_bytes(text).unwrap())).into_header()
    }

    #[test]
    fn a_sane_client_id_is_kept_anything_else_replaced() {
        assert_eq!(given(b"abc-123"), "abc-123");
        assert_eq!(given(b"req 42: retry"), "req 42: retry");
        let longest = "x".repeat(MAX_LEN);
        assert_eq!(given(longest.as_bytes()), longest.as_str());

        let made = request_id(None).into_header();
        assert_eq!(made.len(), 36);
        assert!(uuid::Uuid::parse_str(made.to_str().unwrap()).is_ok());
        for bad in [
            "x".repeat(MAX_LEN + 1).into_bytes(),
            b"tab\there".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
            b"".to_vec(),
        ] {
            let replaced = given(&bad);
            assert_ne!(replaced.as_bytes(), bad.as_slice());
            assert_eq!(replaced.len(), 36, "{bad:?}");
        }
        assert_ne!(
            request_id(None).into_header(),
            request_id(None).into_header()
        );
    }
}
