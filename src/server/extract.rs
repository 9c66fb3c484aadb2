//! Extractors whose every rejection has the API's error shape: a JSON body (empty, oversized,
//! malformed, unknown fields, each with line and column), the raw body, a query string and path
//! parameters (axum's own would answer in plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::{ApiError, Code};

/// A query string; a wrong one is 400 `bad_request` saying which parameter and why.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))
    }
}

/// A query parameter checked against its documented range: 400 `bad_request` outside it.
pub fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ApiError> {
    if value >= min && value <= max {
        Ok(value)
    } else {
        Err(ApiError::bad_request(format!(
            "query string: {name}: {value} is out of range; give {min} to {max}"
        )))
    }
}

/// Path parameters; a wrong one is 400 `bad_request`.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e| ApiError::bad_request(format!("path: {}", e.body_text())))
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
                    Code::BodyTooLarge,
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
            Code::EmptyBody,
            "the request body is empty; send a JSON object",
        ));
    }
    let classify = |e: serde_json::Error| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::invalid(e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                Code::MalformedJson,
                format!("the body is not valid JSON: {e}"),
            ),
        }
    };
    // Every body is an object; serde would also take a struct's fields from an array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(classify)?;
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(classify)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::Ticket;

    #[test]
    fn json_errors_are_classified_with_positions() {
        let e = parse_json::<Ticket>(b"  ").unwrap_err();
        assert_eq!((e.status().as_u16(), e.code), (400, Code::EmptyBody));
        let e = parse_json::<Ticket>(b"{\"body\": ").unwrap_err();
        assert_eq!((e.status().as_u16(), e.code), (400, Code::MalformedJson));
        let e = parse_json::<Ticket>(b"{\"body\": \"x\", \"colour\": 1}").unwrap_err();
        assert_eq!((e.status().as_u16(), e.code), (422, Code::InvalidRequest));
        assert!(
            e.message
                .starts_with("unknown field `colour`, expected one of"),
            "{}",
            e.message
        );
        assert!(e.message.ends_with("at line 1 column 22"), "{}", e.message);
    }

    #[test]
    fn a_body_must_be_an_object() {
        // serde alone would fill a struct's fields from an array.
        let e = parse_json::<Ticket>(b" [\"1\", \"subject\"]").unwrap_err();
        assert_eq!((e.status().as_u16(), e.code), (422, Code::InvalidRequest));
        assert_eq!(e.message, "the body must be a JSON object");
        let e = parse_json::<Ticket>(b"[1,").unwrap_err();
        assert_eq!(e.code, Code::MalformedJson);
        assert!(parse_json::<Ticket>(b" {\"body\": \"x\"}").is_ok());
    }
}
