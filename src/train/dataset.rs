//! Labelled data sets: JSONL (`{"text"}` or `{"subject", "body"}`, plus `intent`, optional `lang`,
//! `id` and `also`: further requests in the same ticket) or CSV with a header row (column names configurable). Every error names the file,
//! line and field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::intent::IntentTree;
use crate::ticket::Ticket;

/// Errors reading a data set.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DatasetError {
    /// The file cannot be read.
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// A line is not valid JSON or CSV.
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A required field is missing or empty.
    #[error("{path}:{line}: missing `{field}`")]
    Missing {
        path: PathBuf,
        line: usize,
        field: String,
    },
    /// A label is not in the taxonomy.
    #[error("{path}:{line}: {field}: unknown intent \"{label}\"; known: {known}")]
    UnknownLabel {
        path: PathBuf,
        line: usize,
        field: &'static str,
        label: String,
        known: String,
    },
    /// A label cannot name an intent.
    #[error("{path}:{line}: intent: invalid intent id \"{label}\": {reason}")]
    InvalidLabel {
        path: PathBuf,
        line: usize,
        label: String,
        reason: crate::intent::IdProblem,
    },
    /// No examples at all.
    #[error("{0}: the data set is empty")]
    Empty(PathBuf),
}

/// The id prefix of examples made from agents' corrections: `correction:<ticket id>`.
pub const CORRECTION_PREFIX: &str = "correction:";

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Stable id (given, or `<file stem>:<line>`).
    pub id: String,
    /// Model text (cleaned subject + body).
    pub text: String,
    /// Gold label.
    pub intent: String,
    /// Language from the data, when present.
    pub lang: Option<String>,
    /// Further requests in the same ticket, besides `intent` (multi-request sets).
    pub also: Vec<String>,
    /// 1-based line in the file.
    pub line: usize,
}

impl Example {
    /// The helpdesk ticket the example was made from (an agent's correction), if any.
    pub fn ticket_id(&self) -> Option<&str> {
        self.id.strip_prefix(CORRECTION_PREFIX)
    }
}

/// CSV column names.
#[derive(Debug, Clone)]
pub struct CsvColumns {
    /// Whole text column.
    pub text: String,
    /// Subject column.
    pub subject: String,
    /// Body column.
    pub body: String,
    /// Label column.
    pub intent: String,
    /// Language column.
    pub lang: String,
    /// Id column.
    pub id: String,
    /// Further requests column (intents separated by `,` or `;`).
    pub also: String,
}

impl Default for CsvColumns {
    fn default() -> Self {
        Self {
            text: "text".into(),
            subject: "subject".into(),
            body: "body".into(),
            intent: "intent".into(),
            lang: "lang".into(),
            id: "id".into(),
            also: "also".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawExample {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    intent: Option<String>,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    also: Option<Vec<String>>,
}

/// Loads a data set (JSONL or, by extension `.csv`, CSV). With `require_intent`, every example
/// must carry a label.
pub fn load(
    path: &Path,
    columns: &CsvColumns,
    require_intent: bool,
) -> Result<Vec<Example>, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(|e| DatasetError::Io {
        path: path.into(),
        message: e.to_string(),
    })?;
    let raws = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        parse_csv(&text, path, columns)?
    } else {
        parse_jsonl(&text, path)?
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(raws.len());
    for (line, raw) in raws {
        out.push(to_example(raw, line, path, &stem, require_intent)?);
    }
    if out.is_empty() {
        return Err(DatasetError::Empty(path.into()));
    }
    Ok(out)
}

fn parse_jsonl(text: &str, path: &Path) -> Result<Vec<(usize, RawExample)>, DatasetError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawExample = serde_json::from_str(line).map_err(|e| DatasetError::Syntax {
            path: path.into(),
            line: i + 1,
            message: format!("invalid JSON: {e}"),
        })?;
        out.push((i + 1, raw));
    }
    Ok(out)
}

fn parse_csv(
    text: &str,
    path: &Path,
    cols: &CsvColumns,
) -> Result<Vec<(usize, RawExample)>, DatasetError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let syntax = |line: usize, e: csv::Error| DatasetError::Syntax {
        path: path.into(),
        line,
        message: e.to_string(),
    };
    let headers = reader.headers().map_err(|e| syntax(1, e))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (text_c, subj_c, body_c, int_c, lang_c, id_c, also_c) = (
        col(&cols.text),
        col(&cols.subject),
        col(&cols.body),
        col(&cols.intent),
        col(&cols.lang),
        col(&cols.id),
        col(&cols.also),
    );
    if text_c.is_none() && body_c.is_none() {
        let field = format!(
            "{} or {} column (header has: {})",
            cols.text,
            cols.body,
            headers.iter().collect::<Vec<_>>().join(", ")
        );
        return Err(DatasetError::Missing {
            path: path.into(),
            line: 1,
            field,
        });
    }
    let mut out = Vec::new();
    for record in reader.records() {
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(0, |p| p.line() as usize);
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            syntax(line, e)
        })?;
        let get = |c: Option<usize>| {
            c.and_then(|i| record.get(i))
                .map(str::to_string)
                .filter(|s| !s.trim().is_empty())
        };
        let raw = RawExample {
            id: get(id_c).map(serde_json::Value::String),
            text: get(text_c),
            subject: get(subj_c),
            body: get(body_c),
            intent: get(int_c),
            lang: get(lang_c),
            also: get(also_c).map(|s| {
                s.split([',', ';'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
        };
        out.push((line, raw));
    }
    Ok(out)
}

fn to_example(
    raw: RawExample,
    line: usize,
    path: &Path,
    stem: &str,
    require_intent: bool,
) -> Result<Example, DatasetError> {
    let missing = |field: &str| DatasetError::Missing {
        path: path.into(),
        line,
        field: field.into(),
    };
    let ticket = Ticket {
        subject: raw.subject,
        body: raw.text.or(raw.body).unwrap_or_default(),
        ..Default::default()
    };
    let text = ticket.model_text();
    if text.is_empty() {
        return Err(missing("text (or subject/body)"));
    }
    let intent = raw
        .intent
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if require_intent && intent.is_none() {
        return Err(missing("intent"));
    }
    let id = match raw.id {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        Some(v) if !v.is_null() => v.to_string(),
        _ => format!("{stem}:{line}"),
    };
    let also: Vec<String> = raw
        .also
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.trim().to_string())
        .collect();
    if also.iter().any(String::is_empty) {
        return Err(DatasetError::Syntax {
            path: path.into(),
            line,
            message: "also: an empty intent in the list".into(),
        });
    }
    Ok(Example {
        id,
        text,
        intent: intent.unwrap_or_default(),
        lang: raw.lang,
        also,
        line,
    })
}

/// Checks every label against the taxonomy's labels (all errors reported as the first one).
pub fn check_labels(
    examples: &[Example],
    labels: &[String],
    path: &Path,
) -> Result<(), DatasetError> {
    for ex in examples {
        let fields = std::iter::once(("intent", &ex.intent));
        for (field, label) in fields.chain(ex.also.iter().map(|a| ("also", a))) {
            if !labels.contains(label) {
                let known = crate::intent::closest_known(labels, label);
                return Err(DatasetError::UnknownLabel {
                    path: path.into(),
                    line: ex.line,
                    field,
                    label: label.clone(),
                    known,
                });
            }
        }
    }
    Ok(())
}

/// Checks that every label can name an intent or is `out_of_scope` (before any time goes into
/// training: a label such as `HassTurnOn` would otherwise train a model that cannot be loaded).
pub fn check_label_ids(examples: &[Example], path: &Path) -> Result<(), DatasetError> {
    for ex in examples
        .iter()
        .filter(|e| e.intent != crate::intent::OUT_OF_SCOPE)
    {
        if let Err(reason) = crate::intent::check_id(&ex.intent) {
            return Err(DatasetError::InvalidLabel {
                path: path.into(),
                line: ex.line,
                label: ex.intent.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// Splits examples into those of the taxonomy's intents and those labelled `out_of_scope`
/// (the out-of-scope detector's), each in file order.
pub fn split_out_of_scope(examples: Vec<Example>) -> (Vec<Example>, Vec<Example>) {
    examples
        .into_iter()
        .partition(|e| e.intent != crate::intent::OUT_OF_SCOPE)
}

/// Labels of a taxonomy that a classifier predicts (its leaves).
pub fn taxonomy_labels(tree: &IntentTree) -> Vec<String> {
    tree.leaves()
}

/// Sorted distinct labels of examples.
pub fn labels_from_data(examples: &[Example]) -> Vec<String> {
    let mut labels: Vec<String> = examples.iter().map(|e| e.intent.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn jsonl_and_csv_load() {
        let (_d, p) = write("a.jsonl", "{\"text\":\"hi\",\"intent\":\"x.y\",\"lang\":\"en\"}\n\n{\"subject\":\"S\",\"body\":\"B\",\"intent\":\"x.z\",\"id\":7}\n");
        let ex = load(&p, &CsvColumns::default(), true).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            (ex[0].id.as_str(), ex[0].text.as_str(), ex[0].line),
            ("a:1", "hi", 1)
        );
        assert_eq!(
            (ex[1].id.as_str(), ex[1].text.as_str(), ex[1].line),
            ("7", "S\nB", 3)
        );
        let (_d, p) = write("b.csv", "Message,Label\n\"hello, there\",x.y\n");
        let cols = CsvColumns {
            text: "Message".into(),
            intent: "Label".into(),
            ..Default::default()
        };
        let ex = load(&p, &cols, true).unwrap();
        assert_eq!(
            (ex[0].text.as_str(), ex[0].intent.as_str(), ex[0].line),
            ("hello, there", "x.y", 2)
        );
    }

    #[test]
    fn further_requests_load_from_jsonl_and_csv_and_are_checked() {
        let (_d, p) = write(
            "m.jsonl",
            "{\"text\":\"a. b\",\"intent\":\"x.y\",\"also\":[\"x.z\", \" q \"]}\n",
        );
        let ex = load(&p, &CsvColumns::default(), true).unwrap();
        assert_eq!(ex[0].also, ["x.z", "q"]);
        let labels = ["x.y".to_string(), "x.z".to_string()];
        let e = check_labels(&ex, &labels, &p).unwrap_err().to_string();
        assert!(
            e.ends_with("m.jsonl:1: also: unknown intent \"q\"; known: x.y, x.z"),
            "{e}"
        );
        let (_d, p) = write(
            "m.csv",
            "text,intent,also\n\"a. b\",x.y,\"x.z; q\"\nc,x.y,\n",
        );
        let ex = load(&p, &CsvColumns::default(), true).unwrap();
        assert_eq!(
            (ex[0].also.clone(), ex[1].also.len()),
            (vec!["x.z".to_string(), "q".to_string()], 0)
        );
        let (_d, p) = write(
            "e.jsonl",
            "{\"text\":\"a\",\"intent\":\"x.y\",\"also\":[\"\"]}\n",
        );
        let e = load(&p, &CsvColumns::default(), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("e.jsonl:1: also: an empty intent in the list"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let (_d, p) = write(
            "bad.jsonl",
            "{\"text\":\"a\",\"intent\":\"x\"}\n{\"text\": nope}\n",
        );
        let e = load(&p, &CsvColumns::default(), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("bad.jsonl:2: invalid JSON: expected ident at line 1 column 11"),
            "{e}"
        );
        let (_d, p) = write("m.jsonl", "{\"intent\":\"x\"}\n");
        assert!(load(&p, &CsvColumns::default(), true)
            .unwrap_err()
            .to_string()
            .ends_with("m.jsonl:1: missing `text (or subject/body)`"));
        let (_d, p) = write("n.jsonl", "{\"text\":\"a\"}\n");
        assert!(load(&p, &CsvColumns::default(), true)
            .unwrap_err()
            .to_string()
            .ends_with("n.jsonl:1: missing `intent`"));
        let (_d, p) = write("e.jsonl", "\n");
        assert!(load(&p, &CsvColumns::default(), true)
            .unwrap_err()
            .to_string()
            .ends_with("e.jsonl: the data set is empty"));
        let (_d, p) = write("u.jsonl", "{\"text\":\"a\",\"intent\":\"billing.refnd\"}\n");
        let ex = load(&p, &CsvColumns::default(), true).unwrap();
        let labels = vec!["tech.bug".to_string(), "billing.refund".to_string()];
        let e = check_labels(&ex, &labels, &p).unwrap_err().to_string();
        assert!(e.ends_with("u.jsonl:1: intent: unknown intent \"billing.refnd\"; known: billing.refund, tech.bug"), "{e}");
        let (_d, p) = write(
            "h.jsonl",
            "{\"text\":\"a\",\"intent\":\"x.y\"}\n{\"text\":\"b\",\"intent\":\"HassTurnOn\"}\n",
        );
        let ex = load(&p, &CsvColumns::default(), true).unwrap();
        let e = check_label_ids(&ex, &p).unwrap_err().to_string();
        assert!(e.ends_with("h.jsonl:2: intent: invalid intent id \"HassTurnOn\": use lowercase letters, digits, '_' and '-', segments joined by '.'"), "{e}");
        let (_d, p) = write("r.jsonl", "{\"text\":\"a\",\"intent\":\"unknown\"}\n");
        let ex = load(&p, &CsvColumns::default(), true).unwrap();
        let e = check_label_ids(&ex, &p).unwrap_err().to_string();
        assert!(e.ends_with("r.jsonl:1: intent: invalid intent id \"unknown\": `unknown` and `out_of_scope` are reserved (the resolver answers them itself): rename the intent"), "{e}");
    }
}
