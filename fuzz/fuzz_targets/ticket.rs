//! The ticket cleaner, language detection, transliteration, redaction and the further-request
//! detector's segmenter take any text.
#![no_main]

use intent_router::ticket::Ticket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (subject, body) = text.split_once('\n').unwrap_or(("", &text));
    let ticket = Ticket {
        subject: Some(subject.to_string()),
        body: body.to_string(),
        ..Default::default()
    };
    let clean = ticket.clean_text();
    let model_text = ticket.model_text();
    // Segments are pieces of the text, in order, none empty.
    let mut rest = model_text.as_str();
    for part in intent_router::model::also::segments(&model_text) {
        assert!(!part.is_empty());
        let at = rest.find(part).expect("a segment is a piece of the text");
        rest = &rest[at + part.len()..];
    }
    let lang = intent_router::lang::detect(&clean);
    if lang.transliterated {
        let _ = intent_router::lang::to_cyrillic(&clean);
    }
    let (redacted, _) = intent_router::privacy::redact(&text);
    assert!(redacted.len() <= text.len() * 10 + 16);
});
