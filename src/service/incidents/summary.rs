//! What an incident's tickets say: representative tickets and top words.

use serde::Serialize;

use crate::incident::words::{self, TopWords};
use crate::incident::{Embedding, TrackedIncident};
use crate::store::IncidentText;

/// Texts an incident's summary reads, of its own tickets (the first linked) and of the
/// intent's usual ones (the newest).
pub(super) const SUMMARY_TEXTS: i64 = 500;

/// What an incident's tickets say, read from their kept texts (so redacted as the config
/// says, and gone with retention and erasure).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentSummary {
    /// Its tickets whose text is still kept.
    pub texts: usize,
    /// The tickets closest to its centroid (without embeddings: the first linked), at most 3.
    pub representative: Vec<Representative>,
    /// The words its tickets use far more often than the intent's usual ones.
    pub top_words: TopWords,
}

/// A ticket that stands for an incident.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Representative {
    /// The decision.
    pub decision_id: String,
    /// The helpdesk's ticket id.
    pub ticket_id: String,
    /// Cosine to the incident's centroid, when embeddings are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    /// Subject and the start of the body (as kept).
    pub excerpt: String,
}

impl IncidentSummary {
    /// The summary of an incident's kept texts against the intent's usual ones.
    pub(super) fn of(
        incident: &TrackedIncident,
        texts: &[IncidentText],
        usual: &[IncidentText],
    ) -> Self {
        let whole = |t: &IncidentText| match &t.subject {
            Some(s) => format!("{s}\n{}", t.body),
            None => t.body.clone(),
        };
        let (mine, theirs): (Vec<String>, Vec<String>) = (
            texts.iter().map(whole).collect(),
            usual.iter().map(whole).collect(),
        );
        let top_words = words::top_words(&view(texts, &mine), &view(usual, &theirs));
        let mut ranked: Vec<(Option<f32>, usize)> = texts
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let e = t.vector.as_deref().and_then(Embedding::from_bytes);
                let sim = e
                    .filter(|_| !incident.centroid.is_empty())
                    .map(|e| incident.centroid.cosine(&e));
                (sim, k)
            })
            .collect();
        // The closest first; those without a cosine after, in link order.
        ranked.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => y.total_cmp(&x).then(a.1.cmp(&b.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        let representative = ranked
            .into_iter()
            .take(3)
            .map(|(similarity, k)| Representative {
                decision_id: texts[k].decision_id.clone(),
                ticket_id: texts[k].ticket_id.clone(),
                similarity,
                excerpt: excerpt(&mine[k]),
            })
            .collect();
        Self {
            texts: texts.len(),
            representative,
            top_words,
        }
    }
}

/// The first 240 characters of a text, on one line.
fn excerpt(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(240) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// The texts as the word count reads them.
fn view<'a>(texts: &'a [IncidentText], whole: &'a [String]) -> Vec<words::Text<'a>> {
    texts
        .iter()
        .zip(whole)
        .map(|(t, text)| words::Text {
            language: &t.language,
            text,
        })
        .collect()
}
