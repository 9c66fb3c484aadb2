//! Nodes' own chain thresholds, tuned on the tuning split. A depth's threshold asks every node
//! at that depth for the same probability, and with calibrated probabilities it reads as a
//! precision: enter a node when it is right at least that often (0.5: more often right than
//! not). The temperature calibrates the model as a whole, not node by node: some nodes are right
//! far more often than their probability says, others less. Each node well represented on the
//! tuning split gets the threshold that enters it where its tickets are right at least as often
//! as its depth's threshold asks, and not where they are not: each ticket entered counts
//! `1 - target` when right and `-target` when wrong, and the threshold with the best sum wins.
//! Only a clear difference moves a threshold: the tickets it newly enters (or no longer enters)
//! must be right more (or less) often than the target with 95% confidence (Wilson interval), so
//! a few unlucky tickets leave a node at its depth's threshold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::intent::{IntentTree, Thresholds};

/// The normal quantile of the confidence asked of a move (95%, two-sided).
const Z: f32 = 1.96;

/// The Wilson score interval of `right` successes in `n` tries.
fn wilson(right: usize, n: usize) -> (f32, f32) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p) = (n as f32, right as f32 / n as f32);
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    (centre - half, centre + half)
}

/// Tuning tickets a node must be the deciding candidate for (its parent entered under the
/// thresholds tuned above it, it the most probable child) before it gets a threshold of its own.
pub const MIN_SUPPORT: usize = 20;

/// The thresholds tried, lowest first: 0.20, 0.25, …, 0.90.
fn grid() -> impl Iterator<Item = f32> {
    (4..=18).map(|i| i as f32 / 20.0)
}

/// What tuning found.
#[derive(Debug, Clone)]
pub struct Tuned {
    /// Nodes' own thresholds (where one does better than their depth's).
    pub nodes: BTreeMap<String, f32>,
    /// The figures, for the training record.
    pub report: TuningReport,
}

/// Tuning figures on the tuning split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuningReport {
    /// Tickets in the tuning split.
    pub tickets: usize,
    /// Per depth: the precision each node there is held to (the depth's threshold).
    pub target_precision: Vec<f32>,
    /// Nodes with a threshold of their own.
    pub tuned_nodes: usize,
    /// Chains under the depth thresholds alone.
    pub before: ChainFigures,
    /// Chains with the nodes' own thresholds.
    pub after: ChainFigures,
}

/// How far chains go, and how often they are right, on labelled tickets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChainFigures {
    /// Share resolved down to a leaf.
    pub leaf: f32,
    /// Share resolved to no intent (`unknown`).
    pub unknown: f32,
    /// Of those resolved, the share whose resolved node holds the true intent (itself or an
    /// ancestor of it).
    pub precision: f32,
}

/// Whether node `node` is `gold` or an ancestor of it.
fn holds(node: &str, gold: &str) -> bool {
    gold == node || gold.strip_prefix(node).is_some_and(|r| r.starts_with('.'))
}

/// Chain figures of label probabilities `probs` with true intents `gold` under `thresholds`.
pub fn chain_figures<P: AsRef<[f32]>>(
    tree: &IntentTree,
    labels: &[String],
    thresholds: &Thresholds,
    probs: &[P],
    gold: &[&str],
) -> ChainFigures {
    let resolver = tree.resolver(labels, thresholds);
    let (mut leaf, mut unknown, mut right) = (0usize, 0usize, 0usize);
    for (p, g) in probs.iter().zip(gold) {
        let r = resolver.resolve(p.as_ref(), 1);
        match r.chain.last() {
            None => unknown += 1,
            Some(last) => {
                let node = tree.get(&last.intent);
                leaf += usize::from(node.is_some_and(|n| n.children.is_empty()));
                right += usize::from(holds(&last.intent, g));
            }
        }
    }
    let share = |k: usize, of: usize| if of == 0 { 0.0 } else { k as f32 / of as f32 };
    ChainFigures {
        leaf: share(leaf, probs.len()),
        unknown: share(unknown, probs.len()),
        precision: share(right, probs.len() - unknown),
    }
}

/// Tunes nodes' own thresholds over the depth thresholds `depth` from held-out label
/// probabilities `probs` (the tuning split's, from a head that did not see it) and their true
/// intents `gold`.
pub fn tune(
    tree: &IntentTree,
    labels: &[String],
    depth: &Thresholds,
    probs: &[Vec<f32>],
    gold: &[&str],
) -> Tuned {
    // Each ticket's deciding candidates: the most probable child at every level, whatever
    // the thresholds (they only decide how far down the chain goes), with whether entering it
    // is right.
    let greedy = Thresholds::per_depth(vec![0.0]);
    let resolver = tree.resolver(labels, &greedy);
    let chains: Vec<Vec<(String, f32, bool)>> = probs
        .iter()
        .zip(gold)
        .map(|(p, g)| {
            let chain = resolver.resolve(p, 1).chain;
            chain
                .into_iter()
                .map(|s| {
                    let ok = holds(&s.intent, g);
                    (s.intent, s.p, ok)
                })
                .collect()
        })
        .collect();
    let max_depth = tree.nodes().iter().map(|n| n.depth).max().unwrap_or(0);
    let target_precision: Vec<f32> = (0..=max_depth).map(|d| depth.of_depth(d)).collect();
    let mut tuned = Thresholds::per_depth(depth.depth.clone());
    // Top down: a node's tickets are those whose chain reaches it under the thresholds chosen
    // above it (a ticket that stops at a parent never asks the child).
    for d in 0..=max_depth {
        let mut points: BTreeMap<&str, Vec<(f32, bool)>> = BTreeMap::new();
        for chain in &chains {
            let reached = chain[..d.min(chain.len())]
                .iter()
                .enumerate()
                .all(|(a, (id, p, _))| *p >= tuned.of(id, a));
            if let (true, Some((id, p, ok))) = (reached, chain.get(d)) {
                points.entry(id.as_str()).or_default().push((*p, *ok));
            }
        }
        let chosen: Vec<(String, f32)> = points
            .iter()
            .filter(|(_, pts)| pts.len() >= MIN_SUPPORT)
            .filter_map(|(id, pts)| {
                own_threshold(pts, target_precision[d], depth.of_depth(d))
                    .map(|t| (id.to_string(), t))
            })
            .collect();
        tuned.nodes.extend(chosen);
    }
    let report = TuningReport {
        tickets: probs.len(),
        target_precision,
        tuned_nodes: tuned.nodes.len(),
        before: chain_figures(tree, labels, depth, probs, gold),
        after: chain_figures(tree, labels, &tuned, probs, gold),
    };
    Tuned {
        nodes: tuned.nodes,
        report,
    }
}

/// A node's own threshold from its tuning tickets `pts` (probability, whether entering was
/// right), held to `target` precision, its depth's threshold being `t0`; `None` when no
/// threshold clearly does better than the depth's.
fn own_threshold(pts: &[(f32, bool)], target: f32, t0: f32) -> Option<f32> {
    let worth = |t: f32| -> f32 {
        pts.iter()
            .filter(|(p, _)| *p >= t)
            .map(|&(_, ok)| if ok { 1.0 - target } else { -target })
            .sum()
    };
    // The tickets between `t` and the depth's threshold are clearly right more often than
    // the target (to enter them) or less often (to leave them).
    let clear = |t: f32| -> bool {
        let (lo, hi) = (t.min(t0), t.max(t0));
        let band: Vec<bool> = pts
            .iter()
            .filter(|(p, _)| *p >= lo && *p < hi)
            .map(|&(_, ok)| ok)
            .collect();
        let (low, high) = wilson(band.iter().filter(|&&ok| ok).count(), band.len());
        if t < t0 {
            low > target
        } else {
            high < target
        }
    };
    let base = worth(t0);
    // The best sum; among equals, the threshold closest to the depth's.
    let best = grid()
        .filter(|&t| (t - t0).abs() > 1e-6 && clear(t))
        .map(|t| (worth(t), t))
        .filter(|&(w, _)| w > base)
        .max_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then((b.1 - t0).abs().total_cmp(&(a.1 - t0).abs()))
        });
    best.map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` tickets of true intent `gold` whose model gives `p` to `label` (the rest to the
    /// other of the two labels).
    fn tickets(
        labels: &[String],
        label: &str,
        p: f32,
        gold: &'static str,
        n: usize,
    ) -> Vec<(Vec<f32>, &'static str)> {
        let probs: Vec<f32> = labels
            .iter()
            .map(|l| if l == label { p } else { (1.0 - p) / 2.0 })
            .collect();
        vec![(probs, gold); n]
    }

    #[test]
    fn a_reliable_node_gets_a_lower_threshold_and_an_unreliable_one_a_higher() {
        let labels: Vec<String> = ["a.x", "a.y", "b.z"].map(String::from).to_vec();
        let tree = IntentTree::from_labels(&labels);
        let mut data = Vec::new();
        // a.x is right even at 0.4; a.y is wrong five times in six at 0.6.
        data.extend(tickets(&labels, "a.x", 0.4, "a.x", 30));
        data.extend(tickets(&labels, "a.x", 0.8, "a.x", 30));
        data.extend(tickets(&labels, "a.y", 0.6, "a.y", 5));
        data.extend(tickets(&labels, "a.y", 0.6, "a.x", 25));
        data.extend(tickets(&labels, "a.y", 0.8, "a.y", 30));
        // b.z: too few tickets to tune.
        data.extend(tickets(&labels, "b.z", 0.9, "b.z", 5));
        let (probs, gold): (Vec<_>, Vec<_>) = data.into_iter().unzip();
        let depth = Thresholds::per_depth(vec![0.5, 0.5]);
        let tuned = tune(&tree, &labels, &depth, &probs, &gold);
        // Held to 0.5 precision: a.x (always right) can go down to 0.4, a.y must stay above
        // its 0.6, right one time in six; the root a is always right and keeps 0.5.
        assert_eq!(tuned.nodes.get("a.x"), Some(&0.4));
        assert_eq!(tuned.nodes.get("a.y"), Some(&0.65));
        assert_eq!(tuned.nodes.get("b.z"), None);
        assert_eq!(tuned.nodes.get("a"), None);
        let r = &tuned.report;
        assert_eq!(r.target_precision, [0.5, 0.5]);
        // As many leaves, and the 25 wrong ones now stop at their right parent.
        assert_eq!(r.after.leaf, r.before.leaf);
        assert!((r.before.precision - 100.0 / 125.0).abs() < 1e-6, "{r:?}");
        assert_eq!(r.after.precision, 1.0);
    }

    #[test]
    fn a_child_is_tuned_on_the_tickets_that_still_reach_it() {
        let labels: Vec<String> = ["a.x", "a.y", "b.z"].map(String::from).to_vec();
        let tree = IntentTree::from_labels(&labels);
        let mut data = tickets(&labels, "a.x", 0.8, "a.x", 40);
        // 30 tickets of b.z read as a (0.6) and a.x (0.55): wrong at both levels.
        data.extend(vec![(vec![0.55, 0.05, 0.4], "b.z"); 30]);
        let (probs, gold): (Vec<_>, Vec<_>) = data.into_iter().unzip();
        let depth = Thresholds::per_depth(vec![0.5, 0.5]);
        let tuned = tune(&tree, &labels, &depth, &probs, &gold);
        // a rises past them; they no longer reach a.x, which keeps its depth's threshold.
        assert_eq!(tuned.nodes, [("a".to_string(), 0.65)].into());
    }

    #[test]
    fn a_few_unlucky_tickets_move_no_threshold() {
        let labels: Vec<String> = ["a.x", "a.y"].map(String::from).to_vec();
        let tree = IntentTree::from_labels(&labels);
        let mut data = tickets(&labels, "a.x", 0.8, "a.x", 40);
        // Two wrong in three just above the threshold: too few to say a.x is worse there.
        data.extend(tickets(&labels, "a.x", 0.55, "a.y", 2));
        data.extend(tickets(&labels, "a.x", 0.55, "a.x", 1));
        let (probs, gold): (Vec<_>, Vec<_>) = data.into_iter().unzip();
        let depth = Thresholds::per_depth(vec![0.5]);
        assert!(tune(&tree, &labels, &depth, &probs, &gold).nodes.is_empty());
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, hi) = wilson(30, 30);
        assert!(lo > 0.88 && (hi - 1.0).abs() < 1e-6, "{lo} {hi}");
    }

    #[test]
    fn a_node_holds_its_descendants_only() {
        assert!(holds("billing", "billing.refund"));
        assert!(holds("billing.refund", "billing.refund"));
        assert!(!holds("billing", "billing_ops.x"));
        assert!(!holds("billing.refund", "billing"));
    }
}
