//! `classify`: tickets from an argument, a JSONL or CSV file or stdin, classified offline (and
//! decided with `--rules`), one JSON line each.

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::rules::load_rules;
use super::{columns, limits, load_classifier, write_line};
use crate::cli::ClassifyArgs;
use crate::decision::{Routed, Versions};
use crate::engine::{Engine, EngineOptions};
use crate::registry::model_version;
use crate::ticket::Ticket;
use crate::train::dataset::{self, CsvColumns};

pub(super) fn classify(a: ClassifyArgs) -> Result<()> {
    let (tickets, expected) = match (&a.text, &a.file) {
        (Some(t), _) if t.trim().is_empty() => bail!("the ticket text is empty"),
        (Some(t), _) => (vec![Ticket::from_text(t)], vec![None]),
        (None, Some(f)) => read_tickets(f, &columns(&a.csv))?,
        (None, None) => bail!("give a ticket text or --file tickets.jsonl (see --help)"),
    };
    let opts = EngineOptions {
        top_k: a.top_k,
        limits: limits(&a.runtime),
    };
    let started = std::time::Instant::now();
    let engine = Engine::new(load_classifier(a.model, &a.runtime)?, opts);
    let loaded = started.elapsed();
    let rules = match a.rules.as_deref() {
        None => None,
        Some(spec) => {
            let rules = load_rules(spec, &engine.classifier().tree)?;
            let dir = &engine.classifier().dir;
            let model = model_version(dir).with_context(|| dir.display().to_string())?;
            // Offline there is no stored rules version: the rules' content hash names them.
            let rules_version = rules.version.clone();
            Some((rules, model, rules_version))
        }
    };
    let mut out = std::io::stdout().lock();
    for (chunk, expected) in tickets.chunks(1024).zip(expected.chunks(1024)) {
        match &rules {
            None => {
                for ((ticket, c), expected) in
                    chunk.iter().zip(engine.classify(chunk)?).zip(expected)
                {
                    write_result(&mut out, &c, ticket, expected, a.show_text)?;
                }
            }
            Some((rules, model, rules_version)) => {
                let now = chrono::Utc::now();
                let routed = engine.route(chunk, rules, now)?;
                for ((ticket, (c, d)), expected) in chunk.iter().zip(routed).zip(expected) {
                    let versions = Versions {
                        model: model.clone(),
                        rules: rules_version.clone(),
                        thresholds: 0,
                    };
                    let received_at = ticket.received_at.unwrap_or(now);
                    let routed = Routed::new(c, d, versions, received_at, false);
                    write_result(&mut out, &routed, ticket, expected, a.show_text)?;
                }
            }
        }
    }
    if a.timings {
        let work = started.elapsed() - loaded;
        eprintln!(
            "timings: model loaded in {:.3} s; {} tickets classified in {:.3} s ({:.1} tickets/s); \
             {} near ties re-checked",
            loaded.as_secs_f64(),
            tickets.len(),
            work.as_secs_f64(),
            tickets.len() as f64 / work.as_secs_f64().max(1e-9),
            engine.classifier().rechecked(),
        );
    }
    // The process ends next: freeing the tokenizer's vocabulary trie (a map per node, about a
    // million of them) would take a fifth of a second and gives nothing back.
    std::mem::forget(engine);
    Ok(())
}

/// Writes `ticket`'s result as one JSON line. A labelled input's intent is added as
/// `expected_intent`; with `show_text`, the text the encoder reads for it as `model_text`.
fn write_result(
    out: &mut impl std::io::Write,
    value: &impl serde::Serialize,
    ticket: &Ticket,
    expected: &Option<String>,
    show_text: bool,
) -> Result<()> {
    if !show_text && expected.is_none() {
        return write_line(out, value);
    }
    let mut json = serde_json::to_value(value)?;
    if let Some(object) = json.as_object_mut() {
        if let Some(intent) = expected {
            object.insert("expected_intent".into(), intent.clone().into());
        }
        if show_text {
            object.insert("model_text".into(), ticket.model_text().into());
        }
    }
    write_line(out, &json)
}

/// Tickets from a JSONL or CSV file, each with its labelled intent when the file is a data set
/// (`intent`; its `lang` is taken as the language hint).
fn read_tickets(path: &Path, cols: &CsvColumns) -> Result<(Vec<Ticket>, Vec<Option<String>>)> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        let examples = dataset::load(path, cols, false)?;
        return Ok(examples
            .into_iter()
            .map(|e| {
                let ticket = Ticket {
                    id: Some(e.id),
                    body: e.text,
                    language: e.lang,
                    ..Default::default()
                };
                (ticket, Some(e.intent).filter(|i| !i.is_empty()))
            })
            .unzip());
    }
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| path.display().to_string())?,
        ))
    };
    let (mut tickets, mut expected) = (Vec::new(), Vec::new());
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}: invalid ticket JSON", path.display(), i + 1);
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&line).with_context(at)?;
        let mut labelled = |key: &str| match fields.remove(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(anyhow::anyhow!("`{key}` must be a string, not {other}")).with_context(at)
            }
        };
        let (intent, lang) = (labelled("intent")?, labelled("lang")?);
        let mut t: Ticket =
            serde_json::from_value(serde_json::Value::Object(fields)).with_context(at)?;
        if t.language.is_none() {
            t.language = lang;
        }
        if t.body.trim().is_empty() && t.subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
            bail!(
                "{}:{}: missing `body` (or `text`/`subject`)",
                path.display(),
                i + 1
            );
        }
        tickets.push(t);
        expected.push(intent.filter(|i| !i.trim().is_empty()));
    }
    Ok((tickets, expected))
}
