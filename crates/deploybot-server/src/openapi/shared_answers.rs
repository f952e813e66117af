//! The answers many operations share, declared on each from what the
//! operation takes (a bearer token, a JSON body, a query string), so the
//! document lists every status the server may send.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Type};

/// Adds the shared answers an operation may give to each operation.
pub fn declare(api: &mut utoipa::openapi::OpenApi) {
    let global_bearer = takes_bearer(api.security.as_deref());
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            declare_on(operation, global_bearer);
        }
    }
}

fn declare_on(operation: &mut Operation, global_bearer: bool) {
    let bearer = match &operation.security {
        Some(requirements) => takes_bearer(Some(requirements)),
        None => global_bearer,
    };
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.contains_key("application/json"));
    let query = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query));
    let mut answers = vec![(
        "503",
        error(
            "The controller is short of a resource (its database, or memory for request bodies); try again after `Retry-After` seconds",
            true,
        ),
    )];
    if bearer {
        answers.extend([
            ("401", error("No token, or not a valid one", false)),
            ("403", error("The token's role does not allow this", false)),
            (
                "429",
                error(
                    "Too many requests with bad credentials from this address; try again after `Retry-After` seconds",
                    true,
                ),
            ),
        ]);
    }
    if json_body {
        answers.extend([
            ("400", error("The body is not valid JSON", false)),
            (
                "413",
                error("The body is larger than this operation takes", false),
            ),
            ("415", error("The body is not `application/json`", false)),
            (
                "422",
                error(
                    "The JSON does not fit the request schema or its rules",
                    false,
                ),
            ),
        ]);
    }
    if query {
        answers.push(("400", error("A query parameter is invalid", false)));
    }
    for (status, answer) in answers {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(answer));
    }
}

/// Whether these security requirements name the bearer scheme (an empty
/// requirement, `security(())`, means no authentication).
fn takes_bearer(requirements: Option<&[utoipa::openapi::security::SecurityRequirement]>) -> bool {
    requirements.into_iter().flatten().any(|requirement| {
        serde_json::to_value(requirement)
            .ok()
            .is_some_and(|value| value.get("bearer").is_some())
    })
}

/// An error answer (`ErrorBody`), with a `Retry-After` header when it asks
/// the client to come back.
fn error(description: &str, retry_after: bool) -> Response {
    let mut answer = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if retry_after {
        answer = answer.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                )
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    answer.build()
}
