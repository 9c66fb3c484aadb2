//! The one place that wires the stages: ticket -> model text -> language -> classifier
//! (tokens, batch, encoder, head) -> intent chain. Shared by the CLI and (later) the HTTP API.

use serde::{Deserialize, Serialize};

use crate::batch::BatchLimits;
use crate::decision::Decision;
use crate::intent::{Resolution, Thresholds};
use crate::lang::{self, Language};
use crate::model::classifier::{Classifier, ClassifierError};
use crate::rules::decide::{decide, Facts};
use crate::rules::RuleSet;
use crate::ticket::Ticket;

/// The classification of one ticket, as the CLI prints it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

    /// Classifies tickets received at `received_at` and applies the rules: one
    /// (classification, decision) per ticket.
    pub fn route(
        &self,
        tickets: &[Ticket],
        rules: &RuleSet,
        received_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(Classification, Decision)>, ClassifierError> {
        let classifications = self.classify(tickets)?;
        Ok(tickets
            .iter()
            .zip(classifications)
            .map(|(ticket, c)| {
                let d = decide_for(rules, ticket, &c, received_at, None);
                (c, d)
            })
            .collect())
    }

    /// Reads a ticket for the model: cleaned text (transliterated Russian written back in
    /// Cyrillic), the detected language, detected once, and its segments' guesses for the
    /// further-request detector.
    pub fn prepare(&self, ticket: &Ticket) -> Prepared {
        let text = ticket.clean_text();
        let detected = lang::detect(&text);
        let text = if detected.transliterated {
            lang::to_cyrillic(&text)
        } else {
            text
        };
        Prepared {
            guesses: self.classifier.guesses(&text),
            text,
            language: lang::prefer_given(ticket.language.as_deref(), detected),
        }
    }

    /// Turns a prepared ticket's label probabilities (and out-of-scope probability, where the
    /// model has a detector) into its classification under `thresholds`.
    pub fn finish(
        &self,
        ticket: &Ticket,
        prepared: Prepared,
        probs: &[f32],
        out_of_scope: Option<f32>,
        thresholds: &Thresholds,
    ) -> Classification {
        Classification {
            id: ticket.id.clone(),
            resolution: self.classifier.resolve(
                probs,
                out_of_scope,
                &prepared.guesses,
                self.opts.top_k,
                thresholds,
            ),
            language: prepared.language.code,
            language_confidence: prepared.language.confidence,
            transliterated: prepared.language.transliterated,
        }
    }

    /// Classifies tickets under the model's own thresholds, results in input order.
    pub fn classify(&self, tickets: &[Ticket]) -> Result<Vec<Classification>, ClassifierError> {
        let prepared: Vec<Prepared> = tickets.iter().map(|t| self.prepare(t)).collect();
        let texts: Vec<String> = prepared.iter().map(|p| p.text.clone()).collect();
        let scores = self.classifier.classify_texts(&texts, self.opts.limits)?;
        Ok(tickets
            .iter()
            .zip(prepared)
            .enumerate()
            .map(|(i, (ticket, p))| {
                let thresholds = &self.classifier.thresholds;
                self.finish(
                    ticket,
                    p,
                    &scores.probs[i],
                    scores.out_of_scope_of(i),
                    thresholds,
                )
            })
            .collect())
    }
}

/// A ticket as the model reads it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The text the model sees.
    pub text: String,
    /// The ticket's language (given, or detected).
    pub language: Language,
    /// Its segments' guesses for the further-request detector (see [`Classifier::guesses`]).
    pub guesses: Vec<crate::model::also::Guess>,
}

/// Applies the rules to one classified ticket (pure; see [`crate::rules::decide`]); the time
/// is the ticket's own `received_at`, or `now` when it has none.
pub fn decide_for(
    rules: &RuleSet,
    ticket: &Ticket,
    c: &Classification,
    now: chrono::DateTime<chrono::Utc>,
    incident: Option<&str>,
) -> Decision {
    decide(
        rules,
        &Facts {
            ticket,
            intent: &c.resolution,
            language: &c.language,
            received_at: ticket.received_at.unwrap_or(now),
            incident,
        },
    )
}
