//! Request bodies: any bytes decode into a ticket or batch, or into a 4xx error, never a panic.
#![no_main]

use intent_router::server::error::parse_json;
use intent_router::ticket::Ticket;
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Batch {
    tickets: Vec<Ticket>,
}

fuzz_target!(|data: &[u8]| {
    for result in [
        parse_json::<Ticket>(data).map(|t| vec![t]),
        parse_json::<Batch>(data).map(|b| b.tickets),
    ] {
        match result {
            Ok(tickets) => {
                for t in tickets {
                    let _ = t.clean_text();
                }
            }
            Err(e) => assert!(e.status.is_client_error(), "{}", e.status),
        }
    }
});
