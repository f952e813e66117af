//! Request bodies: each route's size limit, and a memory budget that all
//! bodies being read share.
//!
//! A body is read chunk by chunk, and each chunk takes its bytes from the
//! budget until the request is done with them. When the budget is spent
//! (many large bodies at once, or many slow ones held open), a body that
//! needs more is refused with 503 and `Retry-After`, instead of the
//! controller's memory growing with whatever clients send. A body over its
//! route's limit is refused with 413 as soon as that is known: from its
//! `Content-Length`, or when the bytes read pass the limit.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The budget of all bodies being read at once.
#[derive(Clone)]
pub struct BodyBudget {
    available: Arc<Semaphore>,
    total: usize,
}

/// Bytes of the budget, held until dropped.
pub struct Reserved(Option<OwnedSemaphorePermit>);

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        let total = bytes.min(Semaphore::MAX_PERMITS);
        BodyBudget {
            available: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes held by bodies being read now.
    pub fn in_use(&self) -> usize {
        self.total
            .saturating_sub(self.available.available_permits())
    }

    /// Adds `bytes` to `reserved`, or refuses: the budget is spent.
    fn take(&self, reserved: &mut Reserved, bytes: usize) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let permits = u32::try_from(bytes).map_err(|_| spent())?;
        let permit = self
            .available
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| spent())?;
        match &mut reserved.0 {
            Some(held) => held.merge(permit),
            None => reserved.0 = Some(permit),
        }
        Ok(())
    }
}

fn spent() -> ApiError {
    crate::metrics::BODIES_REFUSED.inc();
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_bodies",
        "the controller is reading too many request bodies at once; try again shortly",
    )
    .retry_after(1)
}

/// A route's limit on its bodies, and how to say it.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub bytes: usize,
    /// E.g. `webhooks accept at most 25 MiB`.
    pub says: &'static str,
}

/// The API's JSON bodies.
pub const API: Limit = Limit {
    bytes: 1024 * 1024,
    says: "the API accepts at most 1 MiB",
};
/// An agent's batch of log lines (agents send batches well under it).
pub const LOG_UPLOAD: Limit = Limit {
    bytes: 16 * 1024 * 1024,
    says: "a log upload holds at most 16 MiB",
};
/// A webhook delivery: GitHub's own cap.
pub const WEBHOOK: Limit = Limit {
    bytes: 25 * 1024 * 1024,
    says: "webhooks accept at most 25 MiB",
};

fn too_large(limit: Limit) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is too large ({})", limit.says),
    )
}

/// Reads `body` to its end within `limit` and `budget`, handing each chunk
/// to `each` as it arrives (a signature is checked that way). The bytes,
/// and their share of the budget (drop it once done with them).
pub async fn read(
    body: Body,
    limit: Limit,
    budget: &BodyBudget,
    mut each: impl FnMut(&[u8]),
) -> Result<(Bytes, Reserved), ApiError> {
    let declared = http_body::Body::size_hint(&body).lower();
    if declared > limit.bytes as u64 {
        return Err(too_large(limit));
    }
    let mut reserved = Reserved(None);
    // Room for what the client declared (within the limit): one copy, no
    // regrowth, for the usual body with a `Content-Length`.
    let mut bytes = Vec::with_capacity(declared as usize);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            // The body timeout, or a connection cut mid-body.
            ApiError::bad_request(format!("cannot read the request body: {err}"))
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if bytes.len() + chunk.len() > limit.bytes {
            return Err(too_large(limit));
        }
        budget.take(&mut reserved, chunk.len())?;
        each(&chunk);
        bytes.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(bytes), reserved))
}
