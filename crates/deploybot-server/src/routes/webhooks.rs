//! `POST /v1/webhooks/github`: GitHub push deliveries become jobs.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use deploybot_apps::{App, AppSecret, AppsConfig, Skipped};
use deploybot_store::{NewDelivery, NewJob};
use deploybot_wire::signature::{self, SIGNATURE_HEADER, SignatureError};
use deploybot_wire::{DeliveryVerdict, JobSource, WebhookResponse, names};
use tracing::Span;

use crate::auth::Address;
use crate::error::{ApiBytes, ApiError};
use crate::state::AppState;
use crate::webhook::{self, Payload};

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
    ApiBytes(body): ApiBytes,
) -> Result<Json<WebhookResponse>, ApiError> {
    let apps = state.apps.get();
    let signed_by = verify_signature(&state, &apps, &headers, &body).inspect_err(|_| {
        state.metrics.signature_failures.inc();
    })?;

    let event = webhook::event(&headers)?;
    let delivery_id = webhook::delivery_id(&headers)?
        .unwrap_or_else(|| format!("local-{}", uuid::Uuid::now_v7()));
    let payload = webhook::payload(&headers, &body)?;
    let repo = payload.repository.as_ref().map(|r| r.full_name.clone());
    let mut delivery = NewDelivery {
        delivery_id,
        event: event.clone(),
        repo: repo.clone(),
        git_ref: payload.git_ref.clone(),
        sha: payload.after.clone(),
        verdict: DeliveryVerdict::NoMatch,
        message: String::new(),
        address,
    };
    let mut jobs = match event.as_str() {
        "ping" => {
            delivery.verdict = DeliveryVerdict::Ping;
            delivery.message = "pong: the webhook is set up".into();
            Vec::new()
        }
        "push" => plan_push(&apps, &signed_by, &payload, &mut delivery)?,
        other => {
            delivery.verdict = DeliveryVerdict::IgnoredEvent;
            delivery.message = format!("event {other:?} ignored: only push events deploy");
            Vec::new()
        }
    };

    // Each job's span lives until the jobs are committed: in a trace, the
    // webhook's request has one child per job it created.
    let planned: Vec<(String, String, String, Span)> = jobs
        .iter_mut()
        .map(|job| {
            let span = super::jobs::creation_span(job);
            (job.id.clone(), job.app.clone(), job.host.clone(), span)
        })
        .collect();
    let outcome = state.store.ingest_delivery(delivery.clone(), jobs).await?;
    state
        .metrics
        .webhook_deliveries
        .get_or_create(&crate::metrics::VerdictLabels {
            verdict: outcome.verdict.as_str().to_owned(),
        })
        .inc();
    for (id, app, host, span) in &planned {
        if outcome.hosts_with_new_jobs.contains(host) {
            state.metrics.job_created(app, "webhook");
        }
        if !outcome.duplicate && outcome.job_ids.contains(id) {
            span.in_scope(|| tracing::info!("job queued"));
        }
    }
    for host in &outcome.hosts_with_new_jobs {
        state.dispatch.job_enqueued(host);
    }
    let message = if outcome.duplicate {
        format!(
            "delivery {} was already received: {}",
            delivery.delivery_id, outcome.message
        )
    } else if outcome.verdict == DeliveryVerdict::Queued && outcome.hosts_with_new_jobs.is_empty() {
        "nothing new to deploy: this commit already has its jobs (deployed before, from another ref, or a replayed delivery)".to_owned()
    } else {
        outcome.message
    };
    tracing::info!(
        delivery = %delivery.delivery_id,
        event = %event,
        verdict = outcome.verdict.as_str(),
        jobs = outcome.job_ids.len(),
        duplicate = outcome.duplicate,
        "webhook received"
    );
    Ok(Json(WebhookResponse {
        received: true,
        jobs_created: outcome.job_ids,
        message,
        delivery_id: delivery.delivery_id,
        verdict: outcome.verdict,
        duplicate: outcome.duplicate,
    }))
}

/// Decides what a push deploys; fills in the delivery's verdict and message.
/// Which secret a delivery was signed with, which decides the apps it may
/// deploy: the global secret deploys apps without their own; an app's own
/// secret deploys the apps that share it.
enum SignedBy {
    Global,
    App(AppSecret),
}

impl SignedBy {
    fn may_deploy(&self, app: &App) -> bool {
        match self {
            SignedBy::Global => app.webhook_secret.is_none(),
            SignedBy::App(secret) => app.webhook_secret.as_ref() == Some(secret),
        }
    }
}

/// Checks `X-Hub-Signature-256` against the global secret (current, then
/// previous during a rotation), then against the apps' own secrets.
fn verify_signature(
    state: &AppState,
    apps: &AppsConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<SignedBy, ApiError> {
    let app_secrets: Vec<&AppSecret> = apps
        .apps()
        .iter()
        .filter_map(|app| app.webhook_secret.as_ref())
        .collect();
    if state.webhook_secrets.is_empty() && app_secrets.is_empty() {
        return Err(ApiError::unauthorized(
            "webhook_secret_unset",
            "this controller has no webhook secret configured (DEPLOYBOT_WEBHOOK_SECRET), so it cannot verify deliveries",
        ));
    }
    let header = headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
    let mut outcome = Err(SignatureError::Mismatch);
    for secret in &state.webhook_secrets {
        outcome = signature::verify(secret.expose().as_bytes(), body, header);
        if outcome.is_ok() {
            return Ok(SignedBy::Global);
        }
    }
    for secret in app_secrets {
        outcome = signature::verify(secret.expose().as_bytes(), body, header);
        if outcome.is_ok() {
            return Ok(SignedBy::App(secret.clone()));
        }
    }
    Err(match outcome {
        Err(SignatureError::Missing) => {
            ApiError::unauthorized("missing_signature", "missing X-Hub-Signature-256 header")
        }
        Err(SignatureError::Malformed) => ApiError::unauthorized(
            "bad_signature",
            "X-Hub-Signature-256 must be sha256= followed by 64 hex digits",
        ),
        _ => ApiError::unauthorized(
            "bad_signature",
            "X-Hub-Signature-256 does not match the body signed with the webhook secret",
        ),
    })
}

fn plan_push(
    apps: &AppsConfig,
    signed_by: &SignedBy,
    payload: &Payload,
    delivery: &mut NewDelivery,
) -> Result<Vec<NewJob>, ApiError> {
    let (Some(repo), Some(git_ref)) = (&delivery.repo, &payload.git_ref) else {
        return Err(ApiError::bad_request(
            "push payload lacks repository.full_name or ref",
        ));
    };
    names::check_repo(repo).map_err(ApiError::bad_request)?;
    names::check_ref(git_ref).map_err(ApiError::bad_request)?;
    if payload.deleted {
        delivery.verdict = DeliveryVerdict::Deleted;
        delivery.message = format!("{git_ref} was deleted: nothing to deploy");
        return Ok(Vec::new());
    }
    // GitHub sends 40 zeros as `after` only for deletions; anything else that
    // is not a SHA is dropped rather than trusted.
    let sha = payload
        .after
        .clone()
        .filter(|sha| names::check_sha(sha).is_ok());

    let mut plan = apps.plan_push(repo, git_ref);
    plan.targets.retain(|app| {
        let allowed = signed_by.may_deploy(app);
        if !allowed {
            plan.skipped.push(Skipped {
                app: app.name.clone(),
                reason: "the delivery was not signed with this app's webhook secret".to_owned(),
            });
        }
        allowed
    });
    if plan.targets.is_empty() {
        delivery.verdict = DeliveryVerdict::NoMatch;
        delivery.message = plan.no_match_reason(repo, git_ref);
        return Ok(Vec::new());
    }

    let metadata = serde_json::json!({
        "pusher": payload.pusher.as_ref().and_then(|p| p.name.clone()),
        "message": payload.head_commit.as_ref().and_then(|c| c.message.as_deref()).map(webhook::headline),
        "compare": payload.compare,
    });
    let mut jobs = Vec::new();
    let mut deployed = Vec::new();
    for app in &plan.targets {
        deployed.push(format!("{} → {}", app.name, app.hosts.join(", ")));
        for host in &app.hosts {
            jobs.push(NewJob {
                id: uuid::Uuid::now_v7().to_string(),
                app: app.name.clone(),
                repo: app.repo.clone(),
                git_ref: git_ref.clone(),
                sha: sha.clone(),
                host: host.clone(),
                metadata: metadata.clone(),
                source: JobSource::Webhook,
                delivery_id: Some(delivery.delivery_id.clone()),
                deploy: app.deploy.clone(),
                attempt: 1,
                retry_of: None,
                traceparent: None,
            });
        }
    }
    let short_sha = sha.as_deref().map(|s| &s[..s.len().min(7)]).unwrap_or("?");
    let mut message = format!(
        "queued {} job(s) for {git_ref}@{short_sha}: {}",
        jobs.len(),
        deployed.join("; ")
    );
    for skipped in &plan.skipped {
        message.push_str(&format!(
            "; app {} skipped: {}",
            skipped.app, skipped.reason
        ));
    }
    delivery.verdict = DeliveryVerdict::Queued;
    delivery.message = message;
    Ok(jobs)
}
