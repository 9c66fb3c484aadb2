//! The `intent-router` binary: parses the CLI, sets up logging, runs a command and turns errors
//! into messages and exit codes.

use clap::Parser;

use intent_router::cli::Cli;
use intent_router::commands;

fn main() {
    let heap_kept = intent_router::model::heap::keep_freed_memory();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    tracing::debug!(heap_kept, "heap settings for the encoder's buffers");
    if let Err(e) = commands::run(cli.command) {
        eprintln!("error: {}", error_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each said once: our typed errors already carry their
/// source's text in their own message, which `{:#}` would print a second time.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        // A typed error that repeats its source's text, as ours do, under a context.
        #[derive(Debug, thiserror::Error)]
        #[error("rules.toml: {source}")]
        struct Read {
            #[source]
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Read { source: io }).context("loading rules");
        assert_eq!(error_line(&e), "loading rules: rules.toml: no such file");
        // A cause whose text is new is kept.
        let e = anyhow::anyhow!("disk full").context("saving rules");
        assert_eq!(error_line(&e), "saving rules: disk full");
    }
}
