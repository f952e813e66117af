//! The OpenAPI document (`/openapi.json`) and its docs UI (`/docs`), served
//! from assets compiled into the binary, so they work offline.

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::routes::{agents, deliveries, health, hosts, jobs, logs, webhooks};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "DeployBot",
        description = "Self-hosted push-to-deploy controller. Errors are `{\"error\": {\"code\", \"message\"}, \"detail\"}`."
    ),
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
        hosts::list,
        health::health,
    ),
    tags(
        (name = "webhooks", description = "GitHub deliveries"),
        (name = "jobs", description = "Deployments"),
        (name = "agents", description = "The processes that run deployments on hosts"),
        (name = "hosts", description = "Deployment targets"),
        (name = "logs", description = "Deploy output, paged or live"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

pub fn routes() -> Router<AppState> {
    SwaggerUi::new("/docs")
        .url("/openapi.json", ApiDoc::openapi())
        .into()
}
