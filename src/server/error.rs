//! The one error shape of the API, `{"error": {"code", "message", "details"}}`: the table of
//! error codes with their HTTP status ([`Code`], the contract integrations rely on), and the
//! mapping from the library's typed errors to codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::batch::BatchError;
use crate::connector::InboundError;
use crate::registry::RegistryError;
use crate::rules::compile::CompileErrors;
use crate::rules::live::RulesError;
use crate::service::incidents::IncidentError;
use crate::service::jobs::JobFailure;
use crate::service::{ConnectorError, ErasureError, FeedbackError, JobsError, RouteError};
use crate::serving::ClassifyError;
use crate::store::{JobError, StoreError};

/// Declares [`Code`] with each code's name and HTTP status, once.
macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = ($name:literal, $status:ident),)*) => {
        /// Every error code of the API with its HTTP status. The README's error table lists
        /// them (a test checks it); integrations rely on them: add codes, never change one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as it appears in `error.code`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            /// The HTTP status that goes with it.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(Code::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

codes! {
    /// No request body where one is needed.
    EmptyBody = ("empty_body", BAD_REQUEST),
    /// The body is not JSON (with line and column).
    MalformedJson = ("malformed_json", BAD_REQUEST),
    /// A bad header, query string or path parameter.
    BadRequest = ("bad_request", BAD_REQUEST),
    /// No or unknown token.
    Unauthorized = ("unauthorized", UNAUTHORIZED),
    /// The token lacks the scope.
    Forbidden = ("forbidden", FORBIDDEN),
    /// A console change without the CSRF token.
    Csrf = ("csrf", FORBIDDEN),
    /// Unknown path, decision, version or model.
    NotFound = ("not_found", NOT_FOUND),
    /// The path does not take that method.
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED),
    /// One retraining at a time.
    RetrainRunning = ("retrain_running", CONFLICT),
    /// The active rules do not compile against a model's taxonomy.
    RulesIncompatible = ("rules_incompatible", CONFLICT),
    /// The intent is in the taxonomy already.
    IntentExists = ("intent_exists", CONFLICT),
    /// Only candidates run in shadow.
    NotACandidate = ("not_a_candidate", CONFLICT),
    /// The curated training data is missing.
    NoTrainingData = ("no_training_data", CONFLICT),
    /// A model's files do not load.
    ModelUnloadable = ("model_unloadable", CONFLICT),
    /// The job has ended, or is registering what it made; it can no longer be cancelled.
    JobFinished = ("job_finished", CONFLICT),
    /// Only dead write-backs and failed connector events are retried.
    NotRetryable = ("not_retryable", CONFLICT),
    /// An incident correction its state does not allow (a ticket not linked, merged already…).
    IncidentConflict = ("incident_conflict", CONFLICT),
    /// The rules changed since they were read.
    VersionConflict = ("version_conflict", PRECONDITION_FAILED),
    /// A rules change without If-Match.
    IfMatchRequired = ("if_match_required", PRECONDITION_REQUIRED),
    /// Over `limits.max_body_bytes`.
    BodyTooLarge = ("body_too_large", PAYLOAD_TOO_LARGE),
    /// Over `limits.max_batch_tickets`.
    TooManyTickets = ("too_many_tickets", PAYLOAD_TOO_LARGE),
    /// Unknown field, wrong type or value (with line and column where there is a body).
    InvalidRequest = ("invalid_request", UNPROCESSABLE_ENTITY),
    /// A ticket without text.
    EmptyTicket = ("empty_ticket", UNPROCESSABLE_ENTITY),
    /// Rules that do not compile (every error).
    InvalidRules = ("invalid_rules", UNPROCESSABLE_ENTITY),
    /// An idempotency key reused for another request.
    IdempotencyKeyReused = ("idempotency_key_reused", UNPROCESSABLE_ENTITY),
    /// Training the candidate failed.
    RetrainFailed = ("retrain_failed", UNPROCESSABLE_ENTITY),
    /// The inference queue is full.
    Overloaded = ("overloaded", TOO_MANY_REQUESTS),
    /// The token's requests per minute are used up.
    RateLimited = ("rate_limited", TOO_MANY_REQUESTS),
    /// A bug or an unexpected failure; the server log has the cause.
    Internal = ("internal", INTERNAL_SERVER_ERROR),
    /// Over `limits.request_timeout_ms`.
    Timeout = ("timeout", SERVICE_UNAVAILABLE),
    /// The inference worker stopped.
    Unavailable = ("unavailable", SERVICE_UNAVAILABLE),
    /// The database refused a write; nothing changed.
    StorageFailed = ("storage_failed", SERVICE_UNAVAILABLE),
}

/// An API error: its code (and so its status), a message and optional details.
#[derive(Debug)]
pub struct ApiError {
    /// Stable code, e.g. `invalid_rules`.
    pub code: Code,
    /// What is wrong, for people.
    pub message: String,
    /// Structured details (errors list, current version...).
    pub details: Value,
    /// Seconds to wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error without details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    /// The HTTP status of the code.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Asks the client to retry after `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }

    /// 422 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// 500 `internal`; the cause is logged, not returned.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            Code::Internal,
            "internal error; the server log has the cause",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut error = json!({"code": self.code.name(), "message": self.message});
        if !self.details.is_null() {
            error["details"] = self.details;
        }
        let mut resp = (status, axum::Json(json!({ "error": error }))).into_response();
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
                Self::new(Code::Overloaded, e.to_string()).retry_after(1)
            }
            BatchError::Stopped => Self::new(Code::Unavailable, e.to_string()).retry_after(5),
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
            RouteError::Classify(c) => c.into(),
            RouteError::Store(s) => s.into(),
            e @ RouteError::EmptyTicket { .. } => Self::new(Code::EmptyTicket, e.to_string()),
            e @ (RouteError::BadTicketId { .. } | RouteError::NoTickets) => {
                Self::invalid(e.to_string())
            }
            e @ RouteError::TooManyTickets { .. } => Self::new(Code::TooManyTickets, e.to_string()),
        }
    }
}

/// Every rules compile error, as the details of an error: `errors` (one line each, as
/// `rules-check` prints them) and `problems` (the same, as fields).
pub fn compile_details(e: &CompileErrors) -> Value {
    json!({ "errors": e.lines(), "problems": e.0 })
}

/// 422 `invalid_rules` with every compile error in the details.
pub fn invalid_rules(e: CompileErrors) -> ApiError {
    ApiError::new(
        Code::InvalidRules,
        format!(
            "the ruleset has {} error(s); the active rules are unchanged",
            e.0.len()
        ),
    )
    .with_details(compile_details(&e))
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
        let code = match e {
            RegistryError::Store(s) => return s.into(),
            RegistryError::Rules(r) => return r.into(),
            RegistryError::RulesIncompatible { ref errors, .. } => {
                let details = compile_details(errors);
                return Self::new(Code::RulesIncompatible, e.to_string()).with_details(details);
            }
            RegistryError::Unloadable(_) => Code::ModelUnloadable,
            RegistryError::NotACandidate { .. } => Code::NotACandidate,
            RegistryError::RetrainRunning => Code::RetrainRunning,
            RegistryError::NoTrainingData { .. } => Code::NoTrainingData,
            RegistryError::NothingToRollBackTo => Code::NotFound,
            RegistryError::RetrainFailed(_) => Code::RetrainFailed,
            RegistryError::Thresholds { .. } => Code::InvalidRequest,
            _ => return Self::internal(e),
        };
        Self::new(code, e.to_string())
    }
}

impl From<FeedbackError> for ApiError {
    fn from(e: FeedbackError) -> Self {
        match e {
            FeedbackError::Invalid(m) => Self::invalid(m),
            FeedbackError::IntentExists(_) => Self::new(Code::IntentExists, e.to_string()),
            FeedbackError::Store(s) => s.into(),
            FeedbackError::Taxonomy(t) => Self::internal(t),
        }
    }
}

impl From<ErasureError> for ApiError {
    fn from(e: ErasureError) -> Self {
        match e {
            ErasureError::Store(s) => s.into(),
            ErasureError::Cache(_) => {
                tracing::error!("{e}");
                Self::new(Code::Internal, format!("{e}; send the DELETE again"))
            }
        }
    }
}

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::Registry(r) => r.into(),
            JobsError::Store(s) => s.into(),
            JobsError::Finished { .. } | JobsError::Committing { .. } => {
                Self::new(Code::JobFinished, e.to_string())
            }
            JobsError::FineTuneInServe => Self::invalid(e.to_string()),
            JobsError::Corrupt { .. } => Self::internal(e),
        }
    }
}

/// A failed job's error: the code and message the API would have answered with.
pub fn job_error(failure: JobFailure) -> JobError {
    let e = match failure {
        JobFailure::Registry(e) => ApiError::from(e),
        JobFailure::Panicked(why) => ApiError::internal(why),
    };
    JobError {
        code: e.code.name().to_string(),
        message: e.message,
    }
}

impl From<IncidentError> for ApiError {
    fn from(e: IncidentError) -> Self {
        match e {
            IncidentError::Store(s) => s.into(),
            IncidentError::Empty { .. } => Self::invalid(e.to_string()),
            e => Self::new(Code::IncidentConflict, e.to_string()),
        }
    }
}

impl From<ConnectorError> for ApiError {
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::Inbound(i) => i.into(),
            ConnectorError::Store(s) => s.into(),
            ConnectorError::NotRetryable(m) => Self::new(Code::NotRetryable, m),
        }
    }
}

impl From<InboundError> for ApiError {
    fn from(e: InboundError) -> Self {
        let code = match e {
            InboundError::Unknown { .. } => Code::NotFound,
            InboundError::Unauthenticated(_) => Code::Unauthorized,
            InboundError::TooLarge { .. } => Code::BodyTooLarge,
            InboundError::NotJson(_) => Code::MalformedJson,
            InboundError::Unmappable(_) => Code::InvalidRequest,
        };
        Self::new(code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { current, .. } => Self::new(
                Code::VersionConflict,
                format!("{e}: someone saved the rules since you read them; GET /v1/rules, reapply your change and send If-Match: \"{current}\""),
            )
            .with_details(json!({ "current_version": current.to_string() })),
            StoreError::ThresholdsConflict {
                ref model, current, ..
            } => Self::new(
                Code::VersionConflict,
                format!("{e}: someone saved them since you read them; GET /v1/models/{model}/thresholds, reapply your change and send If-Match: \"{current}\""),
            )
            .with_details(json!({ "current_version": current.to_string() })),
            StoreError::ModelChanged { .. } | StoreError::RulesChanged { .. } => {
                Self::new(Code::VersionConflict, e.to_string())
            }
            StoreError::IdempotencyMismatch(_) => {
                Self::new(Code::IdempotencyKeyReused, e.to_string())
            }
            StoreError::NotFound(m) => Self::not_found(m),
            StoreError::Injected(_) => {
                tracing::error!("{e}");
                Self::new(
                    Code::StorageFailed,
                    format!("{e}; the previous state keeps serving, retry later"),
                )
                .retry_after(5)
            }
            e if e.is_busy() => {
                tracing::warn!("{e}");
                Self::new(
                    Code::StorageFailed,
                    format!("the database is busy ({e}); nothing was changed, retry"),
                )
                .retry_after(1)
            }
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's error table is the contract: it lists every code with its status, and
    /// nothing else.
    #[test]
    fn the_readme_table_lists_every_code_with_its_status() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let table = readme
            .split("### Errors")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .expect("README has an Errors section");
        let mut listed = Vec::new();
        for row in table
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains('`'))
        {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let statuses: Vec<u16> = cells[1]
                .split('/')
                .map(|s| s.trim().parse().expect("a status"))
                .collect();
            let groups: Vec<Vec<&str>> = cells[2]
                .split(" / ")
                .map(|g| g.split(',').map(|c| c.trim().trim_matches('`')).collect())
                .collect();
            assert_eq!(statuses.len(), groups.len(), "{row}");
            for (status, group) in statuses.iter().zip(groups) {
                for code in group {
                    listed.push((code.to_string(), *status));
                }
            }
        }
        let known: Vec<(String, u16)> = Code::ALL
            .iter()
            .map(|c| (c.name().to_string(), c.status().as_u16()))
            .collect();
        listed.sort();
        let mut known_sorted = known.clone();
        known_sorted.sort();
        assert_eq!(listed, known_sorted);
    }
}
