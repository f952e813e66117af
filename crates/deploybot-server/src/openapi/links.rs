//! OpenAPI links: how the answer of one operation feeds the next, so
//! clients (and the stateful fuzzer) can chain calls.

use utoipa::openapi::RefOr;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::LinkBuilder;

/// (from operation, its answer's status, link name, to operation,
/// parameter, where the value is in the answer).
const LINKS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "createJob",
        "201",
        "GetJob",
        "getJob",
        "id",
        "$response.body#/job/id",
    ),
    (
        "createJob",
        "201",
        "CancelJob",
        "cancelJob",
        "id",
        "$response.body#/job/id",
    ),
    (
        "createJob",
        "201",
        "RetryJob",
        "retryJob",
        "id",
        "$response.body#/job/id",
    ),
    (
        "createJob",
        "201",
        "GetJobLogs",
        "getJobLogs",
        "id",
        "$response.body#/job/id",
    ),
    (
        "createJob",
        "200",
        "GetJob",
        "getJob",
        "id",
        "$response.body#/job/id",
    ),
    (
        "retryJob",
        "201",
        "GetJob",
        "getJob",
        "id",
        "$response.body#/job/id",
    ),
    (
        "createToken",
        "201",
        "RevokeToken",
        "revokeToken",
        "id",
        "$response.body#/id",
    ),
    (
        "registerAgent",
        "200",
        "Heartbeat",
        "heartbeat",
        "id",
        "$response.body#/id",
    ),
    (
        "registerAgent",
        "200",
        "RevokeAgent",
        "revokeAgent",
        "id",
        "$response.body#/id",
    ),
];

/// Adds [`LINKS`] to the answers they start from.
pub fn declare(api: &mut utoipa::openapi::OpenApi) {
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let Some(id) = operation.operation_id.clone() else {
                continue;
            };
            for (from, status, name, to, parameter, value) in LINKS {
                if *from != id {
                    continue;
                }
                if let Some(RefOr::T(answer)) = operation.responses.responses.get_mut(*status) {
                    answer.links.insert(
                        (*name).to_owned(),
                        RefOr::T(
                            LinkBuilder::new()
                                .parameter(*parameter, *value)
                                .extensions(Some(operation_id(to)))
                                .build(),
                        ),
                    );
                }
            }
        }
    }
}

/// `operationId`, spelled as the specification does: utoipa 5 writes the
/// link's own field as `operation_id`, which no client reads.
fn operation_id(to: &str) -> Extensions {
    Extensions::from_iter([("operationId", to)])
}
