//! The ticket cleaner, language detection, transliteration and redaction take any text.
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
    let _ = ticket.model_text();
    let lang = intent_router::lang::detect(&clean);
    if lang.transliterated {
        let _ = intent_router::lang::to_cyrillic(&clean);
    }
    let (redacted, _) = intent_router::privacy::redact(&text);
    assert!(redacted.len() <= text.len() * 10 + 16);
});
