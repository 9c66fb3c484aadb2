//! The rules file as written (TOML), before validation: raw serde types that keep source spans
//! so that every error can name its line. Never used for deciding; see `compile`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A whole rules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleSet {
    /// What a ticket gets before any rule applies.
    #[serde(default)]
    pub defaults: Option<Spanned<RawActions>>,
    /// Rules, evaluated in order.
    #[serde(default)]
    pub rules: Vec<Spanned<RawRule>>,
    /// Business-hours calendars by name, for `business_hours` conditions.
    #[serde(default)]
    pub calendars: BTreeMap<String, Spanned<super::calendar::RawCalendar>>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique id.
    pub id: Spanned<String>,
    /// What the rule is for.
    #[serde(default)]
    pub description: String,
    /// Conditions (all must hold); absent = always.
    #[serde(default)]
    pub when: Option<Spanned<RawCondition>>,
    /// Actions.
    pub then: Spanned<RawActions>,
}

/// A value or a list of values.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Any of several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// Conditions of a `when` table; every key present must hold.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    /// Intent nodes; a node matches itself and its descendants.
    pub intent: Option<Spanned<OneOrMany>>,
    /// Whether the intent resolved to `unknown`.
    pub unknown: Option<bool>,
    /// Whether the out-of-scope detector found no request to this business.
    pub out_of_scope: Option<bool>,
    /// Whether the ticket holds a further request besides its intent.
    pub also: Option<bool>,
    /// Intent nodes of a further request; a node matches itself and its descendants.
    pub also_intent: Option<Spanned<OneOrMany>>,
    /// Whether the ticket was linked to an open incident while routed.
    pub incident: Option<bool>,
    /// Top-1 probability below this.
    pub confidence_below: Option<Spanned<f64>>,
    /// Top-1 probability at least this.
    pub confidence_at_least: Option<Spanned<f64>>,
    /// Top-1 minus top-2 probability below this.
    pub margin_below: Option<Spanned<f64>>,
    /// Ticket language.
    pub language: Option<OneOrMany>,
    /// Ticket channel.
    pub channel: Option<OneOrMany>,
    /// Customer tier.
    pub tier: Option<OneOrMany>,
    /// Ticket field values (`fields = { country = "DE" }`).
    pub fields: Option<BTreeMap<String, OneOrMany>>,
    /// Any of these words in subject or body (case-insensitive).
    pub keywords: Option<Vec<String>>,
    /// A regular expression over subject and body.
    pub regex: Option<Spanned<String>>,
    /// Received during the opening hours of this calendar.
    pub business_hours: Option<Spanned<String>>,
    /// Received outside the opening hours of this calendar.
    pub outside_business_hours: Option<Spanned<String>>,
    /// All of these.
    pub all: Option<Vec<Spanned<RawCondition>>>,
    /// Any of these.
    pub any: Option<Vec<Spanned<RawCondition>>>,
    /// Not this.
    pub not: Option<Box<Spanned<RawCondition>>>,
}

/// Actions of a `then` table (or the defaults).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawActions {
    /// Team.
    pub team: Option<String>,
    /// A fixed agent (`"alice"`), a strategy (`{ strategy = "round-robin" }`), or `"none"`.
    pub assignee: Option<Spanned<RawAssignee>>,
    /// Status.
    pub status: Option<Spanned<String>>,
    /// Priority: a level, or `raise` / `lower` (one level).
    pub priority: Option<Spanned<String>>,
    /// Tags to add; `{also_intent}` in a tag stands for each further request's intent (no tag
    /// when there is none).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Stop after this rule (first match wins); default: continue.
    #[serde(default)]
    pub stop: bool,
}

/// How the assignee is written.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawAssignee {
    /// A fixed agent, or `none`.
    Agent(String),
    /// A strategy over the team's members.
    Strategy {
        /// `round-robin` or `least-loaded`.
        strategy: String,
    },
}
