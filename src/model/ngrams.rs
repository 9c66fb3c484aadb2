//! The n-gram view of a ticket's model text, read beside the encoder's embedding: TF-IDF weights
//! of word unigrams and bigrams and of character 2–5-grams inside words, each block
//! L2-normalised. It is what a TF-IDF linear model sees (strong on in-language wording, typos and
//! product names, where a small frozen encoder is weak), computed as scikit-learn's
//! `TfidfVectorizer(sublinear_tf=True)` with the `word` and `char_wb` analysers does. It owns the
//! vocabulary and the IDF; no model, no I/O besides its own file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FORMAT_VERSION: u32 = 1;
/// Character n-gram lengths (inside words padded with a space on each side).
const CHARS: std::ops::RangeInclusive<usize> = 2..=5;

/// How the n-gram view is fitted and weighed (kept in `classifier.json` under `ngrams`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NgramSettings {
    /// A word n-gram must occur in this many training texts to be kept.
    pub word_min_df: usize,
    /// A character n-gram must occur in this many training texts to be kept.
    pub char_min_df: usize,
    /// The embedding's scale beside the n-grams in training (a larger one regularises the
    /// embedding's weights less).
    pub embedding_weight: f32,
    /// Inverse regularisation strength of the joint logistic regression (as scikit-learn's C).
    pub c: f32,
}

impl NgramSettings {
    /// Checks the settings, naming the first one out of range.
    pub fn check(&self) -> Result<(), String> {
        let positive = |name: &str, v: f32| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name}: must be a positive number, not {v}"))
            }
        };
        positive("c", self.c)?;
        positive("embedding_weight", self.embedding_weight)
    }
}

impl Default for NgramSettings {
    fn default() -> Self {
        Self {
            word_min_df: 2,
            char_min_df: 2,
            embedding_weight: 2.0,
            c: 10.0,
        }
    }
}

/// Errors reading an n-gram view.
#[derive(Debug, thiserror::Error)]
pub enum NgramError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a valid n-gram view.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A sparse feature vector: indices ascending, with their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseRow {
    /// Feature indices, ascending.
    pub idx: Vec<u32>,
    /// Their values.
    pub val: Vec<f32>,
}

impl SparseRow {
    /// Dot product with a dense weight vector indexed by feature.
    pub fn dot(&self, weights: &[f32]) -> f32 {
        self.idx
            .iter()
            .zip(&self.val)
            .map(|(&i, &v)| weights[i as usize] * v)
            .sum()
    }
}

/// The fitted vocabulary and IDF weights.
#[derive(Debug, Clone, PartialEq)]
pub struct NgramView {
    index: HashMap<String, u32>,
    idf: Vec<f32>,
    /// Features `0..words` are word n-grams, the rest character n-grams.
    words: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    format_version: u32,
    /// Word n-grams first, then character n-grams; a term's position is its feature index.
    terms: Vec<String>,
    idf: Vec<f32>,
    words: usize,
}

/// Word unigrams and bigrams of lowercased text: runs of two or more letters, digits or `_`.
fn word_terms(lower: &str, mut each: impl FnMut(&str)) {
    let tokens: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| t.chars().nth(1).is_some())
        .collect();
    let mut pair = String::new();
    for (i, t) in tokens.iter().enumerate() {
        each(t);
        if let Some(next) = tokens.get(i + 1) {
            pair.clear();
            pair.push_str(t);
            pair.push(' ');
            pair.push_str(next);
            each(&pair);
        }
    }
}

/// Character n-grams inside each whitespace-separated word of lowercased text, the word padded
/// with a space on each side; a padded word shorter than n gives itself once.
fn char_terms(lower: &str, mut each: impl FnMut(&str)) {
    let mut padded: Vec<char> = Vec::new();
    let mut gram = String::new();
    for word in lower.split_whitespace() {
        padded.clear();
        padded.push(' ');
        padded.extend(word.chars());
        padded.push(' ');
        for n in CHARS {
            let mut offset = 0;
            loop {
                gram.clear();
                gram.extend(&padded[offset..(offset + n).min(padded.len())]);
                each(&gram);
                if offset + n >= padded.len() {
                    break;
                }
                offset += 1;
            }
            if n >= padded.len() {
                break;
            }
        }
    }
}

/// Term counts of one text, word terms under `w:` and character terms under `c:`.
fn counts(text: &str) -> (BTreeMap<String, u32>, BTreeMap<String, u32>) {
    let lower = text.to_lowercase();
    let (mut words, mut chars) = (BTreeMap::new(), BTreeMap::new());
    word_terms(&lower, |t| *words.entry(format!("w:{t}")).or_insert(0) += 1);
    char_terms(&lower, |t| *chars.entry(format!("c:{t}")).or_insert(0) += 1);
    (words, chars)
}

impl NgramView {
    /// Fits the vocabulary (terms in at least `min_df` texts, sorted) and smooth IDF weights
    /// (`ln((1 + n) / (1 + df)) + 1`) on training texts.
    pub fn fit(texts: &[String], settings: &NgramSettings) -> Self {
        let (mut word_df, mut char_df) = (BTreeMap::<String, usize>::new(), BTreeMap::new());
        for text in texts {
            let (w, c) = counts(text);
            for (df, terms) in [(&mut word_df, w), (&mut char_df, c)] {
                for term in terms.into_keys() {
                    *df.entry(term).or_insert(0) += 1;
                }
            }
        }
        let n = texts.len() as f64;
        let kept = |df: BTreeMap<String, usize>, min_df: usize| {
            df.into_iter()
                .filter(move |&(_, d)| d >= min_df.max(1))
                .map(move |(t, d)| (t, (((1.0 + n) / (1.0 + d as f64)).ln() + 1.0) as f32))
        };
        let mut terms: Vec<(String, f32)> = kept(word_df, settings.word_min_df).collect();
        let words = terms.len();
        terms.extend(kept(char_df, settings.char_min_df));
        let (terms, idf): (Vec<String>, Vec<f32>) = terms.into_iter().unzip();
        Self::from_parts(terms, idf, words)
    }

    fn from_parts(terms: Vec<String>, idf: Vec<f32>, words: usize) -> Self {
        let index = terms
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as u32))
            .collect();
        Self { index, idf, words }
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.idf.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    /// The text's features: `(1 + ln tf) · idf` of the known terms, the word and the character
    /// block each scaled to unit length.
    pub fn features(&self, text: &str) -> SparseRow {
        let (words, chars) = counts(text);
        let mut row = SparseRow::default();
        for block in [words, chars] {
            let start = row.idx.len();
            let mut known: Vec<(u32, f32)> = block
                .iter()
                .filter_map(|(t, &tf)| {
                    let i = *self.index.get(t)?;
                    Some((i, (1.0 + (tf as f32).ln()) * self.idf[i as usize]))
                })
                .collect();
            known.sort_unstable_by_key(|&(i, _)| i);
            let norm = known.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
            for (i, v) in known {
                row.idx.push(i);
                row.val.push(v / norm);
            }
            debug_assert!(row.idx[start..].windows(2).all(|w| w[0] < w[1]));
        }
        row
    }

    /// Reads the view from a classifier directory's file.
    pub fn load(path: &Path) -> Result<Self, NgramError> {
        let invalid = |message: String| NgramError::Invalid {
            path: path.into(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|source| NgramError::Io {
            path: path.into(),
            source,
        })?;
        let raw: RawView = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        if raw.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                raw.format_version
            )));
        }
        if raw.terms.len() != raw.idf.len() || raw.words > raw.terms.len() {
            return Err(invalid(format!(
                "{} terms, {} idf weights and {} word terms do not fit together",
                raw.terms.len(),
                raw.idf.len(),
                raw.words
            )));
        }
        if let Some(bad) = raw.idf.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(invalid(format!(
                "an idf weight is {bad}; each must be positive"
            )));
        }
        let view = Self::from_parts(raw.terms, raw.idf, raw.words);
        if view.index.len() != view.idf.len() {
            return Err(invalid("a term is listed twice".into()));
        }
        Ok(view)
    }

    /// The view as the JSON document [`NgramView::load`] reads.
    pub fn to_json(&self) -> Vec<u8> {
        let mut terms = vec![String::new(); self.idf.len()];
        for (t, &i) in &self.index {
            terms[i as usize] = t.clone();
        }
        let raw = RawView {
            format_version: FORMAT_VERSION,
            terms,
            idf: self.idf.clone(),
            words: self.words,
        };
        serde_json::to_vec(&raw).expect("an n-gram view serialises. This is a bug.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Analyser = fn(&str, &mut dyn FnMut(&str));

    fn grams(f: Analyser, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        f(text, &mut |t| out.push(t.to_string()));
        out
    }

    #[test]
    fn terms_are_scikit_learns() {
        // TfidfVectorizer(analyzer="word", ngram_range=(1, 2)).build_analyzer()("ab c de fg")
        assert_eq!(
            grams(|t, f| word_terms(t, f), "ab c de, fg"),
            ["ab", "ab de", "de", "de fg", "fg"]
        );
        // analyzer="char_wb", ngram_range=(2, 5) on "a bcd"
        assert_eq!(
            grams(|t, f| char_terms(t, f), "a bcd"),
            [
                " a", "a ", " a ", " b", "bc", "cd", "d ", " bc", "bcd", "cd ", " bcd", "bcd ",
                " bcd "
            ]
        );
        assert_eq!(
            grams(|t, f| word_terms(t, f), "не могу_войти 2fa"),
            ["не", "не могу_войти", "могу_войти", "могу_войти 2fa", "2fa"]
        );
    }

    #[test]
    fn features_weigh_and_normalise_each_block() {
        let texts: Vec<String> = ["refund my order", "where is my order", "refund refund"]
            .map(String::from)
            .to_vec();
        let view = NgramView::fit(
            &texts,
            &NgramSettings {
                word_min_df: 2,
                char_min_df: 2,
                ..Default::default()
            },
        );
        // Words in two texts: "my", "my order", "order", "refund".
        assert_eq!(view.words, 4);
        let row = view.features("Refund REFUND order, unseen");
        assert!(row.idx.windows(2).all(|w| w[0] < w[1]));
        let (w, c): (Vec<_>, Vec<_>) = row
            .idx
            .iter()
            .zip(&row.val)
            .partition(|(&i, _)| (i as usize) < view.words);
        for block in [&w, &c] {
            let norm: f32 = block.iter().map(|(_, &v)| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        }
        // refund: tf 2, df 2 of 3; order: tf 1, df 2 -> same idf, weights 1 + ln 2 and 1.
        let weight = |term: &str| {
            let i = view.index[term];
            row.val[row.idx.iter().position(|&j| j == i).unwrap()]
        };
        assert!((weight("w:refund") / weight("w:order") - (1.0 + 2f32.ln())).abs() < 1e-5);
        assert_eq!(view.features("zzz qqq"), SparseRow::default());
    }

    #[test]
    fn round_trips_through_its_file() {
        let texts: Vec<String> = ["a b c", "b c d"].map(String::from).to_vec();
        let view = NgramView::fit(&texts, &NgramSettings::default());
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(crate::model::files::NGRAMS);
        std::fs::write(&p, view.to_json()).unwrap();
        assert_eq!(NgramView::load(&p).unwrap(), view);
        std::fs::write(
            &p,
            r#"{"format_version":1,"terms":["w:a"],"idf":[],"words":0}"#,
        )
        .unwrap();
        let e = NgramView::load(&p).unwrap_err().to_string();
        assert!(
            e.ends_with("ngrams.json: 1 terms, 0 idf weights and 0 word terms do not fit together"),
            "{e}"
        );
    }
}
