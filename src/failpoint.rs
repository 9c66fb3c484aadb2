//! Named failure points for crash-safety tests. Compiled in always, inert unless the
//! environment variable `INTENT_ROUTER_FAILPOINTS` names them: `name=pause` (log and wait
//! forever, so a test can kill the process there), `name=error` (fail as a storage write
//! would), `name=panic`; several are separated by commas.

use std::collections::HashMap;
use std::sync::OnceLock;

/// What a named point does when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Log and wait forever.
    Pause,
    /// Return an injected error.
    Error,
    /// Panic.
    Panic,
}

fn points() -> &'static HashMap<String, Action> {
    static P: OnceLock<HashMap<String, Action>> = OnceLock::new();
    P.get_or_init(|| {
        std::env::var("INTENT_ROUTER_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                let a = match v.trim() {
                    "pause" => Action::Pause,
                    "error" => Action::Error,
                    "panic" => Action::Panic,
                    _ => return None,
                };
                Some((k.trim().to_string(), a))
            })
            .collect()
    })
}

/// Passes a named point: `Err(name)` when it is set to fail; never returns when set to pause.
pub async fn hit(name: &str) -> Result<(), String> {
    match points().get(name) {
        None => Ok(()),
        Some(Action::Error) => Err(name.to_string()),
        Some(Action::Panic) => panic!("failpoint {name}"),
        Some(Action::Pause) => {
            eprintln!("failpoint {name} reached: pausing");
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}
