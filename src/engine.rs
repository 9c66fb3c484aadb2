//! The one place that wires the stages: ticket -> model text -> language -> classifier
//! (tokens, batch, encoder, head) -> intent chain. Shared by the CLI and (later) the HTTP API.

use serde::{Deserialize, Serialize};

use crate::batch::BatchLimits;
use crate::decision::Decision;
use crate::intent::Resolution;
use crate::lang::{self, Language};
use crate::model::classifier::{Classifier, ClassifierError};
use crate::rules::decide::{decide, Facts};
use crate::rules::RuleSet;
use crate::ticket::Ticket;

/// The classification of one ticket, as the CLI prints it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// Ticket id, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Resolved intent, chain, top-k and margin.
    #[serde(flatten)]
    pub resolution: Resolution,
    /// `ru`, `en` or `other` (or the ticket's given language).
    pub language: String,
    /// Confidence of the language (1 when given).
    pub language_confidence: f32,
    /// Russian typed in Latin letters.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transliterated: bool,
}

/// Engine settings.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// How many labels to list in `top_k`.
    pub top_k: usize,
    /// Batch limits for the encoder.
    pub limits: BatchLimits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            top_k: 3,
            limits: BatchLimits::default(),
        }
    }
}

/// Classifies tickets with a loaded classifier.
#[derive(Debug)]
pub struct Engine {
    classifier: Classifier,
    opts: EngineOptions,
}

impl Engine {
    /// Wraps a classifier.
    pub fn new(classifier: Classifier, opts: EngineOptions) -> Self {
        Self { classifier, opts }
    }

    /// The classifier.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Classifies tickets and applies the rules: one (classification, decision) per ticket.
    pub fn route(
        &self,
        tickets: &[Ticket],
        rules: &RuleSet,
    ) -> Result<Vec<(Classification, Decision)>, ClassifierError> {
        let classifications = self.classify(tickets)?;
        Ok(tickets
            .iter()
            .zip(classifications)
            .map(|(ticket, c)| {
                let facts = Facts {
                    ticket,
                    intent: &c.resolution,
                    language: &c.language,
                };
                let d = decide(rules, &facts);
                (c, d)
            })
            .collect())
    }

    /// Classifies tickets, results in input order.
    pub fn classify(&self, tickets: &[Ticket]) -> Result<Vec<Classification>, ClassifierError> {
        // Detect once per ticket: the language reported and the transliteration fix both use it.
        let cleaned: Vec<(String, Language)> = tickets
            .iter()
            .map(|t| {
                let text = t.clean_text();
                let detected = lang::detect(&text);
                (text, detected)
            })
            .collect();
        let texts: Vec<String> = cleaned
            .iter()
            .map(|(t, l)| {
                if l.transliterated {
                    lang::to_cyrillic(t)
                } else {
                    t.clone()
                }
            })
            .collect();
        let probs = self.classifier.classify_texts(&texts, self.opts.limits)?;
        let meta = &self.classifier.meta;
        let resolver = self
            .classifier
            .tree
            .resolver(&meta.labels, &meta.thresholds);
        Ok(tickets
            .iter()
            .zip(cleaned.into_iter().zip(probs))
            .map(|(ticket, ((_, detected), p))| {
                let language = lang::prefer_given(ticket.language.as_deref(), detected);
                Classification {
                    id: ticket.id.clone(),
                    resolution: resolver.resolve(&p, self.opts.top_k),
                    language: language.code,
                    language_confidence: language.confidence,
                    transliterated: language.transliterated,
                }
            })
            .collect())
    }
}
