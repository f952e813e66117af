//! `Connection: close` on answers given before the request's body was read
//! to its end (bad credentials, a wrong signature, a body too large).
//!
//! hyper closes such a connection after the answer rather than read what
//! is left of the body; without the header a client keeps the connection
//! for its next request, which then fails when the close arrives. Saying
//! so lets every client open a fresh one instead.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

#[derive(Clone, Copy, Default)]
pub struct CloseUnreadLayer;

impl<S> Layer<S> for CloseUnreadLayer {
    type Service = CloseUnread<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CloseUnread { inner }
    }
}

#[derive(Clone)]
pub struct CloseUnread<S> {
    inner: S,
}

/// Whether the request says a body follows.
fn has_body<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(TRANSFER_ENCODING)
        || request
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

impl<S, B, ResBody> Service<Request<B>> for CloseUnread<S>
where
    S: Service<Request<Watched<B>>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = CloseUnreadFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Only requests with a body pay for the flag.
        let read = has_body(&request).then(|| Arc::new(AtomicBool::new(false)));
        let flag = read.clone();
        let request = request.map(|inner| Watched { inner, read: flag });
        CloseUnreadFuture {
            inner: self.inner.call(request),
            read,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct CloseUnreadFuture<F> {
        #[pin]
        inner: F,
        read: Option<Arc<AtomicBool>>,
    }
}

impl<F, ResBody, E> Future for CloseUnreadFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if this
            .read
            .as_ref()
            .is_some_and(|read| !read.load(Ordering::Relaxed))
        {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response))
    }
}

pin_project_lite::pin_project! {
    /// A request body that notes when it has been read to its end.
    pub struct Watched<B> {
        #[pin]
        inner: B,
        read: Option<Arc<AtomicBool>>,
    }
}

impl<B: Body> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(read) = this.read
            && (frame.is_none() || this.inner.is_end_stream())
        {
            read.store(true, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
