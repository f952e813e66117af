//! The OpenAPI document (`/openapi.json`) and its docs UI (`/docs`), served
//! from assets compiled into the binary, so they work offline.

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::routes::{
    agents, apps, audit, deliveries, health, hosts, jobs, logs, metrics, tokens, webhooks,
};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "DeployBot",
        description = "Self-hosted push-to-deploy controller. Errors are `{\"error\": {\"code\", \"message\"}, \"detail\"}`. Every endpoint but the webhook (signed), /health and the docs needs `Authorization: Bearer <token>`: 401 without a valid one, 403 when its role does not allow the call."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(
        webhooks::github,
        deliveries::list,
        jobs::create,
        jobs::list,
        jobs::get,
        jobs::report_status,
        jobs::cancel,
        jobs::retry,
        logs::append,
        logs::page,
        logs::stream,
        agents::register,
        agents::heartbeat,
        agents::list,
        agents::revoke,
        tokens::create,
        tokens::list,
        tokens::revoke,
        audit::list,
        apps::list,
        apps::explain,
        hosts::list,
        health::health,
        health::ready,
        metrics::metrics,
        health::status,
    ),
    tags(
        (name = "webhooks", description = "GitHub deliveries"),
        (name = "jobs", description = "Deployments"),
        (name = "agents", description = "The processes that run deployments on hosts"),
        (name = "hosts", description = "Deployment targets"),
        (name = "apps", description = "The live apps.yaml"),
        (name = "logs", description = "Deploy output, paged or live"),
        (name = "tokens", description = "Credentials for people, CI and agent enrollment"),
        (name = "audit", description = "Who did what"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer token scheme the API uses.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("dbt_…")
                    .build(),
            ),
        );
    }
}

pub fn routes() -> Router<AppState> {
    SwaggerUi::new("/docs")
        .url("/openapi.json", ApiDoc::openapi())
        .into()
}
