//! Reports on the learning loop, computed from what the store returns (pure, no I/O): agents'
//! corrections summarised for rule authors and model owners, the review queue (which logged
//! tickets most deserve a label), and the shadow model's agreement and accuracy.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::decision::Routed;
use crate::intent::{Scored, OUT_OF_SCOPE, UNKNOWN};
use crate::rules::{Condition, RuleSet};
use crate::store::{Feedback, ShadowRow};

/// The one intent a team stands for in the rules, if exactly one: every rule that sends
/// tickets to `team` conditions on one single leaf intent, and they all name the same one.
pub fn team_intent(rules: &RuleSet, team: &str, labels: &[String]) -> Option<String> {
    let mut found: Option<String> = None;
    for r in rules
        .rules
        .iter()
        .filter(|r| r.then.team.as_deref() == Some(team))
    {
        let [Condition::Intent(nodes)] = r.when.as_slice() else {
            return None;
        };
        let [node] = nodes.as_slice() else {
            return None;
        };
        if !labels.contains(node) || found.as_ref().is_some_and(|f| f != node) {
            return None;
        }
        found = Some(node.clone());
    }
    found
}

/// The rule that set a decision's team: the last fired rule with a `team` action.
pub fn team_rule(rules: &RuleSet, fired: &[String]) -> String {
    fired
        .iter()
        .rev()
        .find(|id| {
            rules
                .rules
                .iter()
                .any(|r| &r.id == *id && r.then.team.is_some())
        })
        .cloned()
        .unwrap_or_else(|| "(defaults)".to_string())
}

/// Agents' corrections, summarised.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedbackReport {
    /// Corrections received.
    pub feedback: usize,
    /// Of them, with a right intent.
    pub intent_corrections: usize,
    /// Of those, with the ticket's text still kept: training labels.
    pub training_labels: usize,
    /// Team and assignee corrections per rule, with a suggestion.
    pub rules: Vec<RuleCorrections>,
    /// Predicted -> right intent, how often.
    pub intent_confusions: Vec<Confusion>,
}

/// The team and assignee corrections of the tickets one rule sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleCorrections {
    /// The rule that set the team (`(defaults)` when none did).
    pub rule: String,
    /// Tickets corrected.
    pub corrected: usize,
    /// Right team -> how often agents named it.
    pub right_teams: BTreeMap<String, usize>,
    /// Assignee corrections.
    pub assignee_corrections: usize,
    /// What to change, in words.
    pub suggestion: String,
}

/// One intent confusion.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = IntentConfusion)]
pub struct Confusion {
    /// What the model said.
    pub predicted: String,
    /// What the agent said.
    pub correct: String,
    /// How often.
    pub count: usize,
}

/// Summarises corrections against the active rules.
pub fn feedback_report(all: &[Feedback], rules: &RuleSet) -> FeedbackReport {
    let mut per_rule: BTreeMap<String, RuleCorrections> = BTreeMap::new();
    let mut confusions: BTreeMap<(String, String), usize> = BTreeMap::new();
    for f in all {
        if let Some(right) = f
            .correct_intent
            .as_ref()
            .filter(|r| **r != f.predicted_intent)
        {
            *confusions
                .entry((f.predicted_intent.clone(), right.clone()))
                .or_default() += 1;
        }
        if f.correct_team.is_none() && f.correct_assignee.is_none() {
            continue;
        }
        let rule = team_rule(rules, &f.rule_ids);
        let entry = per_rule
            .entry(rule.clone())
            .or_insert_with(|| RuleCorrections {
                rule,
                corrected: 0,
                right_teams: BTreeMap::new(),
                assignee_corrections: 0,
                suggestion: String::new(),
            });
        entry.corrected += 1;
        if let Some(t) = &f.correct_team {
            *entry.right_teams.entry(t.clone()).or_default() += 1;
        }
        if f.correct_assignee.is_some() {
            entry.assignee_corrections += 1;
        }
    }
    let rules = per_rule
        .into_values()
        .map(|mut r| {
            r.suggestion = suggestion(&r);
            r
        })
        .collect();
    FeedbackReport {
        feedback: all.len(),
        intent_corrections: all.iter().filter(|f| f.correct_intent.is_some()).count(),
        training_labels: all
            .iter()
            .filter(|f| f.correct_intent.is_some() && f.has_text)
            .count(),
        rules,
        intent_confusions: confusions
            .into_iter()
            .map(|((predicted, correct), count)| Confusion {
                predicted,
                correct,
                count,
            })
            .collect(),
    }
}

/// What a rule's author could change, from its corrections.
fn suggestion(r: &RuleCorrections) -> String {
    let (rule, n) = (&r.rule, r.corrected);
    match r.right_teams.iter().max_by_key(|(_, c)| **c) {
        Some((team, &c)) if c >= 3 && c * 10 >= n * 6 => format!(
            "agents moved {c} of {n} tickets from rule \"{rule}\" to team \"{team}\": consider `then.team = \"{team}\"` there, or a narrower rule before it"
        ),
        Some(_) => format!("agents disagree with rule \"{rule}\" on {n} tickets, with no single better team yet: review its conditions"),
        None => format!(
            "agents reassigned {} tickets of rule \"{rule}\": review the team's roster or strategy",
            r.assignee_corrections
        ),
    }
}

/// Body of `GET /v1/review`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Review {
    /// The tickets most worth a label first.
    pub review: Vec<ReviewItem>,
}

/// One ticket worth an agent's label.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReviewItem {
    /// The logged decision.
    pub decision_id: String,
    /// Its ticket.
    pub ticket_id: Option<String>,
    /// The intent the model gave.
    pub intent: String,
    /// Its top intents.
    pub top_k: Vec<Scored>,
    /// The margin between the top two.
    pub margin: f32,
    /// Why it is worth a label.
    pub reason: String,
}

/// The `limit` logged, uncorrected tickets most worth an agent's label: `unknown` resolutions
/// first, then disagreements with the shadow model (`shadow`: decision id -> its intent), then
/// `out_of_scope` resolutions, then the smallest margins.
pub fn review_queue(
    recent: Vec<Routed>,
    shadow: Option<&HashMap<String, String>>,
    limit: usize,
) -> Review {
    let mut items: Vec<(u8, ReviewItem)> = recent
        .into_iter()
        .filter_map(|d| {
            let decision_id = d.decision_id?;
            let intent = d.intent.resolution.intent;
            let margin = d.intent.resolution.margin;
            let shadow_intent = shadow
                .and_then(|m| m.get(&decision_id).cloned())
                .filter(|s| *s != intent);
            let (rank, reason) = if intent == UNKNOWN {
                (0, "the model did not recognise the intent".to_string())
            } else if let Some(s) = &shadow_intent {
                (1, format!("the shadow model says {s}"))
            } else if intent == OUT_OF_SCOPE {
                (2, "the model found no request to this business".to_string())
            } else {
                (
                    3,
                    format!("small margin {margin:.2} between the top intents"),
                )
            };
            let item = ReviewItem {
                decision_id,
                ticket_id: d.ticket_id,
                intent,
                top_k: d.intent.resolution.top_k,
                margin,
                reason,
            };
            Some((rank, item))
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.margin.total_cmp(&b.1.margin)));
    let review = items
        .into_iter()
        .take(limit)
        .map(|(_, item)| item)
        .collect();
    Review { review }
}

/// How a shadow model did on live traffic.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShadowReport {
    /// The shadow model.
    pub model: String,
    /// Tickets it scored.
    pub tickets: usize,
    /// Share where it agreed with the active model.
    pub agreement: Option<f64>,
    /// Of them, tickets agents corrected.
    pub corrected_tickets: usize,
    /// The active model's accuracy on those.
    pub active_accuracy_on_corrected: Option<f64>,
    /// The shadow's accuracy on those.
    pub shadow_accuracy_on_corrected: Option<f64>,
}

/// Agreement and accuracy on corrected tickets of a shadow model's rows.
pub fn shadow_report(model: &str, rows: &[ShadowRow]) -> ShadowReport {
    let ratio = |a: usize, n: usize| (n > 0).then(|| a as f64 / n as f64);
    let corrected: Vec<&ShadowRow> = rows.iter().filter(|r| r.correct.is_some()).collect();
    let right = |f: fn(&ShadowRow) -> &str| {
        corrected
            .iter()
            .filter(|r| r.correct.as_deref() == Some(f(r)))
            .count()
    };
    let agree = rows.iter().filter(|r| r.active == r.shadow).count();
    ShadowReport {
        model: model.to_string(),
        tickets: rows.len(),
        agreement: ratio(agree, rows.len()),
        corrected_tickets: corrected.len(),
        active_accuracy_on_corrected: ratio(right(|r| &r.active), corrected.len()),
        shadow_accuracy_on_corrected: ratio(right(|r| &r.shadow), corrected.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RuleSet {
        let text =
            "[[rules]]\nid = \"sales\"\nwhen.intent = \"sales\"\nthen = { team = \"sales\" }\n";
        let tree = crate::intent::IntentTree::parse(
            "[[intent]]\nid = \"sales\"\nen = \"Sales\"\nru = \"Продажи\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        crate::rules::compile::compile(text, "r.toml", &tree)
            .unwrap()
            .ruleset
    }

    fn correction(team: Option<&str>, intent: Option<&str>) -> Feedback {
        Feedback {
            feedback_id: "f".into(),
            decision_id: "d".into(),
            ticket_id: "t".into(),
            agent: "ann".into(),
            correct_intent: intent.map(str::to_string),
            correct_team: team.map(str::to_string),
            correct_assignee: None,
            predicted_intent: "sales".into(),
            predicted_team: Some("sales".into()),
            rule_ids: vec!["sales".into()],
            language: "en".into(),
            has_text: true,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_team_that_agents_keep_choosing_is_suggested_for_the_rule() {
        let mut all = vec![correction(Some("sales-emea"), None); 3];
        all.push(correction(None, Some("billing")));
        let r = feedback_report(&all, &rules());
        assert_eq!(
            (r.feedback, r.intent_corrections, r.training_labels),
            (4, 1, 1)
        );
        assert_eq!(r.rules.len(), 1);
        assert_eq!(
            (r.rules[0].rule.as_str(), r.rules[0].corrected),
            ("sales", 3)
        );
        assert!(r.rules[0]
            .suggestion
            .starts_with("agents moved 3 of 3 tickets from rule \"sales\" to team \"sales-emea\""));
        assert_eq!(r.intent_confusions[0].correct, "billing");
        // Two corrections are not enough to suggest a team.
        let r = feedback_report(&all[..2], &rules());
        assert!(r.rules[0].suggestion.starts_with("agents disagree"));
    }

    #[test]
    fn the_shadow_report_counts_agreement_and_accuracy_on_corrected_tickets() {
        let row = |a: &str, s: &str, c: Option<&str>| ShadowRow {
            active: a.into(),
            shadow: s.into(),
            correct: c.map(str::to_string),
        };
        let rows = [
            row("x", "x", None),
            row("x", "y", Some("y")),
            row("x", "y", Some("x")),
            row("z", "y", Some("y")),
        ];
        let r = shadow_report("m-1", &rows);
        assert_eq!((r.tickets, r.corrected_tickets), (4, 3));
        assert_eq!(r.agreement, Some(0.25));
        assert_eq!(r.active_accuracy_on_corrected, Some(1.0 / 3.0));
        assert_eq!(r.shadow_accuracy_on_corrected, Some(2.0 / 3.0));
        assert_eq!(shadow_report("m-1", &[]).agreement, None);
    }
}
