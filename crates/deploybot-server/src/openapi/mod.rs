//! The OpenAPI document (`/openapi.json`) and its docs UI (`/docs`), served
//! from assets compiled into the binary, so they work offline.

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::state::AppState;

mod links;
mod shared_answers;
mod stream_events;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "DeployBot",
        description = "Self-hosted push-to-deploy controller. Errors are `{\"error\": {\"code\", \"message\"}, \"detail\"}`. Every endpoint but the webhook (signed), /health and the docs needs `Authorization: Bearer <token>`: 401 without a valid one, 403 when its role does not allow the call. Every answer carries `X-Request-Id` (the request's own when it sent a printable one of at most 128 characters), also found in the controller's log lines. A W3C `traceparent` header joins the request to the caller's trace when the controller exports traces."
    ),
    security(("bearer" = [])),
    components(schemas(
        deploybot_wire::ErrorBody,
        deploybot_wire::LogEntry,
        deploybot_wire::StatusEvent
    )),
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

/// Declares the `X-Request-Id` header on every answer.
struct RequestIdHeader;

impl Modify for RequestIdHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ObjectBuilder, RefOr, Type, header::HeaderBuilder};
        let header = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some("The request's id, as in the controller's log lines"))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .insert("X-Request-Id".to_owned(), header.clone());
                    }
                }
            }
        }
    }
}

/// What the document says of every operation, once the route table has
/// added the paths.
pub fn finish(api: &mut utoipa::openapi::OpenApi) {
    BearerAuth.modify(api);
    shared_answers::declare(api);
    links::declare(api);
    stream_events::declare(api);
    RequestIdHeader.modify(api);
}

/// `/openapi.json` (the document `api`) and the docs UI at `/docs`.
///
/// The document is serialized once, here: it is large (every operation's
/// shared answers and headers), the same for every request, and its
/// struct need not stay in memory.
pub fn routes(api: &utoipa::openapi::OpenApi) -> Router<AppState> {
    let json = match serde_json::to_vec(api) {
        Ok(json) => Bytes::from(json),
        Err(err) => {
            // Not reachable: the document is plain data.
            tracing::error!(error = %err, "cannot serialize the OpenAPI document");
            Bytes::from_static(b"{}")
        }
    };
    let document = axum::routing::get(move || {
        let json = json.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], json) }
    });
    let docs: Router<AppState> = SwaggerUi::new("/docs")
        .config(Config::from("/openapi.json"))
        .into();
    docs.route("/openapi.json", document)
}
