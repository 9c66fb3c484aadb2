//! The further-request detector: "the parcel came broken, and by the way I was charged twice"
//! holds two requests, and the head names one. The ticket's model text is cut into segments
//! (the subject, sentences, clauses opened by "also", "by the way", "кстати", "и ещё"…); a
//! multinomial logistic regression over the n-gram view alone (no encoder pass) names each
//! segment's intent, and a segment sure enough of an intent outside the main intent's line is a
//! further request. The head's `chain` and `top_k` keep their meaning; this only adds to the
//! `intents` list. Weights in `also.safetensors`; threshold and outputs in `classifier.json`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use candle_core::{Device, Result, Tensor};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::ngrams::{NgramView, SparseRow};
use crate::intent::{related, Scored, OUT_OF_SCOPE};

/// Further requests a ticket lists at most, besides its main intent.
pub const MAX_ALSO: usize = 2;

/// A segment shorter than this many words is read with the next one (a greeting, "Also:").
const MIN_WORDS: usize = 6;

/// `classifier.json`'s `also`: how the further-request detector decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlsoSettings {
    /// A segment's intent probability at or above which it is a further request.
    pub threshold: f32,
    /// The share of single-request tuning tickets the threshold was chosen to give a further
    /// request at most.
    pub false_rate: f32,
    /// The detector's outputs: the head's labels, then `out_of_scope` where it learned
    /// segments that are no request.
    pub labels: Vec<String>,
}

impl AlsoSettings {
    /// Checks the values: a threshold in (0, 1], a share in (0, 1), outputs named.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(format!(
                "threshold: must be in (0, 1], not {}",
                self.threshold
            ));
        }
        if !(self.false_rate > 0.0 && self.false_rate < 1.0) {
            return Err(format!(
                "false_rate: must be in (0, 1), not {}",
                self.false_rate
            ));
        }
        if self.labels.is_empty() {
            return Err("labels: the detector names no outputs".into());
        }
        Ok(())
    }
}

/// A detector file that does not fit the model it sits in.
#[derive(Debug, thiserror::Error)]
pub enum AlsoError {
    /// Unreadable weights.
    #[error(transparent)]
    Read(#[from] candle_core::Error),
    /// Another shape than the metadata and the view say.
    #[error("the further-request detector has weights {found}, the model needs {expected}")]
    Shape { found: String, expected: String },
}

/// One segment's most probable intent: an index into [`AlsoSettings::labels`] and its
/// probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guess {
    /// Output index.
    pub label: usize,
    /// Its probability.
    pub p: f32,
}

/// A loaded detector: weights `[outputs, features]` over the n-gram view, and biases.
#[derive(Debug, Clone)]
pub struct AlsoDetector {
    weights: Vec<f32>,
    bias: Vec<f32>,
    features: usize,
    /// Its settings.
    pub settings: AlsoSettings,
}

const WEIGHTS: &str = "also.weight";
const BIAS: &str = "also.bias";

impl AlsoDetector {
    /// Wraps trained weights (`[outputs × features]`, row-major) and biases.
    pub fn new(weights: Vec<f32>, bias: Vec<f32>, settings: AlsoSettings) -> Self {
        let features = weights.len() / bias.len().max(1);
        Self {
            weights,
            bias,
            features,
            settings,
        }
    }

    /// Loads `also.safetensors` and checks it has one row per output of `settings` and reads
    /// `features` n-gram features.
    pub fn load(
        path: &Path,
        settings: AlsoSettings,
        features: usize,
    ) -> std::result::Result<Self, AlsoError> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let get = |name: &str| {
            tensors.get(name).cloned().ok_or_else(|| {
                candle_core::Error::Msg(format!("{}: missing tensor `{name}`", path.display()))
            })
        };
        let (w, b) = (get(WEIGHTS)?, get(BIAS)?);
        let outputs = settings.labels.len();
        if w.dims() != [outputs, features] || b.dims() != [outputs] {
            return Err(AlsoError::Shape {
                found: format!("{:?} and biases {:?}", w.dims(), b.dims()),
                expected: format!("[{outputs}, {features}] and biases [{outputs}]"),
            });
        }
        Ok(Self {
            weights: w.flatten_all()?.to_vec1()?,
            bias: b.to_vec1()?,
            features,
            settings,
        })
    }

    /// Writes the detector as safetensors bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let outputs = self.bias.len();
        let map = HashMap::from([
            (
                WEIGHTS.to_string(),
                Tensor::from_slice(&self.weights, (outputs, self.features), &Device::Cpu)?,
            ),
            (
                BIAS.to_string(),
                Tensor::from_slice(&self.bias, outputs, &Device::Cpu)?,
            ),
        ]);
        super::head::safetensors_bytes(&map)
    }

    /// The output probabilities of one segment's n-gram features.
    pub fn probabilities(&self, row: &SparseRow) -> Vec<f32> {
        let v = self.features;
        let logits: Vec<f32> = self
            .bias
            .iter()
            .enumerate()
            .map(|(k, b)| b + row.dot(&self.weights[k * v..(k + 1) * v]))
            .collect();
        softmax(&logits)
    }

    /// Each segment's most probable output, for a text of two segments or more (none for one:
    /// the head has read it whole).
    pub fn guesses(&self, text: &str, view: &NgramView) -> Vec<Guess> {
        let parts = segments(text);
        if parts.len() < 2 {
            return Vec::new();
        }
        parts
            .iter()
            .map(|s| best(&self.probabilities(&view.features(s))))
            .collect()
    }

    /// The further requests among `guesses` beside the main intent `main`.
    pub fn pick(&self, guesses: &[Guess], main: &str) -> Vec<Scored> {
        pick_at(
            guesses,
            main,
            self.settings.threshold,
            &self.settings.labels,
        )
    }
}

/// The further requests at `threshold`: segments' intents at or above it, outside the main
/// intent's line (neither it, nor above or below it) and not `out_of_scope`, each once at its
/// highest probability, most probable first, at most [`MAX_ALSO`].
pub fn pick_at(guesses: &[Guess], main: &str, threshold: f32, labels: &[String]) -> Vec<Scored> {
    let mut found: Vec<Scored> = Vec::new();
    for g in guesses.iter().filter(|g| g.p >= threshold) {
        let label = labels[g.label].as_str();
        if label == OUT_OF_SCOPE || related(label, main) {
            continue;
        }
        match found.iter_mut().find(|s| s.intent == label) {
            Some(s) => s.p = s.p.max(g.p),
            None => found.push(Scored {
                intent: label.to_string(),
                p: g.p,
            }),
        }
    }
    // Stable: equal probabilities keep the text's order.
    found.sort_by(|a, b| b.p.total_cmp(&a.p));
    found.truncate(MAX_ALSO);
    found
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f32> = logits.iter().map(|&z| (z - m).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

fn best(p: &[f32]) -> Guess {
    let (label, &p) = p
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .expect("a detector has outputs. This is a bug.");
    Guess { label, p }
}

/// Cuts a model text into the parts that may each hold a request: at line breaks (cleaning
/// keeps the one after the subject), sentence ends and semicolons, and before a clause that opens a further request
/// ("…, also", "by the way", "P.S.", "кстати", "и ещё", "заодно"…). A part under six words is
/// read with the next one (the last with the one before).
pub fn segments(text: &str) -> Vec<&str> {
    static BREAKS: OnceLock<Regex> = OnceLock::new();
    let breaks = BREAKS.get_or_init(|| {
        Regex::new(concat!(
            r"(?i)\n|[.!?…]+[)»”]?\s+|;\s*",
            // A clause opener after a comma, a dash or a colon, or after "and" / "и" / "а".
            r"|(?:[,:—–-]\s*|\s(?:and|but|и|а|но)\s+)",
            r"(?:also|btw|by the way|separately|additionally|in addition|plus|one more thing",
            r"|another thing|another question|second question|unrelated|on another note",
            r"|while i have you|oh and|ещ[её]|также|кстати|заодно|отдельно|кроме того",
            r"|помимо этого|другой вопрос|второй вопрос|и второе)\b",
            r"|\b(?:p\.\s?s\.?|ps|п\.\s?с\.?)\s",
        ))
        .expect("static regex compiles. This is a bug.")
    });
    // Cut before a clause opener (the comma stays with the part before), after other breaks.
    let mut cuts = Vec::new();
    for m in breaks.find_iter(text) {
        let s = m.as_str();
        let opener = s.trim_start_matches(|c: char| {
            c.is_whitespace() || matches!(c, ',' | ':' | '—' | '–' | '-')
        });
        let at = if is_opener(opener) {
            m.end() - opener.len()
        } else {
            m.end()
        };
        cuts.push(at);
    }
    let mut parts: Vec<&str> = Vec::new();
    let mut start = 0;
    for at in cuts.into_iter().chain([text.len()]) {
        if at > start {
            let part = text[start..at].trim();
            if !part.is_empty() {
                parts.push(part);
            }
            start = at;
        }
    }
    merge_short(text, parts)
}

/// Whether a break's text (leading separators trimmed) opens a clause rather than ends a
/// sentence: it starts with a letter.
fn is_opener(s: &str) -> bool {
    s.chars().next().is_some_and(char::is_alphabetic)
}

/// Joins each part under [`MIN_WORDS`] words to the next (the last to the one before), as one
/// slice of `text`.
fn merge_short<'a>(text: &'a str, parts: Vec<&'a str>) -> Vec<&'a str> {
    let offset = |s: &str| s.as_ptr() as usize - text.as_ptr() as usize;
    let words = |s: &str| s.split_whitespace().count();
    let mut out: Vec<&'a str> = Vec::new();
    let mut pending: Option<usize> = None;
    for p in parts {
        let start = pending.take().unwrap_or_else(|| offset(p));
        let joined = &text[start..offset(p) + p.len()];
        if words(joined) < MIN_WORDS {
            pending = Some(start);
        } else {
            out.push(joined);
        }
    }
    if let Some(start) = pending {
        match out.pop() {
            Some(last) => out.push(&text[offset(last)..]),
            None => out.push(text[start..].trim()),
        }
    }
    out.into_iter().map(str::trim).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cut_sentences_lines_and_openers() {
        let t = "The parcel arrived broken this morning\nThe box was crushed and the lamp is \
                 cracked. Also, I was charged twice for it!";
        assert_eq!(
            segments(t),
            [
                "The parcel arrived broken this morning",
                "The box was crushed and the lamp is cracked.",
                "Also, I was charged twice for it!"
            ]
        );
        let t = "Посылка пришла разбитой, коробка совсем смята и порвана, кстати с карты \
                 списали деньги дважды";
        assert_eq!(
            segments(t),
            [
                "Посылка пришла разбитой, коробка совсем смята и порвана,",
                "кстати с карты списали деньги дважды"
            ]
        );
        // Short parts join the next one; a short last part the one before.
        assert_eq!(
            segments("Hi. The export fails with error 500. Thanks!"),
            ["Hi. The export fails with error 500. Thanks!"]
        );
        assert_eq!(segments("one two"), ["one two"]);
        // A short part in the middle joins the next one.
        assert_eq!(
            segments("My order has not arrived after two weeks. Also. Please send the March invoice again"),
            [
                "My order has not arrived after two weeks.",
                "Also. Please send the March invoice again"
            ]
        );
        // "also" inside a clause does not cut.
        assert_eq!(
            segments("I also tried Firefox and Edge today"),
            ["I also tried Firefox and Edge today"]
        );
        assert_eq!(
            segments("My card was declined twice today; p.s. please send the March invoice"),
            [
                "My card was declined twice today;",
                "p.s. please send the March invoice"
            ]
        );
    }

    fn labels() -> Vec<String> {
        [
            "billing.refund",
            "billing.invoice",
            "orders.status",
            "out_of_scope",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn pick_keeps_sure_requests_outside_the_main_line() {
        let g = |label, p| Guess { label, p };
        let guesses = [g(0, 0.95), g(1, 0.7), g(2, 0.4), g(3, 0.99), g(1, 0.8)];
        let picked = pick_at(&guesses, "billing.refund", 0.6, &labels());
        assert_eq!(
            picked,
            [Scored {
                intent: "billing.invoice".into(),
                p: 0.8
            }]
        );
        // The main intent's parent does not make its own leaf a further request.
        let picked = pick_at(&guesses, "billing", 0.6, &labels());
        assert!(picked.is_empty(), "{picked:?}");
        let picked = pick_at(&guesses, "orders.status", 0.3, &labels());
        let names: Vec<&str> = picked.iter().map(|s| s.intent.as_str()).collect();
        assert_eq!(names, ["billing.refund", "billing.invoice"]);
        // Three qualify: the two most probable are kept.
        let guesses = [g(0, 0.7), g(1, 0.9), g(2, 0.8)];
        let picked = pick_at(&guesses, "account.access", 0.5, &labels());
        let names: Vec<&str> = picked.iter().map(|s| s.intent.as_str()).collect();
        assert_eq!(names, ["billing.invoice", "orders.status"]);
    }

    #[test]
    fn detector_round_trips_and_checks_its_shape() {
        let settings = AlsoSettings {
            threshold: 0.6,
            false_rate: 0.02,
            labels: labels(),
        };
        assert!(settings.check().is_ok());
        let bad = AlsoSettings {
            threshold: 0.0,
            ..settings.clone()
        };
        assert_eq!(
            bad.check().unwrap_err(),
            "threshold: must be in (0, 1], not 0"
        );
        let weights: Vec<f32> = (0..4 * 3).map(|i| i as f32 / 10.0).collect();
        let d = AlsoDetector::new(weights, vec![0.1, 0.2, 0.3, 0.4], settings.clone());
        let row = SparseRow {
            idx: vec![0, 2],
            val: vec![0.6, 0.8],
        };
        let p = d.probabilities(&row);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[3] > p[0], "{p:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("also.safetensors");
        std::fs::write(&path, d.to_safetensors().unwrap()).unwrap();
        let back = AlsoDetector::load(&path, settings.clone(), 3).unwrap();
        assert_eq!(back.probabilities(&row), p);
        let e = AlsoDetector::load(&path, settings, 5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the further-request detector has weights [4, 3] and biases [4], the model needs \
             [4, 5] and biases [4]"
        );
    }
}
