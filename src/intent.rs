//! The intent taxonomy (a tree of dotted ids: `billing` > `billing.refund`) and the pure step
//! that turns calibrated label probabilities into an intent chain. No model, no I/O besides
//! parsing a taxonomy file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The resolved intent when even the top level is not confident.
pub const UNKNOWN: &str = "unknown";

/// The resolved intent when the model's out-of-scope detector finds no request to this
/// business at all; also the label of the detector's examples in data files.
pub const OUT_OF_SCOPE: &str = "out_of_scope";

/// Errors in a taxonomy or label set.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TaxonomyError {
    /// The file cannot be read.
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// TOML syntax or shape error.
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A node id appears twice.
    #[error("{path}:{line}: duplicate intent `{id}` (first defined on line {first})")]
    Duplicate {
        path: PathBuf,
        line: usize,
        id: String,
        first: usize,
    },
    /// A node's parent is not defined.
    #[error("{path}:{line}: intent `{id}` has no parent `{parent}` in the taxonomy")]
    MissingParent {
        path: PathBuf,
        line: usize,
        id: String,
        parent: String,
    },
    /// An id is malformed.
    #[error("{path}:{line}: invalid intent id `{id}`: {reason}")]
    InvalidId {
        path: PathBuf,
        line: usize,
        id: String,
        reason: IdProblem,
    },
    /// The taxonomy has no intents.
    #[error("{0}: the taxonomy defines no intents")]
    Empty(PathBuf),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaxonomy {
    #[serde(default)]
    intent: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: toml::Spanned<String>,
    #[serde(default)]
    en: String,
    #[serde(default)]
    ru: String,
}

/// One node of the taxonomy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentNode {
    /// Dotted id, e.g. `billing.refund`.
    pub id: String,
    /// English description.
    pub en: String,
    /// Russian description.
    pub ru: String,
    /// Index of the parent node.
    #[serde(skip)]
    pub parent: Option<usize>,
    /// Indices of the children.
    #[serde(skip)]
    pub children: Vec<usize>,
    /// Depth (roots are 0).
    pub depth: usize,
}

/// The taxonomy tree.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentTree {
    nodes: Vec<IntentNode>,
    index: HashMap<String, usize>,
}

/// Why a string cannot be an intent id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdProblem {
    /// Characters or empty segments.
    #[error("use lowercase letters, digits, '_' and '-', segments joined by '.'")]
    Malformed,
    /// `unknown` and `out_of_scope` are resolutions, not intents.
    #[error("`unknown` and `out_of_scope` are reserved (the resolver answers them itself): rename the intent")]
    Reserved,
}

/// Checks that `id` can name an intent (a taxonomy node or a training label).
pub fn check_id(id: &str) -> Result<(), IdProblem> {
    let well_formed = !id.is_empty()
        && id.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        });
    if !well_formed {
        Err(IdProblem::Malformed)
    } else if id == UNKNOWN || id == OUT_OF_SCOPE {
        Err(IdProblem::Reserved)
    } else {
        Ok(())
    }
}

/// Whether one intent is the other or under it (in either direction).
pub fn related(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x.strip_prefix(y).is_some_and(|r| r.starts_with('.'));
    a == b || under(a, b) || under(b, a)
}

fn parent_of(id: &str) -> Option<&str> {
    id.rsplit_once('.').map(|(p, _)| p)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl IntentTree {
    /// Reads a taxonomy TOML file (`[[intent]]` tables with `id`, `en`, `ru`).
    pub fn load(path: &Path) -> Result<Self, TaxonomyError> {
        let text = std::fs::read_to_string(path).map_err(|e| TaxonomyError::Io {
            path: path.into(),
            message: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses taxonomy TOML; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TaxonomyError> {
        let raw: RawTaxonomy = toml::from_str(text).map_err(|e| TaxonomyError::Parse {
            path: path.into(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
            message: e.message().to_string(),
        })?;
        if raw.intent.is_empty() {
            return Err(TaxonomyError::Empty(path.into()));
        }
        let mut tree = Self {
            nodes: Vec::new(),
            index: HashMap::new(),
        };
        let mut lines: HashMap<String, usize> = HashMap::new();
        for node in &raw.intent {
            let (id, line) = (
                node.id.get_ref().clone(),
                line_of(text, node.id.span().start),
            );
            if let Err(reason) = check_id(&id) {
                return Err(TaxonomyError::InvalidId {
                    path: path.into(),
                    line,
                    id,
                    reason,
                });
            }
            if let Some(&first) = lines.get(&id) {
                return Err(TaxonomyError::Duplicate {
                    path: path.into(),
                    line,
                    id,
                    first,
                });
            }
            if let Some(parent) = parent_of(&id) {
                if !lines.contains_key(parent) {
                    let parent = parent.to_string();
                    return Err(TaxonomyError::MissingParent {
                        path: path.into(),
                        line,
                        id,
                        parent,
                    });
                }
            }
            lines.insert(id.clone(), line);
            tree.add(&id, &node.en, &node.ru);
        }
        Ok(tree)
    }

    /// Builds a tree from labels alone, creating parents by splitting on '.'.
    pub fn from_labels<S: AsRef<str>>(labels: &[S]) -> Self {
        let mut tree = Self {
            nodes: Vec::new(),
            index: HashMap::new(),
        };
        for label in labels {
            tree.ensure(label.as_ref());
        }
        tree
    }

    fn ensure(&mut self, id: &str) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        if let Some(parent) = parent_of(id) {
            self.ensure(parent);
        }
        self.add(id, "", "")
    }

    fn add(&mut self, id: &str, en: &str, ru: &str) -> usize {
        let parent = parent_of(id).and_then(|p| self.index.get(p).copied());
        let depth = parent.map_or(0, |p| self.nodes[p].depth + 1);
        let i = self.nodes.len();
        self.nodes.push(IntentNode {
            id: id.to_string(),
            en: en.to_string(),
            ru: ru.to_string(),
            parent,
            children: Vec::new(),
            depth,
        });
        if let Some(p) = parent {
            self.nodes[p].children.push(i);
        }
        self.index.insert(id.to_string(), i);
        i
    }

    /// All nodes in definition order.
    pub fn nodes(&self) -> &[IntentNode] {
        &self.nodes
    }

    /// Looks a node up by id.
    pub fn get(&self, id: &str) -> Option<&IntentNode> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    /// Whether `id` is a node.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Leaf ids in definition order: the default label set of a classifier.
    pub fn leaves(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.children.is_empty())
            .map(|n| n.id.clone())
            .collect()
    }

    /// The root (domain) of an id: `billing` for `billing.refund`.
    pub fn root_of(id: &str) -> &str {
        id.split('.').next().unwrap_or(id)
    }

    /// Serialises the tree back to taxonomy TOML.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# Intent taxonomy: dotted ids form the tree (billing > billing.refund).\n",
        );
        for n in &self.nodes {
            let q = |s: &str| toml::Value::String(s.to_string()).to_string();
            out.push_str(&format!(
                "\n[[intent]]\nid = {}\nen = {}\nru = {}\n",
                q(&n.id),
                q(&n.en),
                q(&n.ru)
            ));
        }
        out
    }

    /// This tree with more nodes (`(id, en, ru)`, parents first), checked like a file.
    pub fn with_added(&self, nodes: &[(String, String, String)]) -> Result<Self, TaxonomyError> {
        let mut text = self.to_toml();
        for (id, en, ru) in nodes {
            let q = |s: &str| toml::Value::String(s.to_string()).to_string();
            text.push_str(&format!(
                "\n[[intent]]\nid = {}\nen = {}\nru = {}\n",
                q(id),
                q(en),
                q(ru)
            ));
        }
        Self::parse(&text, Path::new("(taxonomy with added intents)"))
    }

    /// Resolves label probabilities into a chain (see [`Resolver`]).
    pub fn resolver<'a>(
        &'a self,
        labels: &'a [String],
        thresholds: &'a Thresholds,
    ) -> Resolver<'a> {
        Resolver {
            tree: self,
            labels,
            thresholds,
        }
    }
}

/// The probability a chain's node must reach to be entered: one value per depth (the last
/// repeats; 0.5 when none are given), and per-node values that replace their depth's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Per depth, roots first (the last repeats).
    #[serde(default)]
    pub depth: Vec<f32>,
    /// Per node, replacing its depth's value.
    #[serde(default)]
    pub nodes: BTreeMap<String, f32>,
}

/// Why a set of thresholds cannot apply to a taxonomy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    /// A value outside 0..=1 (or not a number).
    #[error("threshold of {at} is {value}: a threshold is a probability from 0 to 1")]
    OutOfRange {
        /// `depth N` or the node's id.
        at: String,
        /// The value given.
        value: f32,
    },
    /// A node the taxonomy does not have.
    #[error("threshold for `{id}`: the taxonomy has no such intent (known: {known})")]
    UnknownNode {
        /// The id given.
        id: String,
        /// The closest known ids.
        known: String,
    },
}

impl Thresholds {
    /// One value per depth, no node's own.
    pub fn per_depth(depth: Vec<f32>) -> Self {
        Self {
            depth,
            nodes: BTreeMap::new(),
        }
    }

    /// The value of a depth (the last repeats; 0.5 when none are given).
    pub fn of_depth(&self, depth: usize) -> f32 {
        self.depth
            .get(depth)
            .or(self.depth.last())
            .copied()
            .unwrap_or(0.5)
    }

    /// The value of node `id` at `depth`: its own, else its depth's.
    pub fn of(&self, id: &str, depth: usize) -> f32 {
        self.nodes
            .get(id)
            .copied()
            .unwrap_or_else(|| self.of_depth(depth))
    }

    /// These thresholds with `overrides` laid over them: the overrides' depth values (when
    /// they give any) replace these, and their node values are added, replacing these.
    pub fn overridden_by(&self, overrides: &Thresholds) -> Thresholds {
        let mut out = self.clone();
        if !overrides.depth.is_empty() {
            out.depth.clone_from(&overrides.depth);
        }
        out.nodes
            .extend(overrides.nodes.iter().map(|(k, v)| (k.clone(), *v)));
        out
    }

    /// Checks every value is a probability and every node is in `tree`.
    pub fn check(&self, tree: &IntentTree) -> Result<(), ThresholdError> {
        let in_range = |at: String, value: f32| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(ThresholdError::OutOfRange { at, value })
            }
        };
        for (d, &v) in self.depth.iter().enumerate() {
            in_range(format!("depth {d}"), v)?;
        }
        for (id, &v) in &self.nodes {
            if tree.get(id).is_none() {
                let ids: Vec<&str> = tree.nodes().iter().map(|n| n.id.as_str()).collect();
                return Err(ThresholdError::UnknownNode {
                    id: id.clone(),
                    known: closest_known(&ids, id),
                });
            }
            in_range(format!("`{id}`"), v)?;
        }
        Ok(())
    }
}

/// "Known: …" text for an unknown intent: the five candidates closest to `wrong` by edit
/// distance (ties alphabetical), with "…" when there are more.
pub fn closest_known<S: AsRef<str>>(candidates: &[S], wrong: &str) -> String {
    let mut ids: Vec<&str> = candidates.iter().map(AsRef::as_ref).collect();
    ids.sort_by_key(|a| (edit_distance(a, wrong), *a));
    let more = if ids.len() > 5 { ", …" } else { "" };
    format!(
        "{}{more}",
        ids.iter().take(5).copied().collect::<Vec<_>>().join(", ")
    )
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// One step of a chain or one top-k entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Scored {
    /// Intent id.
    pub intent: String,
    /// Probability.
    pub p: f32,
}

/// The outcome of classifying one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resolution {
    /// The resolved node, or `unknown`.
    pub intent: String,
    /// Root to resolved node, each with its probability (empty when unknown).
    pub chain: Vec<Scored>,
    /// Most probable labels.
    pub top_k: Vec<Scored>,
    /// Top-1 minus top-2 label probability.
    pub margin: f32,
    /// The out-of-scope detector's probability that the ticket is no request to this business
    /// (absent when the model has no detector); at or above its threshold the intent is
    /// `out_of_scope` and the chain empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_scope: Option<f32>,
    /// The requests the ticket holds: the resolved intent (with its probability in the chain)
    /// first, then the further requests the model's further-request detector found, each with
    /// its segment's probability; empty when `unknown` or `out_of_scope`. `chain` and `top_k`
    /// describe the first alone. (Absent from decisions logged before it existed.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intents: Vec<Scored>,
}

impl Resolution {
    /// Applies the out-of-scope detector's probability: at or above `threshold` the ticket is
    /// `out_of_scope`, its chain empty; `top_k` and `margin` keep their softmax meaning.
    pub fn scoped(mut self, score: f32, threshold: f32) -> Self {
        self.out_of_scope = Some(score);
        if score >= threshold {
            self.intent = OUT_OF_SCOPE.to_string();
            self.chain.clear();
            self.intents.clear();
        }
        self
    }

    /// Adds further requests after the resolved intent (none for `unknown` or `out_of_scope`).
    pub fn with_also(mut self, more: Vec<Scored>) -> Self {
        if self.is_resolved() {
            self.intents.extend(more);
        }
        self
    }

    /// The further requests found beside the resolved intent.
    pub fn also(&self) -> &[Scored] {
        self.intents.get(1..).unwrap_or_default()
    }

    /// Whether the ticket resolved to an intent (neither `unknown` nor `out_of_scope`).
    pub fn is_resolved(&self) -> bool {
        self.intent != UNKNOWN && !self.is_out_of_scope()
    }

    /// Whether the out-of-scope detector rejected the ticket.
    pub fn is_out_of_scope(&self) -> bool {
        self.intent == OUT_OF_SCOPE
    }
}

/// Turns label probabilities into an intent chain: descend from the roots along the most
/// probable child while its probability (the sum over its subtree) reaches its threshold (see
/// [`Thresholds`]); stop at the last node that did; `unknown` if no root does.
#[derive(Debug, Clone, Copy)]
pub struct Resolver<'a> {
    tree: &'a IntentTree,
    labels: &'a [String],
    thresholds: &'a Thresholds,
}

impl Resolver<'_> {
    /// Threshold of node `i`: its own, else its depth's.
    fn threshold(&self, i: usize) -> f32 {
        let node = &self.tree.nodes[i];
        self.thresholds.of(&node.id, node.depth)
    }

    /// Node probabilities: each label's probability added to its node and all ancestors.
    pub fn node_probs(&self, probs: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.tree.nodes.len()];
        for (label, &p) in self.labels.iter().zip(probs) {
            let mut at = self.tree.index.get(label).copied();
            while let Some(i) = at {
                out[i] += p;
                at = self.tree.nodes[i].parent;
            }
        }
        out
    }

    /// Resolves one probability vector (aligned with the labels), keeping `k` top labels.
    pub fn resolve(&self, probs: &[f32], k: usize) -> Resolution {
        let node_p = self.node_probs(probs);
        let chain: Vec<Scored> = self
            .descend(&node_p)
            .0
            .into_iter()
            .map(|i| Scored {
                intent: self.tree.nodes[i].id.clone(),
                p: node_p[i],
            })
            .collect();
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top_k = order
            .iter()
            .take(k.max(1))
            .map(|&i| Scored {
                intent: self.labels[i].clone(),
                p: probs[i],
            })
            .collect();
        let margin = match (order.first(), order.get(1)) {
            (Some(&a), Some(&b)) => probs[a] - probs[b],
            (Some(&a), None) => probs[a],
            _ => 0.0,
        };
        let intent = chain
            .last()
            .map_or_else(|| UNKNOWN.to_string(), |s| s.intent.clone());
        Resolution {
            intents: chain.last().cloned().into_iter().collect(),
            intent,
            chain,
            top_k,
            margin,
            out_of_scope: None,
        }
    }

    /// How far the probabilities compared in resolving `probs` (labels', and nodes' summed
    /// over their subtrees) would have to move, each by at most this much, to turn the top
    /// label or the chain around: half the gap between the top two labels, and at every step
    /// of the chain half the gap between the best two candidates and the chosen one's distance
    /// to its threshold (a gap closes with two probabilities moving, a threshold is
    /// crossed by one).
    pub fn closest_call(&self, probs: &[f32]) -> f32 {
        let mut sorted = probs.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let top = match sorted[..] {
            [a, b, ..] => (a - b) / 2.0,
            _ => f32::INFINITY,
        };
        top.min(self.descend(&self.node_probs(probs)).1)
    }

    /// Descends from the roots along the most probable child while it reaches its threshold: the chain's nodes and the closest call on the way (see `closest_call`).
    fn descend(&self, node_p: &[f32]) -> (Vec<usize>, f32) {
        let nodes = &self.tree.nodes;
        let roots: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].parent.is_none())
            .collect();
        let (mut chain, mut closest) = (Vec::new(), f32::INFINITY);
        let mut candidates: &[usize] = &roots;
        while let Some(&best) = candidates
            .iter()
            .max_by(|&&a, &&b| node_p[a].total_cmp(&node_p[b]))
        {
            for &other in candidates.iter().filter(|&&o| o != best) {
                closest = closest.min((node_p[best] - node_p[other]) / 2.0);
            }
            let threshold = self.threshold(best);
            closest = closest.min((node_p[best] - threshold).abs());
            if node_p[best] < threshold {
                break;
            }
            chain.push(best);
            candidates = &nodes[best].children;
        }
        (chain, closest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (IntentTree, Vec<String>) {
        let labels: Vec<String> = ["billing.refund", "billing.charge_dispute", "tech.bug"]
            .map(String::from)
            .to_vec();
        (IntentTree::from_labels(&labels), labels)
    }

    #[test]
    fn the_closest_call_is_the_smallest_gap_that_could_turn_the_decision() {
        let (t, labels) = tree();
        let half = Thresholds::per_depth(vec![0.5, 0.5]);
        let r = t.resolver(&labels, &half);
        // billing 0.9 vs tech 0.1; refund 0.6 vs dispute 0.3; refund 0.1 over the threshold.
        assert!((r.closest_call(&[0.6, 0.3, 0.1]) - 0.1).abs() < 1e-6);
        // The top two labels nearly tie (0.01 each way), though their parent is clear.
        assert!((r.closest_call(&[0.46, 0.44, 0.1]) - 0.01).abs() < 1e-6);
        // Two roots nearly tie: billing 0.52 vs tech 0.48.
        let th = Thresholds::per_depth(vec![0.4, 0.5]);
        let low = t.resolver(&labels, &th);
        assert!((low.closest_call(&[0.3, 0.22, 0.48]) - 0.02).abs() < 1e-6);
        // The best leaf falls 0.03 short of its threshold: the chain stops at billing, and a
        // small shift would carry it on.
        assert!((r.closest_call(&[0.47, 0.2, 0.33]) - 0.03).abs() < 1e-6);
        // A root 0.01 under its threshold: unknown, but only just.
        let high = Thresholds::per_depth(vec![0.7]);
        let r = t.resolver(&labels, &high);
        assert!((r.closest_call(&[0.33, 0.36, 0.31]) - 0.01).abs() < 1e-6);
    }

    #[test]
    fn confident_leaf_resolves_full_chain() {
        let (t, labels) = tree();
        let r = t
            .resolver(&labels, &Thresholds::per_depth(vec![0.5, 0.5]))
            .resolve(&[0.8, 0.1, 0.1], 2);
        assert_eq!(r.intent, "billing.refund");
        assert_eq!(
            r.chain
                .iter()
                .map(|s| s.intent.as_str())
                .collect::<Vec<_>>(),
            ["billing", "billing.refund"]
        );
        assert!((r.chain[0].p - 0.9).abs() < 1e-6);
        assert!((r.margin - 0.7).abs() < 1e-6);
        assert_eq!(r.top_k.len(), 2);
    }

    #[test]
    fn uncertain_between_siblings_stops_at_parent() {
        let (t, labels) = tree();
        let r = t
            .resolver(&labels, &Thresholds::per_depth(vec![0.5, 0.5]))
            .resolve(&[0.45, 0.44, 0.11], 3);
        assert_eq!(r.intent, "billing");
        assert_eq!(r.chain.len(), 1);
    }

    #[test]
    fn a_node_s_own_threshold_replaces_its_depth_s_at_any_depth() {
        let (t, labels) = tree();
        let probs = [0.55, 0.3, 0.15]; // billing 0.85 (refund 0.55), tech 0.15
        let mut th = Thresholds::per_depth(vec![0.9, 0.5]);
        // Depth 0 asks for 0.9: billing (0.85) falls short, unknown.
        assert_eq!(t.resolver(&labels, &th).resolve(&probs, 1).intent, UNKNOWN);
        // billing's own 0.8 lets it in; the leaf's depth (0.5) lets refund in.
        th.nodes.insert("billing".into(), 0.8);
        assert_eq!(
            t.resolver(&labels, &th).resolve(&probs, 1).intent,
            "billing.refund"
        );
        // refund's own 0.6 stops the chain at billing; another leaf keeps the depth's.
        th.nodes.insert("billing.refund".into(), 0.6);
        assert_eq!(
            t.resolver(&labels, &th).resolve(&probs, 1).intent,
            "billing"
        );
        let dispute = [0.3, 0.55, 0.15];
        assert_eq!(
            t.resolver(&labels, &th).resolve(&dispute, 1).intent,
            "billing.charge_dispute"
        );
        // The closest call counts the node's own threshold: refund is 0.05 under its 0.6.
        let r = t.resolver(&labels, &th);
        assert!((r.closest_call(&probs) - 0.05).abs() < 1e-6);
    }

    #[test]
    fn overrides_lay_depths_and_nodes_over_the_model_s() {
        let mut model = Thresholds::per_depth(vec![0.5, 0.4]);
        model.nodes.insert("billing".into(), 0.6);
        model.nodes.insert("tech".into(), 0.7);
        let mut over = Thresholds::default();
        over.nodes.insert("tech".into(), 0.3);
        let both = model.overridden_by(&over);
        assert_eq!(both.depth, [0.5, 0.4]);
        assert_eq!(both.of("tech", 0), 0.3);
        assert_eq!(both.of("billing", 0), 0.6);
        assert_eq!(both.of("billing.refund", 1), 0.4);
        assert_eq!(both.of("a.b.c", 2), 0.4);
        over.depth = vec![0.2];
        assert_eq!(model.overridden_by(&over).of("billing.refund", 1), 0.2);
    }

    #[test]
    fn thresholds_name_what_is_wrong() {
        let (t, _) = tree();
        let mut th = Thresholds::per_depth(vec![0.5, 1.5]);
        assert_eq!(
            th.check(&t).unwrap_err().to_string(),
            "threshold of depth 1 is 1.5: a threshold is a probability from 0 to 1"
        );
        th.depth = vec![0.5];
        th.nodes.insert("billing.refnd".into(), 0.5);
        assert!(th.check(&t).unwrap_err().to_string().starts_with(
            "threshold for `billing.refnd`: the taxonomy has no such intent (known: billing.refund, "
        ));
        th.nodes = [("tech".to_string(), f32::NAN)].into();
        assert!(th
            .check(&t)
            .unwrap_err()
            .to_string()
            .contains("`tech` is NaN"));
        th.nodes = [("tech".to_string(), 0.0)].into();
        assert_eq!(th.check(&t), Ok(()));
    }

    #[test]
    fn weak_top_level_is_unknown() {
        let (t, labels) = tree();
        let r = t
            .resolver(&labels, &Thresholds::per_depth(vec![0.7]))
            .resolve(&[0.3, 0.3, 0.4], 3);
        assert_eq!(r.intent, UNKNOWN);
        assert!(r.chain.is_empty());
    }

    #[test]
    fn taxonomy_errors_name_file_and_line() {
        let p = Path::new("tax.toml");
        let dup = "[[intent]]\nid = \"a\"\n[[intent]]\nid = \"a\"\n";
        assert_eq!(
            IntentTree::parse(dup, p).unwrap_err().to_string(),
            "tax.toml:4: duplicate intent `a` (first defined on line 2)"
        );
        let orphan = "[[intent]]\nid = \"a.b\"\n";
        assert_eq!(
            IntentTree::parse(orphan, p).unwrap_err().to_string(),
            "tax.toml:2: intent `a.b` has no parent `a` in the taxonomy"
        );
        let bad = "[[intent]]\nid = \"A b\"\n";
        assert!(IntentTree::parse(bad, p)
            .unwrap_err()
            .to_string()
            .starts_with("tax.toml:2: invalid intent id"));
    }

    #[test]
    fn toml_round_trip() {
        let text = "[[intent]]\nid = \"a\"\nen = \"A\"\nru = \"А\"\n[[intent]]\nid = \"a.b\"\nen = \"B\"\nru = \"Б\"\n";
        let t = IntentTree::parse(text, Path::new("x")).unwrap();
        assert_eq!(IntentTree::parse(&t.to_toml(), Path::new("y")).unwrap(), t);
        assert_eq!(t.leaves(), vec!["a.b".to_string()]);
    }

    #[test]
    fn the_detector_overrides_the_chain_and_keeps_the_softmax() {
        let tree = IntentTree::from_labels(&["billing.refund", "tech.bug"]);
        let labels = ["billing.refund".to_string(), "tech.bug".to_string()];
        let r = tree
            .resolver(&labels, &Thresholds::per_depth(vec![0.5]))
            .resolve(&[0.9, 0.1], 2);
        let kept = r.clone().scoped(0.2, 0.6);
        assert_eq!(kept.intent, "billing.refund");
        assert_eq!(kept.out_of_scope, Some(0.2));
        assert!(!kept.is_out_of_scope());
        let away = r.clone().scoped(0.6, 0.6);
        assert!(away.is_out_of_scope());
        assert!(away.chain.is_empty());
        assert_eq!((away.top_k.clone(), away.margin), (r.top_k, r.margin));
        assert_eq!(check_id(OUT_OF_SCOPE), Err(IdProblem::Reserved));
    }

    #[test]
    fn related_intents() {
        assert!(related("billing", "billing.refund"));
        assert!(related("billing.refund", "billing"));
        assert!(!related("billing", "billing_extra"));
        assert!(!related("billing.refund", "billing.invoice"));
    }
}
