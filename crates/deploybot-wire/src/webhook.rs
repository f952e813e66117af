use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// Answer of `POST /v1/webhooks/github`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookResponse {
    pub received: bool,
    /// Ids of the jobs this delivery queued (for a redelivery: the ones it queued the first time).
    pub jobs_created: Vec<String>,
    /// What was done, or why nothing was.
    pub message: String,
    /// The `X-GitHub-Delivery` id, or one the controller made up when the header was absent.
    pub delivery_id: String,
    pub verdict: DeliveryVerdict,
    /// `true` when this delivery id had been received before.
    pub duplicate: bool,
}

/// What the controller made of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryVerdict {
    /// A push that queued one or more jobs.
    Queued,
    /// GitHub's `ping` event.
    Ping,
    /// An event other than `push`.
    IgnoredEvent,
    /// A push that deleted a branch or tag.
    Deleted,
    /// A push no app deploys (unknown repo, ref filtered out, deploy_on_push off).
    NoMatch,
    /// A push made before the oldest history the controller keeps: a
    /// replay of it could not be recognised, so it deploys nothing.
    Stale,
}

impl DeliveryVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryVerdict::Queued => "queued",
            DeliveryVerdict::Ping => "ping",
            DeliveryVerdict::IgnoredEvent => "ignored_event",
            DeliveryVerdict::Deleted => "deleted",
            DeliveryVerdict::NoMatch => "no_match",
            DeliveryVerdict::Stale => "stale",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            DeliveryVerdict::Queued,
            DeliveryVerdict::Ping,
            DeliveryVerdict::IgnoredEvent,
            DeliveryVerdict::Deleted,
            DeliveryVerdict::NoMatch,
            DeliveryVerdict::Stale,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// A recorded webhook delivery (`GET /v1/deliveries`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub delivery_id: String,
    pub event: String,
    pub repo: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub sha: Option<String>,
    pub verdict: DeliveryVerdict,
    pub message: String,
    pub job_ids: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: Timestamp,
}
