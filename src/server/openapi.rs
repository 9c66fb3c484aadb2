//! The OpenAPI document served at `/openapi.json`, generated from the handlers' `utoipa::path`
//! annotations and the request and response types. What a derive cannot say is added here, in
//! one place: the error responses every operation shares (from [`Code`]'s table), the security
//! of public endpoints, and the cross-field rules of a few request bodies (a ticket needs text).

use std::sync::OnceLock;

use serde_json::{json, Value};
use utoipa::OpenApi;

use super::error::Code;

/// The document's skeleton; [`super::routes`] adds the operations from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "intent-router",
        version = "1",
        description = "Helpdesk ticket triage for Russian and English: intent classification and rule-based routing. One tenant per deployment. Every error has the shape {\"error\": {\"code\", \"message\", \"details\"}}; every response carries X-Request-Id.",
    ),
    servers((url = "http://127.0.0.1:8080")),
    security(("bearer" = [])),
    // Referenced by a hand-written schema (model metrics), so not found by the derive.
    components(schemas(crate::learn::TrainingMetrics, crate::learn::GateReport)),
)]
pub struct ApiDoc;

/// The document as served (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, api) = super::routes().split_for_parts();
        let mut doc = serde_json::to_value(api).expect("the document serialises");
        conventions(&mut doc);
        serde_json::to_string(&doc).expect("the document serialises")
    })
}

/// Operations that need no token.
fn is_public(path: &str) -> bool {
    !super::auth::needs_token(path)
}

/// Adds what every operation shares: the error shape and the statuses any request may get, the
/// bearer scheme, public endpoints without security, and the request bodies' cross-field rules.
fn conventions(doc: &mut Value) {
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.name()).collect();
    doc["components"]["schemas"]["Error"] = json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": codes,
                         "description": "Stable code; the README's error table gives each one's status and meaning."},
                "message": {"type": "string", "description": "What is wrong, for people."},
                "details": {"description": "Structured details where there are any: `errors` (every rules error with its line) and `problems` (file, line, path, message), `current_version`..."}
            }
        }}
    });
    doc["components"]["responses"]["Error"] = json!({
        "description": "An error.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait (429 and 503)."}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    doc["components"]["securitySchemes"]["connector"] = json!({
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": "A helpdesk's webhook is authenticated by its connector's own check, on the raw body: the signature header, timestamp and secret (or bearer secret) the connector's config names; not by our tokens."
    });
    doc["components"]["securitySchemes"]["bearer"] = json!({
        "type": "http",
        "scheme": "bearer",
        "description": "API token; scopes: route, feedback, metrics, admin (admin implies all). The console's session cookie (with X-CSRF-Token on changes) stands for an admin token."
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            operation_errors(path, method, op);
            optional_body_is_absent(op);
            if super::auth::is_helpdesk_webhook(path) {
                op["security"] = json!([{"connector": []}]);
            } else if is_public(path) {
                op["security"] = json!([]);
            }
        }
    }
    refine_request_bodies(doc);
}

/// Every 4xx/5xx an operation declares gets the error shape, and the statuses any request to
/// it may get are added: 500 and 503 everywhere; 401, 403 and 429 behind a token; 400 and 422
/// where parameters or a body are read; 413 where a body may be sent.
fn operation_errors(path: &str, method: &str, op: &mut Value) {
    let error_ref = json!({"$ref": "#/components/responses/Error"});
    let has_params = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|p| p.iter().any(|p| p["in"] == "path" || p["in"] == "query"));
    let takes_body = matches!(method, "post" | "put");
    let mut statuses = vec!["500", "503"];
    if !is_public(path) {
        statuses.extend(["401", "403", "429"]);
    }
    if has_params || takes_body {
        statuses.extend(["400", "422"]);
    }
    if takes_body {
        statuses.push("413");
    }
    let responses = op["responses"]
        .as_object_mut()
        .expect("every operation declares responses");
    for (status, response) in responses.iter_mut() {
        if status.as_str() >= "400" && response.get("content").is_none() {
            response["content"] =
                json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
        }
    }
    for status in statuses {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error_ref.clone());
    }
}

/// An optional request body may be left out, not sent as `null`: the derive's `oneOf` with
/// `null` becomes the body's own schema.
fn optional_body_is_absent(op: &mut Value) {
    if op["requestBody"]["required"] == true {
        return;
    }
    let Some(content) = op.pointer_mut("/requestBody/content/application~1json") else {
        return;
    };
    let schema = &mut content["schema"];
    if let Some(variants) = schema["oneOf"].as_array() {
        if let [only] = variants
            .iter()
            .filter(|v| v["type"] != "null")
            .collect::<Vec<_>>()[..]
        {
            *schema = only.clone();
        }
    }
}

/// Rules across fields that the types check by hand and a derive cannot state.
fn refine_request_bodies(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    let non_blank = |field: &str| json!({"required": [field], "properties": {field: {"type": "string", "pattern": "\\S"}}});
    // A ticket needs text: a non-blank body (or its alias `text`, not both) and/or subject.
    if let Some(ticket) = schemas.get_mut("Ticket").and_then(Value::as_object_mut) {
        ticket.insert(
            "anyOf".into(),
            json!([non_blank("body"), non_blank("text"), non_blank("subject")]),
        );
        ticket.insert("not".into(), json!({"required": ["body", "text"]}));
        let props = ticket["properties"].as_object_mut().expect("ticket fields");
        let body = props["body"].clone();
        props.insert("text".into(), body);
        props["text"]["description"] = json!("An alias of `body`.");
    }
    // Feedback names a decision and corrects at least one thing.
    if let Some(f) = schemas
        .get_mut("FeedbackRequest")
        .and_then(Value::as_object_mut)
    {
        let any_of = |fields: &[&str]| {
            Value::Array(fields.iter().map(|f| json!({"required": [f]})).collect())
        };
        f.insert(
            "allOf".into(),
            json!([
                {"anyOf": any_of(&["decision_id", "ticket_id"])},
                {"anyOf": any_of(&["correct_intent", "correct_team", "correct_assignee"])}
            ]),
        );
    }
    // A simulation takes tickets or `last`, not both.
    if let Some(s) = schemas
        .get_mut("SimulateRequest")
        .and_then(Value::as_object_mut)
    {
        s.insert(
            "oneOf".into(),
            json!([
                {"required": ["tickets"], "properties": {"tickets": {"type": "array"}, "last": {"type": "null"}}},
                {"required": ["last"], "properties": {"last": {"type": "integer"}, "tickets": {"type": "null"}}}
            ]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    /// The documented operations, as (method, path) pairs.
    fn operations() -> Vec<(String, String)> {
        let doc: Value = serde_json::from_str(document()).expect("the document is JSON");
        let empty = Map::new();
        doc["paths"]
            .as_object()
            .unwrap_or(&empty)
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap_or(&empty)
                    .keys()
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect()
    }

    #[test]
    fn every_operation_has_an_id_a_summary_and_the_shared_errors() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        for (method, path) in operations() {
            let op = &doc["paths"][&path][method.to_lowercase()];
            assert!(op["operationId"].is_string(), "{method} {path}: no id");
            assert!(op["summary"].is_string(), "{method} {path}: no summary");
            for status in ["500", "503"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path}: {status}"
                );
            }
            if super::super::auth::is_helpdesk_webhook(&path) {
                assert!(op["security"][0]["connector"].is_array(), "{method} {path}");
                assert!(op["responses"]["401"].is_object(), "{method} {path}");
            } else if path.starts_with("/v1/") {
                assert!(op["security"][0]["bearer"].is_array(), "{method} {path}");
                assert!(op["responses"]["401"].is_object(), "{method} {path}");
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        let text = document();
        let doc: Value = serde_json::from_str(text).unwrap();
        let mut rest = text;
        let mut seen = 0;
        while let Some(at) = rest.find("\"$ref\":\"#/components/") {
            let tail = &rest[at + "\"$ref\":\"#/components/".len()..];
            let end = tail.find('"').unwrap();
            let (kind, name) = tail[..end].split_once('/').unwrap();
            assert!(
                doc["components"][kind][name].is_object(),
                "{kind}/{name} is missing"
            );
            seen += 1;
            rest = &tail[end..];
        }
        assert!(seen > 50, "{seen}");
    }

    #[test]
    fn the_error_schema_lists_every_code() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
            ["code"]["enum"];
        assert_eq!(codes.as_array().unwrap().len(), Code::ALL.len());
    }

    #[test]
    fn a_ticket_needs_text_and_names_every_field() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        let ticket = &doc["components"]["schemas"]["Ticket"];
        assert_eq!(ticket["additionalProperties"], false);
        assert_eq!(ticket["anyOf"].as_array().unwrap().len(), 3);
        let full = crate::ticket::Ticket {
            id: Some("1".into()),
            subject: Some("s".into()),
            body: "b".into(),
            channel: Some("email".into()),
            language: Some("en".into()),
            customer: crate::ticket::Customer {
                tier: Some("vip".into()),
            },
            fields: [("k".to_string(), json!(1))].into(),
            received_at: Some(chrono::Utc::now()),
        };
        for key in serde_json::to_value(&full)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(ticket["properties"][key].is_object(), "{key} undocumented");
        }
    }
}
