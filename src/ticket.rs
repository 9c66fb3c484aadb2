//! Tickets and their model text: subject + body with quoted replies, signatures, legal
//! disclaimers and HTML removed, whitespace collapsed. Pure string work; no tokens.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// An incoming helpdesk ticket. Unknown keys are errors (put helpdesk extras in `fields`).
///
/// It needs text: a non-blank `body` (or its alias `text`, not both) and/or `subject`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    /// Helpdesk id (1 to 256 characters, or a number); generated when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "id_string"
    )]
    #[schema(schema_with = id_schema)]
    pub id: Option<String>,
    /// Subject line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Body (plain text or HTML); `text` is accepted as an alias.
    #[serde(default, alias = "text")]
    pub body: String,
    /// Channel (email, chat, phone, web...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Language given by the helpdesk; wins over detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Customer facts.
    #[serde(default, deserialize_with = "object")]
    pub customer: Customer,
    /// Other helpdesk fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, serde_json::Value>,
    /// When the helpdesk received the ticket (RFC 3339); business-hours rules use it, and it
    /// defaults to the time the engine gets the ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Facts about the customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// Tier, e.g. `vip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// The schema of a ticket id: a string, a number or null.
fn id_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(256))
                .pattern(Some(r"\S")),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "Helpdesk id (1 to 256 characters, or a number); generated when absent.",
        ))
        .build()
        .into()
}

/// A value that must come as a JSON object: serde's derive would also fill a struct's fields
/// from an array, in order, which no client means.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectOnly(std::marker::PhantomData))
            .map(Obj)
    }
}

/// Deserializes a struct that must come as a JSON object.
pub fn object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Obj::deserialize(d).map(|o| o.0)
}

/// Deserializes a list of structs that must each come as a JSON object (tickets in a batch).
pub fn objects<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Vec::<Obj<T>>::deserialize(d).map(|v| v.into_iter().map(|o| o.0).collect())
}

/// Like [`objects`], for an optional list (`null` or absent: none).
pub fn optional_objects<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Option::<Vec<Obj<T>>>::deserialize(d).map(|v| v.map(|v| v.into_iter().map(|o| o.0).collect()))
}

/// Accepts a ticket id given as a string or a number (helpdesks use both).
fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "`id` must be a string or a number, not {other}"
        ))),
    }
}

impl Ticket {
    /// A ticket with only a body.
    pub fn from_text(text: &str) -> Self {
        Self {
            body: text.to_string(),
            ..Default::default()
        }
    }

    /// The text the model reads: the cleaned text, with transliterated Russian written back in
    /// Cyrillic (see [`crate::lang::text_for_model`]).
    pub fn model_text(&self) -> String {
        crate::lang::text_for_model(&self.clean_text()).into_owned()
    }

    /// The cleaned text: subject and body joined by a newline.
    pub fn clean_text(&self) -> String {
        let body = clean_body(&self.body);
        let subject = self
            .subject
            .as_deref()
            .map(|s| collapse(&strip_html(s)))
            .unwrap_or_default();
        let subject = strip_reply_prefix(&subject);
        match (subject.is_empty(), body.is_empty()) {
            (true, _) => body,
            (false, true) => subject.to_string(),
            (false, false) => format!("{subject}\n{body}"),
        }
    }
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("static regex compiles. This is a bug."))
}

/// Removes `Re:`/`Fwd:`/`Ответ:` prefixes from a subject.
fn strip_reply_prefix(s: &str) -> &str {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = re(
        &R,
        r"(?i)^\s*((re|fw|fwd|aw|ответ|отв|пересл)\s*(\[\d+\])?\s*:\s*)+",
    );
    match r.find(s) {
        Some(m) => &s[m.end()..],
        None => s,
    }
}

/// Converts HTML to text: drops script/style, turns block tags into newlines, removes tags and
/// decodes entities. Plain text passes through unchanged (except entities).
pub fn strip_html(s: &str) -> String {
    static SCRIPT: OnceLock<Regex> = OnceLock::new();
    static BLOCK: OnceLock<Regex> = OnceLock::new();
    static TAG: OnceLock<Regex> = OnceLock::new();
    static QUOTE: OnceLock<Regex> = OnceLock::new();
    if !s.contains('<') && !s.contains('&') {
        return s.to_string();
    }
    let s = re(
        &SCRIPT,
        r"(?is)<(script|style|head)\b.*?</(script|style|head)\s*>",
    )
    .replace_all(s, " ");
    // Quoted history in HTML mail.
    let s = re(&QUOTE, r"(?is)<blockquote\b.*?</blockquote\s*>").replace_all(&s, "\n");
    let s = re(
        &BLOCK,
        r"(?i)<\s*(br|/p|/div|/li|/tr|/h[1-6]|p|div|li|tr)\b[^>]*>",
    )
    .replace_all(&s, "\n");
    let s = re(&TAG, r"(?s)</?[a-zA-Z!][^>]*>").replace_all(&s, " ");
    html_escape::decode_html_entities(&s).into_owned()
}

/// Whether a line starts quoted history (everything from it on is dropped).
fn is_quote_header(line: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = re(
        &R,
        r"(?ix)^\s*(
            -{2,}\s*(original\s+message|forwarded\s+message|исходное\s+сообщение|пересылаемое\s+сообщение|переадресованное\s+сообщение)\s*-{2,}
          | on\s.{3,120}\swrote:\s*$
          | .{3,160}\s(написал|написала|написал\(а\)|пишет)\s*:\s*$
          | from:\s.+@.+
          | от:\s.+@.+
          | _{10,}\s*$
        )",
    );
    r.is_match(line)
}

/// Whether a line starts a signature or legal disclaimer (everything from it on is dropped).
fn is_signature_start(line: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = re(
        &R,
        r"(?ix)^\s*(
            --\s*$
          | (best|kind|warm)\s+regards\b.{0,30}$
          | regards,?\s*$
          | cheers,?\s*$
          | (many\s+)?thanks,\s*$
          | thank\s+you,\s*$
          | (заранее\s+)?спасибо,\s*$
          | thanks\s+(&|and)\s+regards,?\s*$
          | с\s+уважением\b.{0,40}$
          | с\s+наилучшими\s+пожеланиями.{0,20}$
          | sent\s+from\s+my\s.+$
          | отправлено\s+с\s.+$
          | (this|the\s+information\s+in\s+this)\s+(e-?mail|message)\s.{0,40}(confidential|intended)
          | (disclaimer|confidentiality\s+notice)\s*:
          | (данное|настоящее|это)\s+(сообщение|письмо|электронное\s+письмо)\s.{0,60}(конфиденциальн|предназначен)
        )",
    );
    r.is_match(line)
}

/// Removes an opening greeting ("Hi team,", "Здравствуйте, служба поддержки.") when more text
/// follows: it says nothing about the intent.
fn strip_greeting(text: &str) -> &str {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = re(
        &R,
        r"(?i)^\s*(hi|hello|hey|dear|good\s+(morning|afternoon|evening)|greetings|здравствуйте|здравствуй|добрый\s+(день|вечер)|доброе\s+утро|доброго\s+времени\s+суток|привет|приветствую|уважаемые|уважаемый)\b([,\s]+[\w-]+){0,2}[.!,:]?[ \t]*(\n|$)",
    );
    match r.find(text) {
        Some(m) if !text[m.end()..].trim().is_empty() => &text[m.end()..],
        _ => text,
    }
}

/// Cleans a body: HTML removed, an opening greeting line dropped, quoted replies (`> ` lines and everything after a quote header),
/// signatures and disclaimers dropped, whitespace collapsed and trimmed. If cleaning would remove
/// everything, the collapsed original is kept, so a ticket never becomes empty by accident.
pub fn clean_body(body: &str) -> String {
    let text = strip_html(body).replace("\r\n", "\n");
    let mut kept: Vec<&str> = Vec::new();
    for line in strip_greeting(&text).lines() {
        if is_quote_header(line) || (is_signature_start(line) && !kept.is_empty()) {
            break;
        }
        if line.trim_start().starts_with('>') {
            continue;
        }
        kept.push(line);
    }
    let cleaned = collapse(&kept.join("\n"));
    if cleaned.is_empty() {
        collapse(&text)
    } else {
        cleaned
    }
}

/// Collapses all whitespace runs to one space and trims.
pub fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_structs_must_be_objects() {
        // serde's derive alone would take `customer: []` as a customer with no facts.
        let e = serde_json::from_str::<Ticket>(r#"{"body": "x", "customer": []}"#).unwrap_err();
        assert!(e.to_string().contains("expected a JSON object"), "{e}");
        let t: Ticket =
            serde_json::from_str(r#"{"body": "x", "customer": {"tier": "vip"}}"#).unwrap();
        assert_eq!(t.customer.tier.as_deref(), Some("vip"));
        let e = serde_json::from_str::<Ticket>(r#"{"body": "x", "customer": {"tear": 1}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `tear`"), "{e}");
        #[derive(Debug, Deserialize)]
        struct Batch {
            #[serde(deserialize_with = "objects")]
            tickets: Vec<Ticket>,
        }
        let e =
            serde_json::from_str::<Batch>(r#"{"tickets": [{"body": "x"}, ["y"]]}"#).unwrap_err();
        assert!(e.to_string().contains("expected a JSON object"), "{e}");
        let b: Batch =
            serde_json::from_str(r#"{"tickets": [{"body": "x"}, {"text": "y"}]}"#).unwrap();
        assert_eq!(b.tickets[1].body, "y");
    }

    #[test]
    fn removes_quotes_signature_and_html() {
        let body = "<p>Hello,</p><p>I was charged twice&nbsp;for order 123.</p>\
                    <div>--</div><div>John Smith<br>ACME</div>";
        assert_eq!(clean_body(body), "I was charged twice for order 123.");
        let mail = "Where is my parcel?\n\nOn Mon, 3 Mar 2025 at 10:12, Support <s@x.com> wrote:\n> We shipped it.\n> Thanks";
        assert_eq!(clean_body(mail), "Where is my parcel?");
        let ru = "Верните деньги за заказ.\nС уважением,\nИван\n\nпн, 3 мар. 2025 г. в 10:12, Поддержка <s@x.ru>: написал(а):\n> текст";
        assert_eq!(clean_body(ru), "Верните деньги за заказ.");
        let fwd = "See below\n-----Original Message-----\nFrom: a@b.c\nold text";
        assert_eq!(clean_body(fwd), "See below");
        let disclaimer = "Need an invoice for May.\nThis email and any attachments are confidential and intended solely for the addressee.";
        assert_eq!(clean_body(disclaimer), "Need an invoice for May.");
    }

    #[test]
    fn drops_greeting_lines_and_sign_offs() {
        assert_eq!(
            clean_body("Hello team,\n\nMy card was charged twice.\n\nThanks,\nTom"),
            "My card was charged twice."
        );
        assert_eq!(
            clean_body("Здравствуйте, служба поддержки.\n\nНе приходит код.\n\nСпасибо,\nОля"),
            "Не приходит код."
        );
        assert_eq!(
            clean_body("Hi, my login is blocked"),
            "Hi, my login is blocked"
        );
        assert_eq!(clean_body("Привет!"), "Привет!");
        assert_eq!(clean_body("Thanks!"), "Thanks!");
    }

    #[test]
    fn never_empties_a_ticket_and_keeps_inline_gt() {
        assert_eq!(clean_body("> only quoted"), "> only quoted");
        assert_eq!(
            clean_body("price > 100$ is too much"),
            "price > 100$ is too much"
        );
        assert_eq!(clean_body("  a \t\n b  "), "a b");
    }

    #[test]
    fn ids_may_be_numbers() {
        let t: Ticket = serde_json::from_str(r#"{"id": 42, "body": "x"}"#).unwrap();
        assert_eq!(t.id.as_deref(), Some("42"));
        let e = serde_json::from_str::<Ticket>(r#"{"id": [1], "body": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`id` must be a string or a number"), "{e}");
    }

    #[test]
    fn model_text_joins_subject_without_reply_prefix() {
        let t = Ticket {
            subject: Some("RE: Fwd: Refund".into()),
            body: "please".into(),
            ..Default::default()
        };
        assert_eq!(t.model_text(), "Refund\nplease");
        assert_eq!(Ticket::from_text("x").model_text(), "x");
    }
}
