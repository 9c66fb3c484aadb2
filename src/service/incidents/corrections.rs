//! People's corrections of incidents: unlink, merge, unmerge, split; the centroids computed
//! again after them; the linking report.

use chrono::Utc;

use super::{IncidentInfo, IncidentService};
use crate::incident::report::LinkReport;
use crate::incident::track::common_intent;
use crate::incident::{Embedding, TrackedIncident};
use crate::store::{IncidentLink, IncidentStatus, StoreError, StoredIncident};

/// Why a correction of an incident was refused.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    /// The database failed, or the incident is not there.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A list of ids was empty.
    #[error("{field}: give at least one id")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A decision given is not linked to the incident.
    #[error("decision {decision} is not linked to incident {incident}")]
    NotLinked {
        /// The decision.
        decision: String,
        /// The incident.
        incident: String,
    },
    /// The incident was merged into another (its tickets are there).
    #[error("incident {incident} was merged into {into}: correct that one, or unmerge it first")]
    Merged {
        /// The incident.
        incident: String,
        /// Where it went.
        into: String,
    },
    /// An unmerge of an incident that is not merged.
    #[error("incident {0} is not merged into another")]
    NotMerged(String),
    /// A merge of an incident into itself.
    #[error("incident {0} cannot be merged into itself")]
    IntoItself(String),
    /// A merge into an incident that takes no tickets.
    #[error("incident {incident} is {}: set it open or acknowledged before merging others into it", .status.name())]
    Closed {
        /// The incident.
        incident: String,
        /// Its status.
        status: IncidentStatus,
    },
    /// A merge of incidents whose intents share nothing.
    #[error("incident {source_id} ({theirs}) and incident {target} ({ours}) share no intent; an incident takes the tickets of one intent and those under it")]
    Unrelated {
        /// The incident merged.
        source_id: String,
        /// Its intent.
        theirs: String,
        /// The incident it would go into.
        target: String,
        /// Its intent.
        ours: String,
    },
    /// A split of all an incident's tickets.
    #[error(
        "a split leaves at least one ticket in incident {incident} (all {tickets} were given)"
    )]
    SplitAll {
        /// The incident.
        incident: String,
        /// Its tickets.
        tickets: usize,
    },
}

/// The intent's usual tickets a remodelled incident is compared with (the newest ones).
const USUAL_SAMPLE: i64 = 300;

/// Tries at remodelling an incident whose tickets keep changing meanwhile.
const REMODEL_TRIES: usize = 3;

impl IncidentService {
    /// Unlinks tickets an agent says are not the incident's (recorded for the linking report;
    /// they never join it again); its centroid is computed again from the tickets left.
    pub async fn unlink(
        &self,
        id: &str,
        decisions: &[String],
    ) -> Result<IncidentInfo, IncidentError> {
        let decisions = listed("decisions", decisions)?;
        self.store.incident(id).await?;
        linked_to(&self.store.incident_links(id).await?, id, &decisions)?;
        self.store.unlink_tickets(id, &decisions).await?;
        self.settle(&[id]).await;
        Ok(self.get(id).await?)
    }

    /// Merges incidents into `id`: their tickets move there (each remembering where from, so
    /// the merge can be undone), they take no more tickets, and `id` takes the intent they
    /// share and their languages; its centroid is computed again.
    pub async fn merge(&self, id: &str, from: &[String]) -> Result<IncidentInfo, IncidentError> {
        let from = listed("incidents", from)?;
        if from.iter().any(|f| f == id) {
            return Err(IncidentError::IntoItself(id.to_string()));
        }
        let target = self.store.incident(id).await?;
        not_merged(&target)?;
        if !target.status.is_live() {
            return Err(IncidentError::Closed {
                incident: id.to_string(),
                status: target.status,
            });
        }
        let mut intent = target.tracked.intent.clone();
        for f in &from {
            let source = self.store.incident(f).await?;
            not_merged(&source)?;
            let theirs = source.tracked.intent;
            intent = common_intent(&intent, &theirs).ok_or_else(|| IncidentError::Unrelated {
                source_id: f.clone(),
                theirs,
                target: id.to_string(),
                ours: intent.clone(),
            })?;
        }
        self.store.merge_incidents(id, &from).await?;
        self.settle(&[id]).await;
        Ok(self.get(id).await?)
    }

    /// Undoes the merge of `id`: the tickets that came from it go back to it, and it takes
    /// tickets again (as its status allows); both centroids are computed again.
    pub async fn unmerge(&self, id: &str) -> Result<IncidentInfo, IncidentError> {
        if self.store.incident(id).await?.merged_into.is_none() {
            return Err(IncidentError::NotMerged(id.to_string()));
        }
        let target = self.store.unmerge_incident(id).await?;
        self.settle(&[id, &target]).await;
        Ok(self.get(id).await?)
    }

    /// Moves some of an incident's tickets to a new incident (open, the same intent and
    /// language, the same detection); both centroids are computed again. Returns the new one.
    pub async fn split(
        &self,
        id: &str,
        decisions: &[String],
    ) -> Result<IncidentInfo, IncidentError> {
        let decisions = listed("decisions", decisions)?;
        let source = self.store.incident(id).await?;
        not_merged(&source)?;
        let links = self.store.incident_links(id).await?;
        linked_to(&links, id, &decisions)?;
        if decisions.len() == links.len() {
            return Err(IncidentError::SplitAll {
                incident: id.to_string(),
                tickets: links.len(),
            });
        }
        let now = crate::store::now();
        let new = StoredIncident {
            tracked: TrackedIncident {
                id: uuid::Uuid::now_v7().to_string(),
                recent: Default::default(),
                opened_at: now,
                last_at: now.max(source.tracked.last_at),
                revision: 0,
                ..source.tracked
            },
            status: IncidentStatus::Open,
            detection: source.detection,
            updated_at: now,
            merged_into: None,
            split_from: Some(id.to_string()),
            remodel_marks: 0,
            alerted_tickets: 0,
        };
        self.store.split_incident(id, &decisions, &new).await?;
        let new_id = new.tracked.id;
        self.settle(&[id, &new_id]).await;
        Ok(self.get(&new_id).await?)
    }

    /// How often people unlinked the tickets linked automatically over the past `days`, and
    /// the settings that would have left them little to unlink.
    pub async fn link_report(&self, days: i64) -> Result<LinkReport, StoreError> {
        let since = Utc::now() - chrono::Duration::days(days);
        let outcomes = self.store.link_outcomes(since).await?;
        Ok(LinkReport::of(
            &outcomes,
            self.policy.link_probability,
            self.policy.min_similarity,
        ))
    }

    /// After a correction (stored already): the changed incidents' pictures computed again
    /// and the live incidents reloaded. A failure is logged: the incidents stay marked and
    /// the watch tries again.
    async fn settle(&self, ids: &[&str]) {
        for id in ids {
            if let Err(e) = self.remodel(id).await {
                tracing::error!(
                    incident = id,
                    "computing the incident's centroid again: {e}"
                );
            }
        }
        if let Err(e) = self.reload().await {
            tracing::error!("loading the live incidents: {e}");
        }
    }

    /// An incident's picture computed again from the tickets it holds: the intent its own and
    /// the merged incidents' share (and their language, if one), the centroid of its tickets'
    /// kept embeddings, how close they and the intent's usual tickets come to it, and its
    /// tickets counted again. Saved only if its tickets did not change meanwhile (then read
    /// again, a few times).
    async fn remodel(&self, id: &str) -> Result<(), StoreError> {
        for _ in 0..REMODEL_TRIES {
            let stored = self.store.incident(id).await?;
            let origins = self.store.incident_origins(id).await?;
            let mut t = stored.tracked;
            let (own, own_language) = &origins[0];
            t.intent = origins
                .iter()
                .try_fold(own.clone(), |i, (o, _)| common_intent(&i, o))
                .unwrap_or_else(|| own.clone());
            t.language = own_language
                .clone()
                .filter(|l| origins.iter().all(|(_, o)| o.as_ref() == Some(l)));
            let members = self.store.incident_members(id).await?;
            let since = Utc::now() - self.policy.history;
            let usual = self
                .store
                .usual_vectors(&t.intent, t.language.as_deref(), since, USUAL_SAMPLE)
                .await?;
            let vectors: Vec<Embedding> = members
                .iter()
                .filter_map(|(_, v)| v.as_deref().and_then(Embedding::from_bytes))
                .collect();
            let usual: Vec<Embedding> = usual
                .iter()
                .filter_map(|b| Embedding::from_bytes(b))
                .collect();
            t.remodel(&vectors, &usual);
            let times: Vec<_> = members.iter().map(|(at, _)| *at).collect();
            t.recount(&times);
            if self
                .store
                .save_incident_model(&t, stored.remodel_marks)
                .await?
            {
                return Ok(());
            }
        }
        Err(StoreError::NotFound(format!(
            "incident {id} kept changing while its centroid was computed again; the watch tries again"
        )))
    }

    /// Computes again the incidents marked for it (by an erasure, a purge of embeddings, or a
    /// correction whose remodelling failed); a failure is logged and tried again next turn.
    pub(super) async fn remodel_marked(&self) -> Result<(), StoreError> {
        for id in self.store.incidents_to_remodel().await? {
            if let Err(e) = self.remodel(&id).await {
                tracing::error!(
                    incident = id,
                    "computing the incident's centroid again: {e}"
                );
            }
        }
        Ok(())
    }
}

/// The ids given for `field`, without repeats; at least one.
fn listed(field: &'static str, ids: &[String]) -> Result<Vec<String>, IncidentError> {
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<String> = ids.iter().filter(|i| seen.insert(*i)).cloned().collect();
    if ids.is_empty() {
        return Err(IncidentError::Empty { field });
    }
    Ok(ids)
}

/// Refuses decisions that are not among an incident's links.
fn linked_to(links: &[IncidentLink], id: &str, decisions: &[String]) -> Result<(), IncidentError> {
    let linked: std::collections::HashSet<&str> =
        links.iter().map(|l| l.decision_id.as_str()).collect();
    match decisions.iter().find(|d| !linked.contains(d.as_str())) {
        Some(d) => Err(IncidentError::NotLinked {
            decision: d.clone(),
            incident: id.to_string(),
        }),
        None => Ok(()),
    }
}

/// Refuses an incident merged into another (its tickets are there).
fn not_merged(i: &StoredIncident) -> Result<(), IncidentError> {
    match &i.merged_into {
        Some(into) => Err(IncidentError::Merged {
            incident: i.tracked.id.clone(),
            into: into.clone(),
        }),
        None => Ok(()),
    }
}
