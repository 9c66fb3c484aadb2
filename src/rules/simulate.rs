//! Simulation of a candidate ruleset: the same tickets decided by the active rules and by the
//! candidate, what changes per ticket, and the totals per team, priority and status. Pure: the
//! caller supplies the tickets and their classification (given now, or as logged).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::decide::{decide, Facts};
use super::{Assignee, RuleSet};
use crate::decision::Decision;
use crate::intent::Resolution;
use crate::ticket::Ticket;

/// One ticket to decide both ways.
pub struct Case {
    /// The ticket (its text may be gone past retention).
    pub ticket: Ticket,
    /// Its classification.
    pub resolution: Resolution,
    /// Its language.
    pub language: String,
    /// The time the rules see.
    pub received_at: DateTime<Utc>,
    /// The logged decision it comes from, if any.
    pub decision_id: Option<String>,
    /// Whether its text was purged (rules on the text see none).
    pub text_missing: bool,
    /// Whether its customer facts and fields were purged (rules on them see none).
    pub facts_missing: bool,
    /// The incident it was linked to while routed.
    pub incident: Option<String>,
}

/// What one ruleset decided for one ticket.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Outcome {
    /// Team.
    pub team: Option<String>,
    /// The agent, or `(round-robin)`, `(least-loaded)`, `(none)`.
    pub assignee: Option<String>,
    /// Status.
    pub status: &'static str,
    /// Priority.
    pub priority: &'static str,
    /// Tags.
    pub tags: Vec<String>,
    /// The rules that fired.
    pub rule_ids: Vec<String>,
}

impl From<Decision> for Outcome {
    fn from(d: Decision) -> Self {
        Self {
            team: d.team,
            assignee: d.assignee.map(|a| match a {
                Assignee::Agent(a) => a,
                Assignee::RoundRobin => "(round-robin)".into(),
                Assignee::LeastLoaded => "(least-loaded)".into(),
                Assignee::Nobody => "(none)".into(),
            }),
            status: d.status.name(),
            priority: d.priority.name(),
            tags: d.tags,
            rule_ids: d.rule_ids,
        }
    }
}

/// How many tickets a value had before and after.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Count {
    /// With the active rules.
    pub before: usize,
    /// With the candidate.
    pub after: usize,
}

/// One ticket's result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaseResult {
    /// The ticket.
    pub ticket_id: Option<String>,
    /// The logged decision it comes from, if any.
    pub decision_id: Option<String>,
    /// Its intent.
    pub intent: String,
    /// Whether its text was purged.
    pub text_missing: bool,
    /// Whether its customer facts and fields were purged.
    pub facts_missing: bool,
    /// Which of team, assignee, status, priority, tags changed.
    pub changed: Vec<&'static str>,
    /// With the active rules.
    pub before: Outcome,
    /// With the candidate.
    pub after: Outcome,
}

/// Totals over the tickets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// Tickets decided.
    pub tickets: usize,
    /// Tickets whose decision changed.
    pub changed: usize,
    /// Tickets whose text was purged.
    pub text_missing: usize,
    /// Tickets whose customer facts and fields were purged.
    pub facts_missing: usize,
    /// Per team (`(none)` for no team).
    pub teams: BTreeMap<String, Count>,
    /// Per priority.
    pub priorities: BTreeMap<String, Count>,
    /// Per status.
    pub statuses: BTreeMap<String, Count>,
}

/// The simulation's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Simulation {
    /// The active version compared with.
    pub compared_with_version: String,
    /// The candidate's compile warnings.
    pub warnings: Vec<String>,
    /// Totals.
    pub summary: Summary,
    /// Per ticket, in order.
    pub results: Vec<CaseResult>,
}

fn tally(map: &mut BTreeMap<String, Count>, before: &str, after: &str) {
    map.entry(before.to_string()).or_default().before += 1;
    map.entry(after.to_string()).or_default().after += 1;
}

fn outcome(rules: &RuleSet, c: &Case) -> Outcome {
    Outcome::from(decide(
        rules,
        &Facts {
            ticket: &c.ticket,
            intent: &c.resolution,
            language: &c.language,
            received_at: c.received_at,
            incident: c.incident.as_deref(),
        },
    ))
}

/// Decides every case with the active rules and the candidate and reports the differences.
pub fn compare(
    active: &RuleSet,
    candidate: &RuleSet,
    cases: &[Case],
    warnings: &[String],
    active_version: i64,
) -> Simulation {
    let mut summary = Summary {
        tickets: cases.len(),
        changed: 0,
        text_missing: cases.iter().filter(|c| c.text_missing).count(),
        facts_missing: cases.iter().filter(|c| c.facts_missing).count(),
        teams: BTreeMap::new(),
        priorities: BTreeMap::new(),
        statuses: BTreeMap::new(),
    };
    let results = cases
        .iter()
        .map(|c| {
            let (before, after) = (outcome(active, c), outcome(candidate, c));
            let changed: Vec<&'static str> = [
                ("team", before.team != after.team),
                ("assignee", before.assignee != after.assignee),
                ("status", before.status != after.status),
                ("priority", before.priority != after.priority),
                ("tags", before.tags != after.tags),
            ]
            .into_iter()
            .filter_map(|(what, differs)| differs.then_some(what))
            .collect();
            summary.changed += usize::from(!changed.is_empty());
            let none = "(none)".to_string();
            tally(
                &mut summary.teams,
                before.team.as_ref().unwrap_or(&none),
                after.team.as_ref().unwrap_or(&none),
            );
            tally(&mut summary.priorities, before.priority, after.priority);
            tally(&mut summary.statuses, before.status, after.status);
            CaseResult {
                ticket_id: c.ticket.id.clone(),
                decision_id: c.decision_id.clone(),
                intent: c.resolution.intent.clone(),
                text_missing: c.text_missing,
                facts_missing: c.facts_missing,
                changed,
                before,
                after,
            }
        })
        .collect();
    Simulation {
        compared_with_version: active_version.to_string(),
        warnings: warnings.to_vec(),
        summary,
        results,
    }
}
