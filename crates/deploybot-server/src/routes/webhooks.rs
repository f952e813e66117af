//! `POST /v1/webhooks/github`: GitHub push deliveries become jobs.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use deploybot_apps::{AppSecret, AppsConfig};
use deploybot_store::NewDelivery;
use deploybot_wire::WebhookResponse;
use deploybot_wire::signature::{SIGNATURE_HEADER, SignatureError, Verifier};
use tracing::Span;

use crate::auth::Address;
use crate::body;
use crate::error::ApiError;
use crate::push_plan::{BadPush, Received, SignedBy, plan_delivery};
use crate::state::AppState;
use crate::webhook;

/// Receive a GitHub webhook delivery.
///
/// The body must be signed with the shared secret (`X-Hub-Signature-256`).
/// A push creates one job per host of every app whose branch or tag
/// patterns match. The answer comes only after the delivery and its jobs
/// are committed to disk. A redelivery (same `X-GitHub-Delivery`) creates
/// nothing and answers with the first delivery's jobs.
#[utoipa::path(
    post,
    path = "/v1/webhooks/github",
    operation_id = "receiveGithubWebhook",
    tag = "webhooks",
    security(()),
    request_body(content = Object, description = "A GitHub event payload", content_type = "application/json"),
    params(
        ("X-GitHub-Event" = String, Header, description = "push, ping, …"),
        ("X-GitHub-Delivery" = Option<String>, Header, description = "Delivery id, used to recognise redeliveries"),
        ("X-Hub-Signature-256" = String, Header, description = "sha256=HMAC of the body"),
    ),
    responses(
        (status = 200, description = "Received; see `verdict` for what it did", body = WebhookResponse),
        (status = 400, description = "Missing header or unreadable payload", body = deploybot_wire::ErrorBody),
        (status = 401, description = "Missing or wrong signature", body = deploybot_wire::ErrorBody),
        (status = 413, description = "Body over 25 MiB", body = deploybot_wire::ErrorBody),
        (status = 415, description = "Not JSON nor form-encoded", body = deploybot_wire::ErrorBody),
    )
)]
pub async fn github(
    State(state): State<AppState>,
    Address(address): Address,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<WebhookResponse>, ApiError> {
    let apps = state.apps.get();
    let (body, signed_by) = read_signed(&state, &apps, &headers, body)
        .await
        .inspect_err(|err| {
            if err.status() == axum::http::StatusCode::UNAUTHORIZED {
                state.metrics.signature_failures.inc();
            }
        })?;

    let event = webhook::event(&headers)?;
    let delivery_id = webhook::delivery_id(&headers)?
        .unwrap_or_else(|| format!("local-{}", uuid::Uuid::now_v7()));
    let payload = webhook::payload(&headers, &body)?;
    let received = Received {
        event: &event,
        payload: &payload,
        delivery_id: &delivery_id,
        signed_by: &signed_by,
    };
    let oldest_push = time::OffsetDateTime::now_utc() - state.history_kept;
    let mut plan = plan_delivery(&apps, received, oldest_push)
        .map_err(|BadPush(why)| ApiError::bad_request(why))?;
    let delivery = NewDelivery {
        delivery_id: delivery_id.clone(),
        event: event.clone(),
        repo: payload.repository.as_ref().map(|r| r.full_name.clone()),
        git_ref: payload.git_ref.clone(),
        sha: payload.after.clone(),
        verdict: plan.verdict,
        message: plan.message,
        address,
    };
    // Each job's span lives until the jobs are committed: in a trace, the
    // webhook's request has one child per job it created.
    let planned: Vec<(String, Span)> = plan
        .jobs
        .iter_mut()
        .map(|job| (job.id.clone(), super::jobs::creation_span(job)))
        .collect();
    let outcome = state.queue.record_delivery(delivery, plan.jobs).await?;
    if !outcome.duplicate {
        for (id, span) in &planned {
            if outcome.job_ids.contains(id) {
                span.in_scope(|| tracing::info!("job queued"));
            }
        }
    }
    tracing::info!(
        delivery = %delivery_id,
        event = %event,
        verdict = outcome.verdict.as_str(),
        jobs = outcome.job_ids.len(),
        duplicate = outcome.duplicate,
        "webhook received"
    );
    Ok(Json(WebhookResponse {
        received: true,
        jobs_created: outcome.job_ids,
        message: outcome.message,
        delivery_id,
        verdict: outcome.verdict,
        duplicate: outcome.duplicate,
    }))
}

/// Reads the body within its limit and the bodies' memory budget,
/// checking `X-Hub-Signature-256` as it streams in: against the global
/// secret (current, then previous during a rotation), then the apps' own
/// secrets. A missing or malformed header is refused before the body is
/// read. Which secret signed it decides what it may deploy.
async fn read_signed(
    state: &AppState,
    apps: &AppsConfig,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, SignedBy), ApiError> {
    let mut keys: Vec<(SignedBy, &[u8])> = state
        .webhook_secrets
        .iter()
        .map(|secret| (SignedBy::Global, secret.expose().as_bytes()))
        .collect();
    keys.extend(apps.apps().iter().filter_map(|app| {
        let secret: &AppSecret = app.webhook_secret.as_ref()?;
        Some((SignedBy::App(secret.clone()), secret.expose().as_bytes()))
    }));
    if keys.is_empty() {
        return Err(ApiError::unauthorized(
            "webhook_secret_unset",
            "this controller has no webhook secret configured (DEPLOYBOT_WEBHOOK_SECRET), so it cannot verify deliveries",
        ));
    }
    let header = headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
    let mut verifier =
        Verifier::new(header, keys.iter().map(|(_, key)| *key)).map_err(|err| match err {
            SignatureError::Missing => {
                ApiError::unauthorized("missing_signature", "missing X-Hub-Signature-256 header")
            }
            _ => ApiError::unauthorized(
                "bad_signature",
                "X-Hub-Signature-256 must be sha256= followed by 64 hex digits",
            ),
        })?;
    let (bytes, _reserved) = body::read(body, body::WEBHOOK, &state.body_budget, |chunk| {
        verifier.update(chunk)
    })
    .await?;
    let signer = verifier.finish().ok_or_else(|| {
        ApiError::unauthorized(
            "bad_signature",
            "X-Hub-Signature-256 does not match the body signed with the webhook secret",
        )
    })?;
    let signed_by = keys.swap_remove(signer).0;
    Ok((bytes, signed_by))
}
