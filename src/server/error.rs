//! The one error shape of the API, `{"error": {"code", "message", "details"}}`, the mapping
//! from library errors to HTTP statuses, and the JSON body extractor whose every rejection
//! (empty, oversized, malformed, unknown fields) uses that shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::batch::BatchError;
use crate::registry::RegistryError;
use crate::rules::compile::CompileErrors;
use crate::rules::live::RulesError;
use crate::service::RouteError;
use crate::serving::ClassifyError;
use crate::store::StoreError;

/// An API error: status, machine-readable code, message and optional details.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_rules`.
    pub code: &'static str,
    /// What is wrong, for people.
    pub message: String,
    /// Structured details (errors list, current version...).
    pub details: Value,
    /// Seconds to wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error without details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// 400 with code `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422 with code `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 404 with code `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 with code `internal`; the cause is logged, not returned.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the cause",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.details.is_null() {
            error["details"] = self.details;
        }
        let mut resp = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::QueueFull { .. } => {
                let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", e.to_string());
                err.retry_after = Some(1);
                err
            }
            BatchError::Stopped => {
                let mut err = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                );
                err.retry_after = Some(5);
                err
            }
            BatchError::Inference(m) => Self::internal(m),
        }
    }
}

impl From<ClassifyError> for ApiError {
    fn from(e: ClassifyError) -> Self {
        match e {
            ClassifyError::Batch(b) => b.into(),
            other => Self::internal(other),
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::EmptyTicket { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty_ticket",
                e.to_string(),
            ),
            RouteError::BadTicketId { .. } | RouteError::NoTickets => Self::invalid(e.to_string()),
            RouteError::TooManyTickets { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_tickets",
                e.to_string(),
            ),
            RouteError::Classify(c) => c.into(),
            RouteError::Store(s) => s.into(),
        }
    }
}

/// 422 `invalid_rules` with every compile error in the details.
pub fn invalid_rules(e: CompileErrors) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_rules",
        format!(
            "the ruleset has {} error(s); the active rules are unchanged",
            e.0.len()
        ),
    )
    .with_details(json!({ "errors": e.0 }))
}

impl From<RulesError> for ApiError {
    fn from(e: RulesError) -> Self {
        match e {
            RulesError::Invalid(errors) => invalid_rules(errors),
            RulesError::Store(s) => s.into(),
            other => Self::internal(other),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let conflict = |code| Self::new(StatusCode::CONFLICT, code, e.to_string());
        match &e {
            RegistryError::Unloadable(_) => conflict("model_unloadable"),
            RegistryError::NotACandidate { .. } => conflict("not_a_candidate"),
            RegistryError::RetrainRunning => conflict("retrain_running"),
            RegistryError::NoTrainingData { .. } => conflict("no_training_data"),
            RegistryError::RulesIncompatible { errors, .. } => {
                let details = json!({ "errors": errors.0 });
                conflict("rules_incompatible").with_details(details)
            }
            RegistryError::NothingToRollBackTo => Self::not_found(e.to_string()),
            RegistryError::RetrainFailed(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "retrain_failed",
                e.to_string(),
            ),
            _ => match e {
                RegistryError::Store(s) => s.into(),
                RegistryError::Rules(r) => r.into(),
                other => Self::internal(other),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { current, .. } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "version_conflict",
                format!("{e}: someone saved the rules since you read them; GET /v1/rules, reapply your change and send If-Match: \"{current}\""),
            )
            .with_details(json!({ "current_version": current.to_string() })),
            StoreError::IdempotencyMismatch(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                e.to_string(),
            ),
            StoreError::NotFound(m) => Self::not_found(m),
            StoreError::Injected(_) => {
                tracing::error!("{e}");
                let mut err = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_failed",
                    format!("{e}; the previous state keeps serving, retry later"),
                );
                err.retry_after = Some(5);
                err
            }
            other => Self::internal(other),
        }
    }
}

/// A JSON request body; rejections use the API error shape with line and column.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The raw request body under the size limit (for handlers that also hash it).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is larger than the server's limit (limits.max_body_bytes)",
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {e}"))
            }
        })?;
        Ok(RawBody(bytes))
    }
}

/// Parses a JSON body: empty -> 400 `empty_body`; syntax -> 400 `malformed_json`; wrong shape or
/// unknown field -> 422 `invalid_request`, each with line and column.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::invalid(e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {e}"),
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::Ticket;

    #[test]
    fn json_errors_are_classified_with_positions() {
        let e = parse_json::<Ticket>(b"  ").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "empty_body"));
        let e = parse_json::<Ticket>(b"{\"body\": ").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "malformed_json"));
        let e = parse_json::<Ticket>(b"{\"body\": \"x\", \"colour\": 1}").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "invalid_request"));
        assert!(
            e.message
                .starts_with("unknown field `colour`, expected one of"),
            "{}",
            e.message
        );
        assert!(e.message.ends_with("at line 1 column 22"), "{}", e.message);
    }
}
