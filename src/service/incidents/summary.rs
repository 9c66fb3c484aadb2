//! What an incident's tickets say: representative tickets and top words.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::incident::detect::chain_of;
use crate::incident::words::{self, TopWords};
use crate::incident::{Embedding, TrackedIncident};
use crate::store::{IncidentText, SeriesRow, StoredIncident};

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

/// An incident's chart: its intent's tickets per step against what the intent's usual share
/// of the volume expects, the incident's own tickets, and when it was detected.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentSeries {
    /// The incident's intent (its tickets count, and those under it).
    pub intent: String,
    /// The language it is limited to (then the volume is that language's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The intent's share of the volume over the 14 days before its detection window
    /// (incident tickets left out): the baseline.
    pub usual_share: f64,
    /// When the detector raised the alarm that opened it.
    pub detected_at: DateTime<Utc>,
    /// Minutes per point.
    pub step_minutes: i64,
    /// One point per step, oldest first.
    pub points: Vec<SeriesPoint>,
}

/// One step of an incident's chart.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SeriesPoint {
    /// The step's start.
    pub at: DateTime<Utc>,
    /// The intent's tickets.
    pub tickets: u64,
    /// What the usual share expects of the step's volume.
    pub expected: f64,
    /// The incident's tickets.
    pub linked: u64,
}

impl IncidentSeries {
    /// The chart of `incident` in `steps` steps of `step_minutes` from `from`, from the
    /// decisions logged then.
    pub(super) fn of(
        incident: &StoredIncident,
        rows: &[SeriesRow],
        usual_share: f64,
        from: DateTime<Utc>,
        (steps, step_minutes): (usize, i64),
    ) -> Self {
        let t = &incident.tracked;
        let mut points: Vec<(u64, u64, u64)> = vec![(0, 0, 0); steps];
        for r in rows {
            let minutes = (r.at - from).num_minutes();
            let Ok(k) = usize::try_from(minutes.div_euclid(step_minutes)) else {
                continue;
            };
            if k >= steps || t.language.as_deref().is_some_and(|l| l != r.language) {
                continue;
            }
            let p = &mut points[k];
            // The volume the usual share applies to: incident tickets left out, as in the
            // share itself (and in the detector's tests).
            p.0 += u64::from(r.incident_id.is_none());
            if chain_of(&r.intent).contains(&t.intent) {
                p.1 += 1;
            }
            if r.incident_id.as_deref() == Some(t.id.as_str()) {
                p.2 += 1;
            }
        }
        Self {
            intent: t.intent.clone(),
            language: t.language.clone(),
            usual_share,
            detected_at: incident.detection.at,
            step_minutes,
            points: points
                .into_iter()
                .enumerate()
                .map(|(k, (volume, tickets, linked))| SeriesPoint {
                    at: from + chrono::Duration::minutes(k as i64 * step_minutes),
                    tickets,
                    expected: volume as f64 * usual_share,
                    linked,
                })
                .collect(),
        }
    }
}

/// The start of the step of `minutes` that `at` falls in.
pub(super) fn step_of(at: DateTime<Utc>, minutes: i64) -> DateTime<Utc> {
    let s = at.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(60 * minutes), 0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Detection, IncidentStatus};

    #[test]
    fn the_chart_counts_the_intent_its_volume_and_the_incident_per_hour() {
        let from = step_of(Utc::now(), 60);
        let at = |m: i64| from + chrono::Duration::minutes(m);
        let row = |m, intent: &str, language: &str, incident: Option<&str>| SeriesRow {
            at: at(m),
            intent: intent.into(),
            language: language.into(),
            incident_id: incident.map(str::to_string),
        };
        let rows = [
            row(5, "billing.refund", "en", None),
            row(10, "login.reset", "en", None),
            row(70, "billing.refund", "en", Some("inc")),
            row(75, "billing.refund", "ru", Some("inc")),
            row(80, "billing", "en", None),
            row(-5, "billing.refund", "en", None),
            row(200, "billing.refund", "en", None),
        ];
        let tracked = crate::incident::TrackedIncident {
            id: "inc".into(),
            intent: "billing".into(),
            language: Some("en".into()),
            centroid: Embedding::new(&[]),
            members: crate::incident::track::Spread {
                mean: 0.0,
                sd: 0.01,
            },
            usual: crate::incident::track::Spread {
                mean: 0.0,
                sd: 0.01,
            },
            usual_rate: 1.0,
            recent: Default::default(),
            opened_at: at(70),
            last_at: at(75),
            revision: 0,
        };
        let incident = StoredIncident {
            tracked,
            status: IncidentStatus::Open,
            detection: Detection {
                stream: crate::incident::Stream::Intent {
                    intent: "billing".into(),
                },
                at: at(70),
                window_minutes: 30,
                count: 5,
                volume: 9,
                expected: 1.0,
                p_value: 1e-6,
            },
            updated_at: at(75),
            merged_into: None,
            split_from: None,
            remodel_marks: 0,
            alerted_tickets: 0,
        };
        let s = IncidentSeries::of(&incident, &rows, 0.25, from, (3, 60));
        let got: Vec<(u64, f64, u64)> = s
            .points
            .iter()
            .map(|p| (p.tickets, p.expected, p.linked))
            .collect();
        // The Russian ticket is out (the incident is English only), as are those outside; the
        // incident's tickets count, but not in the volume.
        assert_eq!(got, [(1, 0.5, 0), (2, 0.25, 1), (0, 0.0, 0)]);
        assert_eq!((s.points[1].at, s.detected_at), (at(60), at(70)));
        assert_eq!(step_of(at(75), 60), at(60));
        // In steps of 30 minutes the same tickets fall in the first four.
        let fine = IncidentSeries::of(&incident, &rows, 0.25, from, (6, 30));
        let tickets: Vec<u64> = fine.points.iter().map(|p| p.tickets).collect();
        assert_eq!(tickets, [1, 0, 2, 0, 0, 0]);
    }
}
