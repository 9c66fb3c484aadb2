//! Training of the further-request detector (see [`crate::model::also`]): a multinomial
//! logistic regression over the n-gram view alone, on the training texts labelled with the
//! head's labels (and `out_of_scope`, where the data has such examples: segments that are no
//! request). Its threshold is chosen on data the head never scores for the report: a detector
//! fitted without one fold of the training data (by id hash, variants together) cuts that
//! fold's single-request tickets into segments, and the threshold gives at most the asked
//! share of them a further request; among those thresholds, a calibration set of written
//! tickets with two or more requests (`intent` + `also`), when given, picks the one that
//! names their further requests exactly most often.

use std::collections::BTreeSet;

use super::hybrid;
use super::scope::fold_of;
use crate::model::also::{self, AlsoDetector, AlsoSettings, Guess};
use crate::model::ngrams::{NgramView, SparseRow};

/// Share of single-request tuning tickets the threshold may give a further request, unless
/// told otherwise.
pub const DEFAULT_FALSE_RATE: f32 = 0.02;

/// The fold held out to choose the threshold on.
const TUNING_FOLD: usize = 0;

/// Thresholds tried: 0.30, 0.32, … 0.98.
fn grid() -> impl Iterator<Item = f32> {
    (15..50).map(|i| i as f32 / 50.0)
}

/// The examples one fit reads.
pub struct Examples<'a> {
    /// Model texts.
    pub texts: &'a [&'a str],
    /// Their n-gram features.
    pub rows: &'a [SparseRow],
    /// Their output index (into `labels`).
    pub ys: &'a [u32],
    /// Their ids (for the folds).
    pub ids: &'a [&'a str],
    /// Whether each is a single-request ticket (an intent of the taxonomy and no `also`): the
    /// tickets the threshold's false share is measured on.
    pub single: &'a [bool],
    /// The outputs: the head's labels, then `out_of_scope` where there are such examples.
    pub labels: &'a [String],
    /// The view's width.
    pub features: usize,
}

/// A written ticket with several requests.
pub struct Multi<'a> {
    /// Model text.
    pub text: &'a str,
    /// Its main request.
    pub intent: &'a str,
    /// Its further requests.
    pub also: &'a [String],
}

/// How a threshold does on the calibration set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// Tickets in the set.
    pub tickets: usize,
    /// Share of their further requests found.
    pub recall: f64,
    /// Share of tickets whose further requests are named exactly.
    pub exact: f64,
}

/// A trained detector and what tuning showed.
#[derive(Debug)]
pub struct Fitted {
    /// The detector, fitted on all examples.
    pub detector: AlsoDetector,
    /// Held-out single-request tickets the threshold was chosen on.
    pub tuning_tickets: usize,
    /// Share of them given a further request.
    pub tuning_false_rate: f64,
    /// The calibration set's figures at the chosen threshold, where one was given.
    pub calibration: Option<Calibration>,
}

/// Trains the detector and chooses its threshold (see the module's description); `None` when
/// no threshold keeps the held-out single-request tickets within `false_rate`. `progress`
/// hears each L-BFGS iteration of the two fits, numbered on.
pub fn fit(
    ex: &Examples,
    view: &NgramView,
    c: f32,
    false_rate: f32,
    multi: &[Multi],
    progress: &dyn Fn(usize),
) -> Option<Fitted> {
    let outputs = ex.labels.len();
    let (train, held): (Vec<usize>, Vec<usize>) =
        (0..ex.ys.len()).partition(|&i| fold_of(ex.ids[i]) != TUNING_FOLD);
    let settings = |threshold| AlsoSettings {
        threshold,
        false_rate,
        labels: ex.labels.to_vec(),
    };
    let fit_on = |idx: &[usize], offset: usize| {
        let rows: Vec<SparseRow> = idx.iter().map(|&i| ex.rows[i].clone()).collect();
        let ys: Vec<u32> = idx.iter().map(|&i| ex.ys[i]).collect();
        let (w, b) = hybrid::train_sparse(&rows, ex.features, &ys, outputs, c, &|i| {
            progress(offset + i)
        });
        AlsoDetector::new(w, b, settings(1.0))
    };
    // The held-out fold's single-request tickets, each with its segments' guesses.
    let tuning = fit_on(&train, 0);
    let single: Vec<(Vec<Guess>, &str)> = held
        .iter()
        .filter(|&&i| ex.single[i])
        .map(|&i| {
            let label = ex.labels[ex.ys[i] as usize].as_str();
            (tuning.guesses(ex.texts[i], view), label)
        })
        .collect();
    let all: Vec<usize> = (0..ex.ys.len()).collect();
    let mut detector = fit_on(&all, hybrid::MAX_ITERATIONS);
    let multi: Vec<(Vec<Guess>, &Multi)> = multi
        .iter()
        .map(|m| (detector.guesses(m.text, view), m))
        .collect();
    let false_at = |t: f32| {
        let hit = single
            .iter()
            .filter(|(g, main)| !also::pick_at(g, main, t, ex.labels).is_empty())
            .count();
        hit as f64 / single.len().max(1) as f64
    };
    let calibrate = |t: f32| (!multi.is_empty()).then(|| calibration(&multi, t, ex.labels));
    // Without held-out single-request tickets (a tiny data set) nothing bounds the false
    // share: only the grid's highest threshold is taken.
    let feasible: Vec<f32> = if single.is_empty() {
        grid().last().into_iter().collect()
    } else {
        grid()
            .filter(|&t| false_at(t) <= f64::from(false_rate))
            .collect()
    };
    // The calibration set's best (exact, then recall; the higher threshold on a tie), else
    // the lowest threshold within the share.
    let threshold = match (feasible.first(), multi.is_empty()) {
        (None, _) => return None,
        (Some(&t), true) => t,
        (Some(_), false) => feasible
            .iter()
            .copied()
            .max_by(|&a, &b| {
                let (ca, cb) = (
                    calibration(&multi, a, ex.labels),
                    calibration(&multi, b, ex.labels),
                );
                ca.exact
                    .total_cmp(&cb.exact)
                    .then(ca.recall.total_cmp(&cb.recall))
                    .then(a.total_cmp(&b))
            })
            .expect("feasible is not empty"),
    };
    detector.settings = settings(threshold);
    Some(Fitted {
        detector,
        tuning_tickets: single.len(),
        tuning_false_rate: false_at(threshold),
        calibration: calibrate(threshold),
    })
}

/// Recall and exact-set share of the calibration tickets at threshold `t`.
fn calibration(multi: &[(Vec<Guess>, &Multi)], t: f32, labels: &[String]) -> Calibration {
    let (mut found, mut wanted, mut exact) = (0usize, 0usize, 0usize);
    for (g, m) in multi {
        let picked: BTreeSet<String> = also::pick_at(g, m.intent, t, labels)
            .into_iter()
            .map(|s| s.intent)
            .collect();
        let gold: BTreeSet<String> = m.also.iter().cloned().collect();
        found += picked.intersection(&gold).count();
        wanted += gold.len();
        exact += usize::from(picked == gold);
    }
    Calibration {
        tickets: multi.len(),
        recall: found as f64 / wanted.max(1) as f64,
        exact: exact as f64 / multi.len().max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ngrams::NgramSettings;

    #[test]
    fn learns_segments_and_keeps_single_requests_single() {
        // Two intents with their own words; single-request tickets of two sentences each.
        let refund = [
            "please refund my money for this order",
            "I want a refund for the whole order",
            "refund the payment please, it was wrong",
            "money back for the refund I asked for",
        ];
        let status = [
            "where is my parcel now, it is late",
            "track my parcel delivery status for me",
            "the parcel status has not changed since Monday",
            "when will the parcel arrive at my door",
        ];
        let mut texts = Vec::new();
        let mut ys = Vec::new();
        for i in 0..120 {
            let (set, y) = if i % 2 == 0 {
                (&refund, 0)
            } else {
                (&status, 1)
            };
            texts.push(format!("{}. {}", set[i % 4], set[(i / 2) % 4]));
            ys.push(y);
        }
        let view = NgramView::fit(&texts, &NgramSettings::default());
        let rows: Vec<SparseRow> = texts.iter().map(|t| view.features(t)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids: Vec<String> = (0..texts.len()).map(|i| format!("ex-{i}")).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let labels = vec!["billing.refund".to_string(), "orders.status".to_string()];
        let single = vec![true; texts.len()];
        let ex = Examples {
            texts: &refs,
            rows: &rows,
            ys: &ys,
            ids: &id_refs,
            single: &single,
            labels: &labels,
            features: view.len(),
        };
        let gold = vec!["orders.status".to_string()];
        let multi = [Multi {
            text: "please refund my money for the order. Also where is my parcel now?",
            intent: "billing.refund",
            also: &gold,
        }];
        let fitted = fit(&ex, &view, 10.0, 0.02, &multi, &|_| {}).unwrap();
        // Each held-out ticket has two segments the detector reads.
        assert!(fitted.tuning_tickets > 10, "{}", fitted.tuning_tickets);
        assert!(fitted.tuning_false_rate <= 0.02);
        let c = fitted.calibration.unwrap();
        assert_eq!((c.tickets, c.recall, c.exact), (1, 1.0, 1.0));
        let d = &fitted.detector;
        assert_eq!(d.guesses(texts[0].as_str(), &view).len(), 2);
        let picked = d.pick(&d.guesses(multi[0].text, &view), "billing.refund");
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].intent, "orders.status");
        // The same data gives the same detector.
        let again = fit(&ex, &view, 10.0, 0.02, &multi, &|_| {}).unwrap();
        assert_eq!(again.detector.settings, d.settings);
        assert_eq!(
            again.detector.to_safetensors().unwrap(),
            d.to_safetensors().unwrap()
        );

        // Tuning tickets whose two sentences are two requests: no threshold keeps them within
        // the share, and there is no detector.
        let mixed: Vec<String> = (0..texts.len())
            .map(|i| format!("{}. {}", refund[i % 4], status[(i / 3) % 4]))
            .collect();
        let mixed_refs: Vec<&str> = mixed.iter().map(String::as_str).collect();
        let both = Examples {
            texts: &mixed_refs,
            ..ex
        };
        assert!(fit(&both, &view, 10.0, 0.02, &[], &|_| {}).is_none());
        // Tickets that name further requests are not single ones: with none left, nothing
        // bounds the share and the grid's top is taken.
        let none = vec![false; texts.len()];
        let no_single = Examples {
            single: &none,
            ..ex
        };
        let top = fit(&no_single, &view, 10.0, 0.02, &[], &|_| {}).unwrap();
        assert_eq!(
            (top.tuning_tickets, top.detector.settings.threshold),
            (0, 0.98)
        );
    }
}
