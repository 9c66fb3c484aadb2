//! The linking report: how often people unlinked the tickets linked automatically, by the
//! link's probability and cosine, and the settings under which they would have had little to
//! unlink. Pure: the caller gives the outcomes.

use serde::Serialize;

/// A link that was made automatically, and whether a person undid it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkOutcome {
    /// Probability that the ticket was the incident's, when linked.
    pub probability: f64,
    /// Cosine to the incident's centroid, when linked.
    pub similarity: f32,
    /// Whether a person unlinked it.
    pub unlinked: bool,
}

/// The share of undone links a suggested setting aims at, at most.
const TARGET_UNLINKED: f64 = 0.1;

/// Unlinks needed before a setting is suggested.
const MIN_UNLINKS: usize = 5;

/// Links in a band of probability or cosine.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Band {
    /// From (inclusive).
    pub from: f64,
    /// To (exclusive, but for the last band).
    pub to: f64,
    /// Links made in it.
    pub links: usize,
    /// Of them, undone by a person.
    pub unlinked: usize,
}

/// A setting that would have avoided most unlinks, and what it costs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Suggested {
    /// The value.
    pub value: f64,
    /// Links it keeps (of those made).
    pub links_kept: usize,
    /// Unlinked ones it would have avoided.
    pub unlinks_avoided: usize,
    /// Share of the links it keeps that were unlinked.
    pub unlinked_share: f64,
}

/// The linking report.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LinkReport {
    /// Links made automatically in the period (kept or undone).
    pub links: usize,
    /// Of them, unlinked by a person.
    pub unlinked: usize,
    /// By the probability they were linked with.
    pub by_probability: Vec<Band>,
    /// By their cosine to the incident's centroid (links made without embeddings left out).
    pub by_similarity: Vec<Band>,
    /// `link_probability` now.
    pub link_probability: f64,
    /// `min_similarity` now.
    pub min_similarity: f64,
    /// The lowest `link_probability` under which at most a tenth of the links kept were
    /// unlinked; absent with too few unlinks to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_link_probability: Option<Suggested>,
    /// The lowest `min_similarity` under which at most a tenth of the links kept were unlinked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_min_similarity: Option<Suggested>,
    /// What the suggestions mean, or why there are none.
    pub note: String,
}

impl LinkReport {
    /// The report of `outcomes` under the current settings.
    pub fn of(outcomes: &[LinkOutcome], link_probability: f64, min_similarity: f32) -> Self {
        let unlinked = outcomes.iter().filter(|o| o.unlinked).count();
        let probability: Vec<(f64, bool)> = outcomes
            .iter()
            .map(|o| (o.probability, o.unlinked))
            .collect();
        let similarity: Vec<(f64, bool)> = outcomes
            .iter()
            .filter(|o| o.similarity != 0.0)
            .map(|o| (f64::from(o.similarity), o.unlinked))
            .collect();
        let enough = unlinked >= MIN_UNLINKS;
        let by_p = enough
            .then(|| suggest(&probability, link_probability))
            .flatten();
        let by_s = enough
            .then(|| suggest(&similarity, f64::from(min_similarity)))
            .flatten();
        let share = TARGET_UNLINKED * 100.0;
        let note = match (enough, by_p.is_some() || by_s.is_some()) {
            (false, _) => format!(
                "too few unlinks to suggest a setting ({unlinked} of the {MIN_UNLINKS} needed)"
            ),
            (true, true) => format!(
                "each suggestion is the lowest setting under which at most {share:.0}% of the links kept were unlinked; set it in [incidents] (it applies to new links)"
            ),
            (true, false) => format!(
                "no setting keeps the unlinks under {share:.0}% of the links kept: agents unlink close and likely tickets as often as the others (look at the incidents, not the thresholds)"
            ),
        };
        Self {
            links: outcomes.len(),
            unlinked,
            by_probability: bands(&probability, 0.5, 1.0, 5),
            by_similarity: bands(&similarity, 0.5, 1.0, 10),
            link_probability,
            min_similarity: f64::from(min_similarity),
            suggested_link_probability: by_p,
            suggested_min_similarity: by_s,
            note,
        }
    }
}

/// Counts in `n` equal bands from `lo` to `hi`, from `hi` in the last; values below `lo` in
/// the first, which then starts at the lowest of them (a tenth down).
fn bands(values: &[(f64, bool)], lo: f64, hi: f64, n: usize) -> Vec<Band> {
    let width = (hi - lo) / n as f64;
    let mut out: Vec<Band> = (0..n)
        .map(|k| Band {
            from: lo + width * k as f64,
            to: lo + width * (k + 1) as f64,
            links: 0,
            unlinked: 0,
        })
        .collect();
    for (v, unlinked) in values {
        let k = (((v - lo) / width).floor().max(0.0) as usize).min(n - 1);
        out[k].links += 1;
        out[k].unlinked += usize::from(*unlinked);
        if *v < out[0].from {
            out[0].from = (v * 10.0).floor() / 10.0;
        }
    }
    out
}

/// The lowest threshold from `current` up (one of the values seen) under which at most
/// [`TARGET_UNLINKED`] of the values kept were unlinked, keeping at least one.
fn suggest(values: &[(f64, bool)], current: f64) -> Option<Suggested> {
    let mut candidates: Vec<f64> = values
        .iter()
        .map(|(v, _)| *v)
        .filter(|v| *v >= current)
        .collect();
    candidates.push(current);
    candidates.sort_by(f64::total_cmp);
    candidates.dedup();
    let total_unlinked = values.iter().filter(|(_, u)| *u).count();
    candidates.into_iter().find_map(|t| {
        let kept: Vec<bool> = values
            .iter()
            .filter(|(v, _)| *v >= t)
            .map(|(_, u)| *u)
            .collect();
        let unlinked = kept.iter().filter(|u| **u).count();
        let share = unlinked as f64 / kept.len().max(1) as f64;
        (!kept.is_empty() && share <= TARGET_UNLINKED).then_some(Suggested {
            value: t,
            links_kept: kept.len(),
            unlinks_avoided: total_unlinked - unlinked,
            unlinked_share: share,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(probability: f64, similarity: f32, unlinked: bool) -> LinkOutcome {
        LinkOutcome {
            probability,
            similarity,
            unlinked,
        }
    }

    #[test]
    fn the_suggestion_is_the_lowest_setting_that_avoids_most_unlinks() {
        // Agents unlink the links made below 0.7 (cosine below 0.85), keep the others.
        let mut outcomes = Vec::new();
        for k in 0..40 {
            let p = 0.505 + 0.0125 * k as f64;
            let s = 0.75 + 0.005 * k as f32;
            outcomes.push(outcome(p, s, p < 0.7));
        }
        let r = LinkReport::of(&outcomes, 0.5, 0.0);
        assert_eq!((r.links, r.unlinked), (40, 16));
        let p = r.suggested_link_probability.expect("a suggestion");
        assert!(p.value > 0.6 && p.value <= 0.7, "{p:?}");
        assert!(p.unlinked_share <= 0.1 && p.links_kept >= 24, "{p:?}");
        let s = r.suggested_min_similarity.expect("a suggestion");
        assert!(s.value > 0.8 && s.value <= 0.85, "{s:?}");
        assert_eq!(r.by_probability.iter().map(|b| b.links).sum::<usize>(), 40);
        assert_eq!(r.by_probability[0].unlinked, 8);
        assert_eq!(r.by_probability[4].unlinked, 0);
        // Links made without embeddings have no cosine band.
        outcomes.push(outcome(0.9, 0.0, false));
        let r = LinkReport::of(&outcomes, 0.5, 0.0);
        assert_eq!(r.by_similarity.iter().map(|b| b.links).sum::<usize>(), 40);
        // Few unlinks: no suggestion, and the note says why.
        let few: Vec<LinkOutcome> = outcomes
            .iter()
            .map(|o| outcome(o.probability, o.similarity, false))
            .chain([outcome(0.5, 0.8, true)])
            .collect();
        let r = LinkReport::of(&few, 0.5, 0.0);
        assert!(r.suggested_link_probability.is_none());
        assert!(r.note.contains("1 of the 5"), "{}", r.note);
        // Unlinks spread evenly over every value: nothing keeps them under a tenth but the top.
        let even: Vec<LinkOutcome> = (0..20)
            .map(|k| outcome(0.5 + 0.02 * k as f64, 0.9, k % 2 == 0))
            .collect();
        let r = LinkReport::of(&even, 0.5, 0.0);
        assert_eq!(r.suggested_link_probability.map(|s| s.links_kept), Some(1));
        assert!(r.suggested_min_similarity.is_none());
        // A cosine below the bands widens the first one.
        let low = [outcome(0.9, 0.42, false)];
        assert_eq!(LinkReport::of(&low, 0.5, 0.0).by_similarity[0].from, 0.4);
        // Enough unlinks, all at the top: no setting helps, and the note says so.
        let top: Vec<LinkOutcome> = (0..6).map(|_| outcome(0.99, 0.99, true)).collect();
        let r = LinkReport::of(&top, 0.5, 0.0);
        assert!(r.note.starts_with("no setting keeps"), "{}", r.note);
    }
}
