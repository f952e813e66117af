use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error answer: `{"error": {"code", "message"}, "detail"}`.
///
/// `code` is stable and meant for programs; `message` is for people.
/// `detail` repeats the message, for clients that read FastAPI's error shape.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// e.g. `not_found`, `invalid_request`, `conflict`, `bad_signature`.
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        ErrorBody {
            detail: message.clone(),
            error: ErrorDetail {
                code: code.into(),
                message,
            },
        }
    }
}
