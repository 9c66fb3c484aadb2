//! Any text given as a rules file compiles to a ruleset or to errors with lines, never a panic;
//! a compiled ruleset decides any ticket.
#![no_main]

use std::sync::OnceLock;

use intent_router::intent::{IntentTree, Resolution, Scored};
use intent_router::rules::compile::compile;
use intent_router::rules::decide::{decide, Facts};
use intent_router::ticket::Ticket;
use libfuzzer_sys::fuzz_target;

fn tree() -> &'static IntentTree {
    static T: OnceLock<IntentTree> = OnceLock::new();
    T.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../training-data/taxonomy.toml");
        IntentTree::load(std::path::Path::new(path)).expect("taxonomy")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match compile(&text, "fuzz.toml", tree()) {
        Ok(c) => {
            let ticket = Ticket::from_text("refund my money, order 5512");
            let res = Resolution {
                intent: "billing.refund".into(),
                chain: vec![],
                top_k: vec![Scored { intent: "billing.refund".into(), p: 0.7 }],
                margin: 0.4,
                out_of_scope: None,
                intents: vec![
                    Scored { intent: "billing.refund".into(), p: 0.7 },
                    Scored { intent: "orders.status".into(), p: 0.8 },
                ],
            };
            let d = decide(
                &c.ruleset,
                &Facts {
                    ticket: &ticket,
                    intent: &res,
                    language: "ru",
                    received_at: chrono::Utc::now(),
                    incident: None,
                },
            );
            assert_eq!(d.trace.len() <= c.ruleset.rules.len(), true);
        }
        Err(e) => assert!(!e.0.is_empty()),
    }
});
