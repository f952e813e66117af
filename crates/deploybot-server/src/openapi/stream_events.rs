//! The events of `GET /v1/logs/stream`, declared as what they are: each
//! Server-Sent Event has a name, maybe an id, and JSON data of a known
//! schema.

use utoipa::openapi::schema::{OneOfBuilder, Schema};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Type};

const OPERATION: &str = "streamLogs";

/// Describes the stream's events on its 200 answer.
pub fn declare(api: &mut utoipa::openapi::OpenApi) {
    let events = OneOfBuilder::new()
        .item(event(
            "ready",
            "Sent first: the id is the stream's starting point, to resume from",
            true,
            None,
        ))
        .item(event(
            "log",
            "A line of output; its id is its position in the log store (`Last-Event-ID`)",
            true,
            Some("LogEntry"),
        ))
        .item(event(
            "status",
            "A job changed state",
            false,
            Some("StatusEvent"),
        ))
        .description(Some(
            "One Server-Sent Event (`event:`, `id:`, `data:` lines); `data` is JSON. Comment lines keep an idle stream alive.",
        ))
        .build();
    for item in api.paths.paths.values_mut() {
        let Some(get) = item.get.as_mut() else {
            continue;
        };
        if get.operation_id.as_deref() != Some(OPERATION) {
            continue;
        }
        if let Some(RefOr::T(answer)) = get.responses.responses.get_mut("200") {
            answer.content.insert(
                "text/event-stream".to_owned(),
                ContentBuilder::new()
                    .schema(Some(Schema::OneOf(events.clone())))
                    .build(),
            );
        }
    }
}

fn event(name: &str, description: &str, has_id: bool, data: Option<&str>) -> Schema {
    let mut object = ObjectBuilder::new()
        .title(Some(name))
        .description(Some(description))
        .property(
            "event",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([name])),
        )
        .required("event");
    if has_id {
        object = object
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .required("id");
    }
    if let Some(schema) = data {
        object = object
            .property("data", Ref::from_schema_name(schema))
            .required("data");
    }
    Schema::Object(object.build())
}
