//! The learning loop's inputs: agents' corrections of logged decisions and intents added to
//! the taxonomy, checked against the taxonomy (the active model's plus the added intents) and
//! the active rules before they are stored.

use std::sync::Arc;

use chrono::Utc;

use crate::intent::{IntentTree, TaxonomyError};
use crate::learn::{self, report};
use crate::rules::live::LiveRules;
use crate::serving::LiveModels;
use crate::store::{AddedIntent, Feedback, Store, StoreError};
use crate::train::dataset::taxonomy_labels;

/// Why a correction or a new intent was refused; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// The request names something wrong (the message says what, and where).
    #[error("{0}")]
    Invalid(String),
    /// The intent is in the taxonomy already.
    #[error("intent \"{0}\" is already in the taxonomy")]
    IntentExists(String),
    /// The database failed, or has no such decision.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored taxonomy additions do not fit the active model's taxonomy.
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
}

/// An agent's correction of a logged decision.
#[derive(Debug, Clone)]
pub struct Correction {
    /// The decision corrected.
    pub decision_id: Option<String>,
    /// Or the ticket: its latest decision is corrected.
    pub ticket_id: Option<String>,
    /// The right intent (a leaf of the taxonomy).
    pub intent: Option<String>,
    /// The right team.
    pub team: Option<String>,
    /// The right agent.
    pub assignee: Option<String>,
    /// Who corrected it.
    pub agent: String,
}

/// A stored correction.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// As stored (the first one, when the same correction came before).
    pub stored: Feedback,
    /// False when the same correction was stored before.
    pub created: bool,
    /// The intent a team correction stands for, when the rules give the team one intent.
    pub label_from_team: Option<String>,
}

/// Corrections and taxonomy additions; cheap to clone (handles only).
#[derive(Clone)]
pub struct FeedbackService {
    store: Arc<Store>,
    models: LiveModels,
    rules: LiveRules,
}

impl FeedbackService {
    /// The service over the live model and rules, storing in `store`.
    pub fn new(store: Arc<Store>, models: LiveModels, rules: LiveRules) -> Self {
        Self {
            store,
            models,
            rules,
        }
    }

    /// The active model's taxonomy plus the intents added since.
    pub async fn taxonomy(&self) -> Result<IntentTree, FeedbackError> {
        let added = self.store.added_intents().await?;
        Ok(learn::taxonomy(
            &self.models.active().engine.classifier().tree,
            &added,
        )?)
    }

    /// Checks and stores a correction by `author` (the caller); the same correction again
    /// returns the first.
    pub async fn correct(&self, c: Correction, author: String) -> Result<Recorded, FeedbackError> {
        if c.agent.trim().is_empty() {
            return Err(FeedbackError::Invalid(
                "agent: say who corrected the decision".into(),
            ));
        }
        if c.intent.is_none() && c.team.is_none() && c.assignee.is_none() {
            return Err(FeedbackError::Invalid(
                "give at least one of correct_intent, correct_team, correct_assignee".into(),
            ));
        }
        let (_, mut f) = self
            .store
            .decision_for_feedback(c.decision_id.as_deref(), c.ticket_id.as_deref())
            .await?;
        if let (Some(d), Some(t)) = (&c.decision_id, &c.ticket_id) {
            if *t != f.ticket_id {
                return Err(FeedbackError::Invalid(format!(
                    "decision {d} is about ticket {}, not {t}",
                    f.ticket_id
                )));
            }
        }
        let tree = self.taxonomy().await?;
        let labels = taxonomy_labels(&tree);
        if let Some(intent) = &c.intent {
            if !labels.contains(intent) {
                let known = crate::intent::closest_known(&labels, intent);
                let hint = if tree.contains(intent) {
                    format!("\"{intent}\" is a group; name one of its leaves")
                } else {
                    format!("unknown intent \"{intent}\" (add it first with POST /v1/intents)")
                };
                return Err(FeedbackError::Invalid(format!(
                    "correct_intent: {hint}; known: {known}"
                )));
            }
        }
        // A team correction is a rules signal; it is also a label when the team stands for one
        // intent.
        let label_from_team = match (&c.intent, &c.team) {
            (None, Some(team)) => report::team_intent(&self.rules.current().ruleset, team, &labels),
            _ => None,
        };
        f.agent = c.agent.trim().to_string();
        f.author = author;
        f.correct_intent = c.intent.or(label_from_team.clone());
        f.correct_team = c.team;
        f.correct_assignee = c.assignee;
        let (stored, created) = self.store.insert_feedback(&f).await?;
        Ok(Recorded {
            stored,
            created,
            label_from_team,
        })
    }

    /// Adds an intent to the taxonomy: corrections to it are accepted at once, and the next
    /// retraining learns it.
    pub async fn add_intent(
        &self,
        id: &str,
        en: &str,
        ru: &str,
        author: String,
    ) -> Result<AddedIntent, FeedbackError> {
        let tree = self.taxonomy().await?;
        let labels = taxonomy_labels(&tree);
        let id = id.trim().to_string();
        if tree.contains(&id) {
            return Err(FeedbackError::IntentExists(id));
        }
        if en.trim().is_empty() || ru.trim().is_empty() {
            return Err(FeedbackError::Invalid(
                "en, ru: describe the intent in English and Russian".into(),
            ));
        }
        if let Some((parent, _)) = id.rsplit_once('.') {
            if labels.iter().any(|l| l == parent) {
                return Err(FeedbackError::Invalid(format!(
                    "id: \"{parent}\" is a leaf that tickets are labelled with; add \"{id}\" as a sibling under its parent instead"
                )));
            }
        }
        let added = AddedIntent {
            id,
            en: en.trim().to_string(),
            ru: ru.trim().to_string(),
            author,
            created_at: Utc::now(),
        };
        // Validates the id and the parent like a taxonomy file.
        learn::taxonomy(&tree, std::slice::from_ref(&added))
            .map_err(|e| FeedbackError::Invalid(format!("id: {e}")))?;
        // Another replica may have added it since the taxonomy was read.
        if !self.store.add_intent(&added).await? {
            return Err(FeedbackError::IntentExists(added.id));
        }
        Ok(added)
    }
}
