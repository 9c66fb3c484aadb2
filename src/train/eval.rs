//! Evaluation report: accuracy, macro-F1, per-intent precision/recall/F1, per-language figures,
//! domain accuracy, confusion matrix and calibration (ECE over 10 bins). Pure: takes gold
//! labels and probabilities, returns a serialisable report and its text table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::intent::IntentTree;

/// Precision, recall, F1 and support of one intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntentScore {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Gold examples.
    pub support: usize,
}

/// Accuracy, macro-F1 and size of one language slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LanguageScore {
    /// Accuracy.
    pub accuracy: f64,
    /// Macro-F1 over the intents present in the slice.
    pub macro_f1: f64,
    /// Examples.
    pub n: usize,
}

/// Confusion matrix: rows gold, columns predicted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ConfusionMatrix)]
pub struct Confusion {
    /// Labels (row and column order).
    pub labels: Vec<String>,
    /// Counts.
    pub matrix: Vec<Vec<usize>>,
}

/// One reliability bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CalibrationBin)]
pub struct Bin {
    /// Lower confidence bound.
    pub lo: f64,
    /// Upper confidence bound.
    pub hi: f64,
    /// Examples in the bin.
    pub n: usize,
    /// Their accuracy.
    pub accuracy: f64,
    /// Their mean confidence.
    pub confidence: f64,
}

/// Calibration bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Calibration {
    /// 10 equal-width bins over top-1 confidence.
    pub bins: Vec<Bin>,
}

/// The evaluation report (`eval --json` prints this document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = EvalReport)]
pub struct Report {
    /// Examples.
    pub n: usize,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Macro-F1 over labels with support.
    pub macro_f1: f64,
    /// Accuracy of the predicted domain (root of the label).
    pub domain_accuracy: f64,
    /// Expected calibration error of top-1 confidence.
    pub ece: f64,
    /// Share of examples the resolver leaves `unknown`.
    pub unknown_rate: f64,
    /// Per language.
    pub per_language: BTreeMap<String, LanguageScore>,
    /// Per intent.
    pub per_intent: BTreeMap<String, IntentScore>,
    /// Confusion matrix.
    pub confusion: Confusion,
    /// Reliability bins.
    pub calibration: Calibration,
    /// Gold intents the model does not know, with how many examples carry each (all of them
    /// errors; they count in `per_intent` and `macro_f1` with recall 0).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unseen_intents: BTreeMap<String, usize>,
    /// How the out-of-scope detector did (where the model has one or the data has examples
    /// labelled `out_of_scope`, which the figures above leave out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_scope: Option<ScopeReport>,
    /// How the further-request detector did (where the model has one or the data names
    /// further requests, `also`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also: Option<AlsoReport>,
    /// How far the intent chains go under the model's thresholds, and how often the resolved
    /// node holds the true intent (examples of known intents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains: Option<super::thresholds::ChainFigures>,
}

/// The further-request detector's figures: on tickets that name further requests, the share
/// of their requests beyond one that are named (main and further requests counted as a set)
/// and the share whose requests are named exactly; on single-request tickets, the share
/// given a further request (wrongly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlsoReport {
    /// The detector's threshold (absent: the model has no detector and finds none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// All examples in scope.
    pub all: AlsoScore,
    /// Per language.
    pub per_language: BTreeMap<String, AlsoScore>,
}

/// Further-request figures over one slice of examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlsoScore {
    /// Tickets naming further requests.
    pub multi: usize,
    /// Share of their requests beyond one that the resolved intent and further requests name.
    pub recall: f64,
    /// Share of them whose set of requests (main and further) is exactly the gold set.
    pub exact: f64,
    /// Single-request tickets.
    pub single: usize,
    /// Share of them given a further request.
    pub false_rate: f64,
}

/// One in-scope example as the further-request detector saw it.
#[derive(Debug, Clone)]
pub struct AlsoItem<'a> {
    /// Its gold intent.
    pub gold: &'a str,
    /// Its gold further requests.
    pub gold_also: &'a [String],
    /// The resolved intent.
    pub intent: &'a str,
    /// The further requests found.
    pub found: Vec<&'a str>,
    /// Its language.
    pub lang: &'a str,
}

fn also_score(items: &[&AlsoItem]) -> AlsoScore {
    let share = |hit: usize, of: usize| if of == 0 { 0.0 } else { hit as f64 / of as f64 };
    let (multi, single): (Vec<&&AlsoItem>, Vec<&&AlsoItem>) =
        items.iter().partition(|i| !i.gold_also.is_empty());
    let set = |main: &'_ str, more: Vec<&'_ str>| {
        let mut s: Vec<String> = std::iter::once(main)
            .chain(more)
            .map(String::from)
            .collect();
        s.sort();
        s.dedup();
        s
    };
    // Requests are counted as sets: a ticket whose head names the further request and whose
    // detector names the main one has both found.
    let (mut wanted, mut found, mut exact) = (0, 0, 0);
    for i in &multi {
        let gold = set(i.gold, i.gold_also.iter().map(String::as_str).collect());
        let named = set(i.intent, i.found.clone());
        let hit = named.iter().filter(|n| gold.contains(n)).count();
        wanted += gold.len() - 1;
        found += hit.saturating_sub(1);
        exact += usize::from(named == gold);
    }
    let wrong = single.iter().filter(|i| !i.found.is_empty()).count();
    AlsoScore {
        multi: multi.len(),
        recall: share(found, wanted),
        exact: share(exact, multi.len()),
        single: single.len(),
        false_rate: share(wrong, single.len()),
    }
}

/// The further-request figures of `items` under a detector with `threshold` (`None`: no
/// detector).
pub fn also_report(threshold: Option<f32>, items: &[AlsoItem]) -> AlsoReport {
    let (all, per_language) = all_and_per_language(items, |i| i.lang, also_score);
    AlsoReport {
        threshold,
        all,
        per_language,
    }
}

/// A score over all items and over each language's.
fn all_and_per_language<'a, I, S>(
    items: &'a [I],
    lang: impl Fn(&I) -> &str,
    score: impl Fn(&[&'a I]) -> S,
) -> (S, BTreeMap<String, S>) {
    let mut langs: BTreeMap<String, Vec<&I>> = BTreeMap::new();
    for i in items {
        langs.entry(lang(i).to_string()).or_default().push(i);
    }
    let all = score(&items.iter().collect::<Vec<_>>());
    (
        all,
        langs.into_iter().map(|(l, i)| (l, score(&i))).collect(),
    )
}

/// The out-of-scope detector's figures: recall on the examples labelled `out_of_scope`, and
/// the share of the other (in-scope) examples it rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScopeReport {
    /// The detector's threshold (absent: the model has no detector and rejects nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// All examples.
    pub all: ScopeScore,
    /// Per language.
    pub per_language: BTreeMap<String, ScopeScore>,
}

/// Out-of-scope recall and in-scope rejection over one slice of examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScopeScore {
    /// Examples labelled `out_of_scope`.
    pub out_of_scope: usize,
    /// Share of them the detector rejected.
    pub recall: f64,
    /// Examples of the taxonomy's intents.
    pub in_scope: usize,
    /// Share of them the detector rejected (wrongly).
    pub rejected: f64,
}

/// One example as the out-of-scope detector saw it.
#[derive(Debug, Clone, Copy)]
pub struct ScopeItem<'a> {
    /// Whether its gold label is `out_of_scope`.
    pub gold_out: bool,
    /// Whether the detector rejected it.
    pub rejected: bool,
    /// Its language.
    pub lang: &'a str,
}

fn scope_score(items: &[&ScopeItem]) -> ScopeScore {
    let share = |gold_out: bool| {
        let of: Vec<_> = items.iter().filter(|i| i.gold_out == gold_out).collect();
        let hit = of.iter().filter(|i| i.rejected).count();
        (
            of.len(),
            if of.is_empty() {
                0.0
            } else {
                hit as f64 / of.len() as f64
            },
        )
    };
    let (out_of_scope, recall) = share(true);
    let (in_scope, rejected) = share(false);
    ScopeScore {
        out_of_scope,
        recall,
        in_scope,
        rejected,
    }
}

/// The out-of-scope figures of `items` under a detector with `threshold` (`None`: no detector).
pub fn scope_report(threshold: Option<f32>, items: &[ScopeItem]) -> ScopeReport {
    let (all, per_language) = all_and_per_language(items, |i| i.lang, scope_score);
    ScopeReport {
        threshold,
        all,
        per_language,
    }
}

/// One scored example.
#[derive(Debug, Clone)]
pub struct Scored<'a> {
    /// Gold label index.
    pub gold: usize,
    /// Probabilities over labels.
    pub probs: &'a [f32],
    /// Language of the example.
    pub lang: &'a str,
    /// Whether the resolver left it `unknown`.
    pub unknown: bool,
}

fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn per_intent(labels: &[String], pairs: &[(usize, usize)]) -> BTreeMap<String, IntentScore> {
    let mut out = BTreeMap::new();
    for (k, label) in labels.iter().enumerate() {
        let tp = pairs.iter().filter(|&&(g, p)| g == k && p == k).count() as f64;
        let pred = pairs.iter().filter(|&&(_, p)| p == k).count() as f64;
        let support = pairs.iter().filter(|&&(g, _)| g == k).count();
        let precision = if pred > 0.0 { tp / pred } else { 0.0 };
        let recall = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        out.insert(
            label.clone(),
            IntentScore {
                precision,
                recall,
                f1,
                support,
            },
        );
    }
    out
}

fn macro_f1(scores: &BTreeMap<String, IntentScore>) -> f64 {
    let with_support: Vec<f64> = scores
        .values()
        .filter(|s| s.support > 0)
        .map(|s| s.f1)
        .collect();
    if with_support.is_empty() {
        0.0
    } else {
        with_support.iter().sum::<f64>() / with_support.len() as f64
    }
}

fn accuracy(pairs: &[(usize, usize)]) -> f64 {
    if pairs.is_empty() {
        return 0.0;
    }
    pairs.iter().filter(|(g, p)| g == p).count() as f64 / pairs.len() as f64
}

fn calibration(items: &[Scored]) -> (Calibration, f64) {
    let mut bins: Vec<(usize, f64, f64)> = vec![(0, 0.0, 0.0); 10];
    for s in items {
        let k = argmax(s.probs);
        let conf = s.probs[k] as f64;
        let b = ((conf * 10.0).floor() as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += f64::from(u8::from(k == s.gold));
        bins[b].2 += conf;
    }
    let n = items.len().max(1) as f64;
    let mut ece = 0.0;
    let bins = bins
        .into_iter()
        .enumerate()
        .map(|(i, (count, correct, conf))| {
            let (acc, c) = if count > 0 {
                (correct / count as f64, conf / count as f64)
            } else {
                (0.0, 0.0)
            };
            ece += count as f64 / n * (acc - c).abs();
            Bin {
                lo: i as f64 / 10.0,
                hi: (i + 1) as f64 / 10.0,
                n: count,
                accuracy: acc,
                confidence: c,
            }
        })
        .collect();
    (Calibration { bins }, ece)
}

/// Builds the report for `items` over `labels`. Labels past the length of an item's
/// probabilities are gold labels the model does not know: never predicted, always errors.
pub fn evaluate(labels: &[String], items: &[Scored]) -> Report {
    let mut unseen_intents = BTreeMap::new();
    for s in items.iter().filter(|s| s.gold >= s.probs.len()) {
        *unseen_intents.entry(labels[s.gold].clone()).or_insert(0) += 1;
    }
    let pairs: Vec<(usize, usize)> = items.iter().map(|s| (s.gold, argmax(s.probs))).collect();
    let intents = per_intent(labels, &pairs);
    let mut langs: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for (s, pair) in items.iter().zip(&pairs) {
        langs.entry(s.lang.to_string()).or_default().push(*pair);
    }
    let per_language = langs
        .into_iter()
        .map(|(l, p)| {
            let score = LanguageScore {
                accuracy: accuracy(&p),
                macro_f1: macro_f1(&per_intent(labels, &p)),
                n: p.len(),
            };
            (l, score)
        })
        .collect();
    let domain_hits = pairs
        .iter()
        .filter(|&&(g, p)| IntentTree::root_of(&labels[g]) == IntentTree::root_of(&labels[p]))
        .count();
    let mut matrix = vec![vec![0usize; labels.len()]; labels.len()];
    for &(g, p) in &pairs {
        matrix[g][p] += 1;
    }
    let (calibration, ece) = calibration(items);
    let n = items.len();
    Report {
        n,
        accuracy: accuracy(&pairs),
        macro_f1: macro_f1(&intents),
        domain_accuracy: if n > 0 {
            domain_hits as f64 / n as f64
        } else {
            0.0
        },
        ece,
        unknown_rate: if n > 0 {
            items.iter().filter(|s| s.unknown).count() as f64 / n as f64
        } else {
            0.0
        },
        per_language,
        per_intent: intents,
        confusion: Confusion {
            labels: labels.to_vec(),
            matrix,
        },
        calibration,
        unseen_intents,
        out_of_scope: None,
        also: None,
        chains: None,
    }
}

impl Report {
    /// A readable plain-text (and Markdown-compatible) rendering.
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "n = {}\naccuracy = {:.4}\nmacro_f1 = {:.4}\ndomain_accuracy = {:.4}\nece = {:.4}\nunknown_rate = {:.4}\n\n",
            self.n, self.accuracy, self.macro_f1, self.domain_accuracy, self.ece, self.unknown_rate
        );
        if let Some(c) = &self.chains {
            s.push_str(&format!(
                "Chains under the thresholds: to a leaf {:.4}, unknown {:.4}, resolved node holds the true intent {:.4}\n\n",
                c.leaf, c.unknown, c.precision
            ));
        }
        if !self.unseen_intents.is_empty() {
            s.push_str("Intents the model does not know (every such example is an error):\n\n");
            for (l, n) in &self.unseen_intents {
                s.push_str(&format!("- {l}: {n}\n"));
            }
            s.push('\n');
        }
        if let Some(o) = &self.out_of_scope {
            s.push_str(&format!(
                "Out of scope (threshold {}; the figures above leave out the {} examples labelled out_of_scope):\n\n\
                 | language | out_of_scope | recall | in scope | rejected |\n|---|---:|---:|---:|---:|\n",
                o.threshold.map_or_else(|| "none: the model has no detector".to_string(), |t| format!("{t:.4}")),
                o.all.out_of_scope
            ));
            for (l, v) in std::iter::once(("all", &o.all))
                .chain(o.per_language.iter().map(|(l, v)| (l.as_str(), v)))
            {
                s.push_str(&format!(
                    "| {l} | {} | {:.3} | {} | {:.3} |\n",
                    v.out_of_scope, v.recall, v.in_scope, v.rejected
                ));
            }
            s.push('\n');
        }
        if let Some(a) = &self.also {
            s.push_str(&format!(
                "Further requests (threshold {}):\n\n\
                 | language | several requests | recall | exact set | single request | given another |\n\
                 |---|---:|---:|---:|---:|---:|\n",
                a.threshold.map_or_else(|| "none: the model has no detector".to_string(), |t| format!("{t:.2}")),
            ));
            for (l, v) in std::iter::once(("all", &a.all))
                .chain(a.per_language.iter().map(|(l, v)| (l.as_str(), v)))
            {
                s.push_str(&format!(
                    "| {l} | {} | {:.3} | {:.3} | {} | {:.3} |\n",
                    v.multi, v.recall, v.exact, v.single, v.false_rate
                ));
            }
            s.push('\n');
        }
        s.push_str("| language | n | accuracy | macro_f1 |\n|---|---:|---:|---:|\n");
        for (l, v) in &self.per_language {
            s.push_str(&format!(
                "| {l} | {} | {:.4} | {:.4} |\n",
                v.n, v.accuracy, v.macro_f1
            ));
        }
        s.push_str("\n| intent | precision | recall | f1 | support |\n|---|---:|---:|---:|---:|\n");
        for (l, v) in &self.per_intent {
            s.push_str(&format!(
                "| {l} | {:.3} | {:.3} | {:.3} | {} |\n",
                v.precision, v.recall, v.f1, v.support
            ));
        }
        s.push_str("\nConfusion (rows gold, columns predicted, by label index):\n\n");
        for (i, l) in self.confusion.labels.iter().enumerate() {
            s.push_str(&format!("{i:>3} {l:<28}"));
            for c in &self.confusion.matrix[i] {
                s.push_str(&format!("{c:>4}"));
            }
            s.push('\n');
        }
        s.push_str("\n| confidence | n | accuracy | mean confidence |\n|---|---:|---:|---:|\n");
        for b in &self.calibration.bins {
            s.push_str(&format!(
                "| {:.1}-{:.1} | {} | {:.3} | {:.3} |\n",
                b.lo, b.hi, b.n, b.accuracy, b.confidence
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_on_a_hand_checked_case() {
        let labels: Vec<String> = ["a.x", "a.y", "b.z"].map(String::from).to_vec();
        let p = [
            [0.9375f32, 0.03125, 0.03125],
            [0.6, 0.3, 0.1],
            [0.2, 0.2, 0.6],
            [0.1, 0.1, 0.8],
        ];
        let gold = [0, 1, 2, 0];
        let langs = ["en", "en", "ru", "ru"];
        let items: Vec<Scored> = (0..4)
            .map(|i| Scored {
                gold: gold[i],
                probs: &p[i],
                lang: langs[i],
                unknown: i == 2,
            })
            .collect();
        let r = evaluate(&labels, &items);
        assert_eq!(r.n, 4);
        assert!((r.accuracy - 0.5).abs() < 1e-9);
        // a.x: P 1/2, R 1/2; a.y: 0; b.z: P 1/2, R 1 -> F1 2/3.
        assert!((r.macro_f1 - (0.5 + 0.0 + 2.0 / 3.0) / 3.0).abs() < 1e-9);
        assert!((r.domain_accuracy - 0.75).abs() < 1e-9);
        assert_eq!(
            r.confusion.matrix,
            vec![vec![1, 0, 1], vec![1, 0, 0], vec![0, 0, 1]]
        );
        assert_eq!(r.per_language["en"].n, 2);
        assert!((r.unknown_rate - 0.25).abs() < 1e-9);
        assert_eq!(r.calibration.bins.len(), 10);
        assert_eq!(r.calibration.bins.iter().map(|b| b.n).sum::<usize>(), 4);
        // Bins: 0.9375 right; 0.6 wrong; 0.6 right; 0.8 wrong.
        let ece = 0.25 * (1.0 - 0.9375f64).abs()
            + 0.5 * (0.5 - 0.6f64).abs()
            + 0.25 * (0.0 - 0.8f64).abs();
        assert!((r.ece - ece).abs() < 1e-6, "{} vs {ece}", r.ece);
        assert!(r.unseen_intents.is_empty());
    }

    #[test]
    fn gold_intents_the_model_does_not_know_are_errors() {
        // Two model labels; `c.w` is only in the test data.
        let labels: Vec<String> = ["a.x", "b.z", "c.w"].map(String::from).to_vec();
        let p = [[0.9f32, 0.1], [0.2, 0.8], [0.7, 0.3]];
        let gold = [0, 1, 2];
        let items: Vec<Scored> = (0..3)
            .map(|i| Scored {
                gold: gold[i],
                probs: &p[i],
                lang: "en",
                unknown: false,
            })
            .collect();
        let r = evaluate(&labels, &items);
        assert!((r.accuracy - 2.0 / 3.0).abs() < 1e-9);
        // a.x: P 1/2, R 1 -> 2/3; b.z: 1; c.w: 0.
        assert!((r.macro_f1 - (2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-9);
        assert_eq!(r.per_intent["c.w"].support, 1);
        assert_eq!(r.confusion.matrix[2], vec![1, 0, 0]);
        assert_eq!(r.unseen_intents, BTreeMap::from([("c.w".to_string(), 1)]));
        assert!(r.to_table().contains("- c.w: 1"));
        let (_, ece) = calibration(&items);
        assert!((r.ece - ece).abs() < 1e-12);
    }

    #[test]
    fn out_of_scope_recall_and_in_scope_rejection() {
        let item = |gold_out, rejected, lang| ScopeItem {
            gold_out,
            rejected,
            lang,
        };
        let items = [
            item(true, true, "en"),
            item(true, false, "ru"),
            item(true, true, "ru"),
            item(false, false, "en"),
            item(false, true, "en"),
            item(false, false, "ru"),
            item(false, false, "ru"),
        ];
        let r = scope_report(Some(0.75), &items);
        assert_eq!((r.all.out_of_scope, r.all.in_scope), (3, 4));
        assert!((r.all.recall - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.all.rejected - 0.25).abs() < 1e-9);
        assert!((r.per_language["en"].recall - 1.0).abs() < 1e-9);
        assert!((r.per_language["en"].rejected - 0.5).abs() < 1e-9);
        assert!((r.per_language["ru"].recall - 0.5).abs() < 1e-9);
        assert_eq!(r.per_language["ru"].rejected, 0.0);
        let mut report = evaluate(&["a".to_string()], &[]);
        report.out_of_scope = Some(r);
        let table = report.to_table();
        assert!(table.contains("| all | 3 | 0.667 | 4 | 0.250 |"), "{table}");
        assert!(table.contains("threshold 0.7500"), "{table}");
    }

    #[test]
    fn further_requests_recall_exact_set_and_false_rate() {
        let two = ["b".to_string()];
        let three = ["b".to_string(), "c".to_string()];
        let item = |gold, gold_also, intent, found: Vec<&'static str>, lang| AlsoItem {
            gold,
            gold_also,
            intent,
            found,
            lang,
        };
        let items = [
            // Found exactly, even with main and further request swapped.
            item("a", &two[..], "b", vec!["a"], "en"),
            // One of two found: not exact.
            item("a", &three[..], "a", vec!["c"], "en"),
            // None found.
            item("a", &two[..], "a", vec![], "ru"),
            // Single requests: one given a further request.
            item("a", &[], "a", vec!["b"], "ru"),
            item("a", &[], "a", vec![], "ru"),
        ];
        let r = also_report(Some(0.6), &items);
        assert_eq!((r.all.multi, r.all.single), (3, 2));
        assert!((r.all.recall - 2.0 / 4.0).abs() < 1e-9, "{}", r.all.recall);
        assert!((r.all.exact - 1.0 / 3.0).abs() < 1e-9);
        assert!((r.all.false_rate - 0.5).abs() < 1e-9);
        assert_eq!(r.per_language["en"].multi, 2);
        assert_eq!(r.per_language["ru"].recall, 0.0);
        let mut report = evaluate(&["a".to_string()], &[]);
        report.also = Some(r);
        let table = report.to_table();
        assert!(
            table.contains("| all | 3 | 0.500 | 0.333 | 2 | 0.500 |"),
            "{table}"
        );
    }
}
