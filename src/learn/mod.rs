//! The learning loop's logic, apart from HTTP and storage: agents' corrections become training
//! examples with a split fixed forever by a hash of the ticket id; a candidate head is trained
//! on the base data plus the training share of corrections (new intents included, embeddings
//! cached); and an evaluation gate compares candidate and active model in the same run on the
//! same data: the curated dev split decides, held-out corrections are reported beside it.

pub mod report;

use std::path::{Path, PathBuf};

use candle_core::Tensor;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::intent::{IntentTree, TaxonomyError};
use crate::model::classifier::{Classifier, ClassifierError};
use crate::model::encoder::EncoderOptions;
use crate::model::head::HeadTraining;
use crate::model::source::HubOptions;
use crate::store::{AddedIntent, Correction};
use crate::ticket::Ticket;
use crate::train::cache::EmbeddingCache;
use crate::train::dataset::{self, CsvColumns, DatasetError, Example, CORRECTION_PREFIX};
use crate::train::eval::Report;
use crate::train::finetune::FineTune;
use crate::train::trainer::{self, Progress, TrainError, TrainOptions, TrainSets};

/// Errors of retraining.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Data files are wrong.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The taxonomy with added intents is wrong.
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    /// The candidate does not load.
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    /// Numerical failure.
    #[error("evaluating: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Where retraining finds its data and how it trains.
#[derive(Debug, Clone)]
pub struct LearnSettings {
    /// The curated base training data.
    pub base_data: PathBuf,
    /// The curated dev split: the gate.
    pub dev_data: PathBuf,
    /// Directory of model versions.
    pub registry: PathBuf,
    /// Embedding cache.
    pub cache_dir: Option<PathBuf>,
    /// Largest allowed drop of dev macro-F1 and accuracy (0.01 = one point).
    pub tolerance: f64,
    /// How many times a correction counts against one base example.
    pub correction_weight: usize,
    /// Head training settings.
    pub head: HeadTraining,
}

/// Whether a corrected ticket is held out of training (a fixed 20%, by a hash of its id).
pub fn held_out(ticket_id: &str) -> bool {
    let mut h = Sha256::new();
    h.update(b"correction-split:");
    h.update(ticket_id.as_bytes());
    h.finalize()[0] < 51
}

/// Corrections as examples: (training share, held-out share).
pub fn correction_examples(corrections: &[Correction]) -> (Vec<Example>, Vec<Example>) {
    let mut train = Vec::new();
    let mut held = Vec::new();
    for c in corrections {
        let ticket = Ticket {
            subject: c.subject.clone(),
            body: c.body.clone(),
            ..Default::default()
        };
        let e = Example {
            id: format!("{CORRECTION_PREFIX}{}", c.ticket_id),
            text: ticket.model_text(),
            intent: c.intent.clone(),
            lang: Some(c.language.clone()).filter(|l| l == "ru" || l == "en"),
            also: Vec::new(),
            line: 0,
        };
        if e.text.is_empty() {
            continue;
        }
        if held_out(&c.ticket_id) {
            held.push(e);
        } else {
            train.push(e);
        }
    }
    (train, held)
}

/// The active model's taxonomy with the intents added through the API.
pub fn taxonomy(active: &IntentTree, added: &[AddedIntent]) -> Result<IntentTree, TaxonomyError> {
    let nodes: Vec<(String, String, String)> = added
        .iter()
        .filter(|a| !active.contains(&a.id))
        .map(|a| (a.id.clone(), a.en.clone(), a.ru.clone()))
        .collect();
    if nodes.is_empty() {
        Ok(active.clone())
    } else {
        active.with_added(&nodes)
    }
}

/// Scores of one model on one data set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Scores {
    /// Examples.
    pub n: usize,
    /// Accuracy of the top label.
    pub accuracy: f64,
    /// Macro-F1 over the labels present.
    pub macro_f1: f64,
    /// Share of these (in-scope) examples the model's out-of-scope detector rejects; absent
    /// without a detector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_scope_rejected: Option<f64>,
}

impl Scores {
    fn of(r: &Report, n: usize, out_of_scope_rejected: Option<f64>) -> Self {
        Self {
            n,
            accuracy: r.accuracy,
            macro_f1: r.macro_f1,
            out_of_scope_rejected,
        }
    }
}

/// The share of `texts` (embedded as `emb`) that `model`'s out-of-scope detector rejects;
/// `None` without a detector.
fn rejected_share(
    model: &Classifier,
    emb: &Tensor,
    texts: &[&str],
) -> Result<Option<f64>, LearnError> {
    let rows = model.ngram_features(texts);
    let (Some(scope), Some(scores)) = (&model.scope, model.out_of_scope(emb, rows.as_deref())?)
    else {
        return Ok(None);
    };
    let rejected = scores
        .iter()
        .filter(|&&p| scope.settings.rejects(p))
        .count();
    Ok(Some(rejected as f64 / scores.len().max(1) as f64))
}

/// Active vs candidate on one data set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Comparison {
    /// The active model.
    pub active: Scores,
    /// The candidate.
    pub candidate: Scores,
}

/// The gate's verdict and the evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Gate)]
pub struct GateReport {
    /// The candidate may replace the active model.
    pub passed: bool,
    /// Why not (empty when passed).
    pub reasons: Vec<String>,
    /// Largest allowed drop.
    pub tolerance: f64,
    /// On the curated dev split (decides).
    pub dev: Comparison,
    /// On the held-out share of corrections (reported, never decides).
    pub held_out_corrections: Comparison,
    /// Training examples: base, corrections (before weighting), weight.
    pub training: serde_json::Value,
    /// The candidate's full report on the dev split.
    pub candidate_report: Report,
}

/// What a model version was measured at, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelMetrics {
    /// A retrained candidate: the gate's verdict and evidence.
    Gate(Box<GateReport>),
    /// A model made by `train` and registered as it was: its figures on its dev split.
    Training(TrainingMetrics),
    /// Anything else a registry row holds (none, or written by another release), kept as is.
    Other(serde_json::Value),
}

/// A trained model's figures on its dev split (its metadata's `training.metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrainingMetrics {
    /// Accuracy of the top label.
    pub accuracy: f64,
    /// Macro-F1 over the labels present.
    pub macro_f1: f64,
    /// Expected calibration error.
    #[serde(default)]
    pub ece: f64,
    /// Per language.
    #[serde(default)]
    pub per_language: std::collections::BTreeMap<String, crate::train::eval::LanguageScore>,
}

impl ModelMetrics {
    /// Reads stored metrics: the gate report, training figures, or kept as they are.
    pub fn read(value: serde_json::Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or(Self::Other(value))
    }

    /// Dev macro-F1: the candidate's for a gated model, the training figure otherwise.
    pub fn dev_macro_f1(&self) -> Option<f64> {
        match self {
            Self::Gate(g) => Some(g.dev.candidate.macro_f1),
            Self::Training(t) => Some(t.macro_f1),
            Self::Other(_) => None,
        }
    }

    /// The evaluation report kept with the metrics (a gated candidate's, on the dev split).
    pub fn report(&self) -> Option<&Report> {
        match self {
            Self::Gate(g) => Some(&g.candidate_report),
            _ => None,
        }
    }

    /// The schema: the gate report, training figures, or (rows of other releases) anything.
    pub fn schema() -> utoipa::openapi::schema::Schema {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Ref};
        AnyOfBuilder::new()
            .item(Ref::from_schema_name("Gate"))
            .item(Ref::from_schema_name("TrainingMetrics"))
            .item(ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::AnyValue))
            .description(Some(
                "For retrained candidates the gate report; for models registered as trained, their dev-split figures.",
            ))
            .build()
            .into()
    }
}

/// A trained and evaluated candidate.
#[derive(Debug)]
pub struct Candidate {
    /// Registry id.
    pub id: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Hash of everything it was trained on.
    pub data_hash: String,
    /// The gate.
    pub gate: GateReport,
    /// The loaded candidate (sharing the active encoder when the base is the same).
    pub classifier: Classifier,
}

/// Probabilities of `c` in the label order `labels` (labels it lacks get 0).
fn in_label_space(c: &Classifier, probs: Vec<Vec<f32>>, labels: &[String]) -> Vec<Vec<f32>> {
    let map: Vec<Option<usize>> = labels
        .iter()
        .map(|l| c.meta.labels.iter().position(|x| x == l))
        .collect();
    probs
        .into_iter()
        .map(|p| map.iter().map(|m| m.map_or(0.0, |i| p[i])).collect())
        .collect()
}

/// Scores active and candidate on `examples` in the candidate's label space.
fn compare(
    active: &Classifier,
    candidate: &Classifier,
    examples: &[Example],
    cache: &EmbeddingCache,
) -> Result<(Comparison, Report), LearnError> {
    let labels = &candidate.meta.labels;
    if examples.is_empty() {
        let empty = Scores {
            n: 0,
            accuracy: 0.0,
            macro_f1: 0.0,
            out_of_scope_rejected: None,
        };
        return Ok((
            Comparison {
                active: empty.clone(),
                candidate: empty,
            },
            crate::train::eval::evaluate(labels, &[]),
        ));
    }
    let cand_emb = cache.embed(&candidate.encoder, examples, &trainer::Silent)?;
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let cand = candidate.probabilities(&cand_emb, &texts)?;
    let act_emb = if std::sync::Arc::ptr_eq(&active.encoder, &candidate.encoder) {
        cand_emb.clone()
    } else {
        cache.embed(&active.encoder, examples, &trainer::Silent)?
    };
    let act = active.probabilities(&act_emb, &texts)?;
    let act = in_label_space(active, act, labels);
    let th = &candidate.thresholds;
    let tree = &candidate.tree;
    let ra = trainer::score(tree, labels, th, examples, &act);
    let rc = trainer::score(tree, labels, th, examples, &cand);
    Ok((
        Comparison {
            active: Scores::of(
                &ra,
                examples.len(),
                rejected_share(active, &act_emb, &texts)?,
            ),
            candidate: Scores::of(
                &rc,
                examples.len(),
                rejected_share(candidate, &cand_emb, &texts)?,
            ),
        },
        rc,
    ))
}

/// Trains a candidate from the active model's base encoder on the base data plus corrections,
/// writes it into the registry and runs the gate.
pub fn retrain(
    active: &Classifier,
    added: &[AddedIntent],
    corrections: &[Correction],
    settings: &LearnSettings,
    fine_tune: Option<FineTune>,
    parent_id: &str,
    progress: &dyn Progress,
) -> Result<Candidate, LearnError> {
    let tree = taxonomy(&active.tree, added)?;
    let labels = dataset::taxonomy_labels(&tree);
    let columns = CsvColumns::default();
    let (base, out_of_scope) =
        dataset::split_out_of_scope(dataset::load(&settings.base_data, &columns, true)?);
    dataset::check_labels(&base, &labels, &settings.base_data)?;
    let (dev, dev_out_of_scope) =
        dataset::split_out_of_scope(dataset::load(&settings.dev_data, &columns, true)?);
    dataset::check_labels(&dev, &labels, &settings.dev_data)?;
    let owned: Vec<Correction> = corrections
        .iter()
        .filter(|c| labels.contains(&c.intent))
        .cloned()
        .collect();
    let (train_corr, held) = correction_examples(&owned);
    let weight = settings.correction_weight.max(1);
    let extra: Vec<Example> = train_corr
        .iter()
        .flat_map(|e| {
            (0..weight).map(move |k| Example {
                id: format!("{}#{k}", e.id),
                ..e.clone()
            })
        })
        .collect();

    let mut h = Sha256::new();
    h.update(std::fs::read(&settings.base_data).unwrap_or_default());
    h.update(std::fs::read(&settings.dev_data).unwrap_or_default());
    for c in &owned {
        h.update(format!("{}\u{1}{}\u{1}{}\u{1}", c.ticket_id, c.intent, c.body).as_bytes());
    }
    for a in added {
        h.update(a.id.as_bytes());
    }
    // The settings that shape the model, the active model's view and detector included.
    h.update(format!("{weight}:{:?}", settings.head).as_bytes());
    let rejection = active.meta.out_of_scope.map(|s| s.rejection);
    let also_false_rate = active
        .meta
        .also
        .as_ref()
        .map_or(crate::train::also::DEFAULT_FALSE_RATE, |a| a.false_rate);
    h.update(format!("{:?}:{rejection:?}:{also_false_rate}", active.meta.ngrams).as_bytes());
    h.update(format!("{:?}:{fine_tune:?}", active.meta.head).as_bytes());
    let data_hash = crate::import::hex(&h.finalize());
    // Time-ordered and unique even for two runs on the same data in one second.
    let id = format!(
        "m-{}-{}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        &uuid::Uuid::now_v7().simple().to_string()[26..]
    );
    let out = settings.registry.join(&id);
    let training = serde_json::json!({
        "base": base.len(),
        "out_of_scope": out_of_scope.len(),
        "corrections": train_corr.len(),
        "held_out_corrections": held.len(),
        "correction_weight": weight,
        "added_intents": added.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
    });
    let sets = TrainSets {
        train: base,
        extra,
        dev: dev.clone(),
        out_of_scope,
        dev_out_of_scope,
        multi: Vec::new(),
        tree,
        labels,
        record: serde_json::json!({
            "base_data": settings.base_data.display().to_string(),
            "dev": settings.dev_data.display().to_string(),
            "data_hash": data_hash,
            "parent": parent_id,
            "training": training,
        }),
    };
    let opts = TrainOptions {
        data: settings.base_data.clone(),
        dev: Some(settings.dev_data.clone()),
        taxonomy: None,
        base: active
            .dir
            .join(&active.meta.base.path)
            .display()
            .to_string(),
        out: out.clone(),
        head: HeadTraining {
            kind: active.meta.head,
            ..settings.head
        },
        thresholds: active.meta.thresholds.clone(),
        // Tuned again for the new head where the active model's were.
        node_thresholds: active
            .meta
            .training
            .get("node_thresholds")
            .is_some_and(|r| !r.is_null()),
        encoder: EncoderOptions {
            max_tokens: Some(active.encoder.text().max_tokens()),
            linear: active.encoder.linear_mode(),
            ..EncoderOptions::default()
        },
        hub: HubOptions::default(),
        cache_dir: settings.cache_dir.clone(),
        columns,
        fine_tune,
        ngrams: active.meta.ngrams,
        scope_rejection: active
            .meta
            .out_of_scope
            .map_or(crate::train::scope::DEFAULT_REJECTION, |s| s.rejection),
        multi_intent: None,
        also_false_rate,
        preloaded: Some((active.encoder_hash.clone(), active.encoder.clone())),
    };
    let outcome = trainer::train_sets(&opts, sets, progress)?;
    trainer::checkpoint(progress)?;
    progress.stage("gating", 0);
    let candidate = Classifier::load_sharing(&outcome.out, &opts.encoder, &[active])?;
    let cache = EmbeddingCache::new(
        settings.cache_dir.clone(),
        &candidate.encoder_hash,
        &candidate.encoder,
    );
    let (dev_cmp, report) = compare(active, &candidate, &dev, &cache)?;
    let (held_cmp, _) = compare(active, &candidate, &held, &cache)?;
    let tol = settings.tolerance;
    let mut reasons = Vec::new();
    let (a, c) = (&dev_cmp.active, &dev_cmp.candidate);
    if c.macro_f1 < a.macro_f1 - tol {
        reasons.push(format!(
            "dev macro-F1 would drop from {:.3} to {:.3} (tolerance {tol})",
            a.macro_f1, c.macro_f1
        ));
    }
    if c.accuracy < a.accuracy - tol {
        reasons.push(format!(
            "dev accuracy would drop from {:.3} to {:.3} (tolerance {tol})",
            a.accuracy, c.accuracy
        ));
    }
    match (a.out_of_scope_rejected, c.out_of_scope_rejected) {
        (Some(_), None) => reasons.push(
            "the candidate has no out-of-scope detector (its base data has no examples labelled \
             out_of_scope); the active model has one"
                .to_string(),
        ),
        (a_rej, Some(c_rej)) if c_rej > a_rej.unwrap_or(0.0) + tol => reasons.push(format!(
            "the out-of-scope detector would reject {:.3} of the in-scope dev tickets, not {:.3} \
             (tolerance {tol})",
            c_rej,
            a_rej.unwrap_or(0.0)
        )),
        _ => {}
    }
    Ok(Candidate {
        id,
        dir: outcome.out,
        data_hash,
        gate: GateReport {
            passed: reasons.is_empty(),
            reasons,
            tolerance: tol,
            dev: dev_cmp,
            held_out_corrections: held_cmp,
            training,
            candidate_report: report,
        },
        classifier: candidate,
    })
}

/// A registry directory next to a database file: `<db dir>/models`.
pub fn default_registry(database: &Path) -> PathBuf {
    database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(
            || PathBuf::from("models-registry"),
            |p| p.join("models-registry"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_metrics_read_as_their_kind_and_write_back_the_same() {
        let training = serde_json::json!({"accuracy": 0.9, "macro_f1": 0.88, "ece": 0.03,
            "per_language": {"en": {"n": 10, "accuracy": 0.9, "macro_f1": 0.88}}});
        let m = ModelMetrics::read(training.clone());
        assert!(matches!(m, ModelMetrics::Training(_)), "{m:?}");
        assert_eq!(m.dev_macro_f1(), Some(0.88));
        assert_eq!(serde_json::to_value(&m).unwrap(), training);
        for other in [serde_json::Value::Null, serde_json::json!({"loss": 1})] {
            let m = ModelMetrics::read(other.clone());
            assert_eq!(m, ModelMetrics::Other(other.clone()));
            assert_eq!(m.dev_macro_f1(), None);
            assert_eq!(serde_json::to_value(&m).unwrap(), other);
        }
    }

    #[test]
    fn the_held_out_share_is_fixed_and_about_a_fifth() {
        let held = (0..2000).filter(|i| held_out(&format!("T-{i}"))).count();
        assert!((300..500).contains(&held), "{held}");
        assert_eq!(held_out("T-7"), held_out("T-7"));
    }

    #[test]
    fn corrections_split_into_training_and_held_out_examples() {
        let cs: Vec<Correction> = (0..50)
            .map(|i| Correction {
                ticket_id: format!("T-{i}"),
                subject: Some("Оплата".into()),
                body: format!("Хочу оплатить биткоином заказ {i}"),
                intent: "billing.crypto".into(),
                language: "ru".into(),
            })
            .collect();
        let (train, held) = correction_examples(&cs);
        assert_eq!(train.len() + held.len(), 50);
        assert!(!held.is_empty() && !train.is_empty());
        assert!(held.iter().all(|e| e.ticket_id().is_some_and(held_out)));
        assert!(
            train[0].text.starts_with("Оплата\nХочу оплатить"),
            "{}",
            train[0].text
        );
    }

    #[test]
    fn added_intents_extend_the_taxonomy() {
        let tree = IntentTree::from_labels(&["billing.refund", "tech.bug"]);
        let added = vec![AddedIntent {
            id: "billing.crypto".into(),
            en: "Paying in crypto".into(),
            ru: "Оплата криптовалютой".into(),
            author: "ann".into(),
            created_at: chrono::Utc::now(),
        }];
        let t = taxonomy(&tree, &added).unwrap();
        // Existing labels keep their order; new ones come last.
        assert_eq!(
            dataset::taxonomy_labels(&t),
            vec!["billing.refund", "tech.bug", "billing.crypto"]
        );
    }
}
