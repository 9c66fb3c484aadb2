//! Routing rules: the file format (`schema`), compiling it into a frozen, validated [`RuleSet`]
//! (`compile`), the pure decision step (`decide`) and the rules serving now (`live`: validate,
//! persist, swap). Never calls the model; never assigns agents (the stateful assignment step is
//! separate).

pub mod calendar;
pub mod compile;

/// The default rules for the default taxonomy, embedded in the binary.
pub const DEFAULT_RULES: &str = include_str!("default.toml");
pub mod decide;
pub mod live;
pub mod schema;
pub mod simulate;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Ticket priority, ordered `low < normal < high < urgent`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Low.
    Low,
    /// Normal.
    Normal,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

impl Priority {
    /// All levels in order.
    pub const ALL: [Priority; 4] = [Self::Low, Self::Normal, Self::High, Self::Urgent];

    /// Parses a level name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The level's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }

    /// One level up (urgent stays urgent).
    pub fn raised(self) -> Self {
        Self::ALL[(self as usize + 1).min(3)]
    }

    /// One level down (low stays low).
    pub fn lowered(self) -> Self {
        Self::ALL[(self as usize).saturating_sub(1)]
    }
}

/// Ticket status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// New, not yet looked at by a person.
    New,
    /// Open.
    Open,
    /// Waiting for someone.
    Pending,
    /// Solved.
    Solved,
    /// Spam.
    Spam,
}

impl Status {
    /// All statuses.
    pub const ALL: [Status; 5] = [
        Self::New,
        Self::Open,
        Self::Pending,
        Self::Solved,
        Self::Spam,
    ];

    /// Parses a status name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The status's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Open => "open",
            Self::Pending => "pending",
            Self::Solved => "solved",
            Self::Spam => "spam",
        }
    }
}

/// A priority action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorityAction {
    /// Set a level.
    Set(Priority),
    /// One level up.
    Raise,
    /// One level down.
    Lower,
}

/// Who should handle the ticket, as the rules say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "agent", rename_all = "kebab-case")]
pub enum Assignee {
    /// A fixed agent.
    Agent(String),
    /// The next member of the team's roster in turn.
    RoundRobin,
    /// The team member with the fewest open assignments.
    LeastLoaded,
    /// Nobody.
    Nobody,
}

/// Compiled actions of a rule (or the defaults).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Actions {
    /// Team.
    pub team: Option<String>,
    /// Assignee.
    pub assignee: Option<Assignee>,
    /// Status.
    pub status: Option<Status>,
    /// Priority.
    pub priority: Option<PriorityAction>,
    /// Tags to add.
    pub tags: Vec<String>,
    /// First match wins.
    pub stop: bool,
}

/// In a tag, stands for each further request's intent.
pub const ALSO_INTENT: &str = "{also_intent}";

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// The resolved intent is one of these nodes or below one.
    Intent(Vec<String>),
    /// The intent is (or is not) `unknown`.
    Unknown(bool),
    /// The ticket is (or is not) `out_of_scope`.
    OutOfScope(bool),
    /// The ticket holds (or does not hold) a further request.
    Also(bool),
    /// A further request's intent is one of these nodes or below one.
    AlsoIntent(Vec<String>),
    /// The ticket is (or is not) linked to an open incident.
    Incident(bool),
    /// Top-1 probability below.
    ConfidenceBelow(f32),
    /// Top-1 probability at least.
    ConfidenceAtLeast(f32),
    /// Margin below.
    MarginBelow(f32),
    /// Language is one of these.
    Language(Vec<String>),
    /// Channel is one of these.
    Channel(Vec<String>),
    /// Customer tier is one of these.
    Tier(Vec<String>),
    /// A ticket field equals one of these values.
    Field(String, Vec<String>),
    /// Subject or body contains any of these words (lowercased).
    Keywords(Vec<String>),
    /// Subject or body matches.
    Regex(Regex),
    /// Received inside (`true`) or outside (`false`) a calendar's opening hours.
    BusinessHours {
        /// Calendar name, for traces.
        name: String,
        /// The calendar.
        calendar: std::sync::Arc<calendar::Calendar>,
        /// Inside (`true`) or outside.
        open: bool,
    },
    /// All hold.
    All(Vec<Condition>),
    /// Any holds.
    Any(Vec<Condition>),
    /// Does not hold.
    Not(Box<Condition>),
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Id.
    pub id: String,
    /// Description.
    pub description: String,
    /// Conditions, all of which must hold (empty: always).
    pub when: Vec<Condition>,
    /// Actions.
    pub then: Actions,
}

/// A frozen, validated ruleset.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// What every ticket starts with.
    pub defaults: Actions,
    /// Rules in order.
    pub rules: Vec<Rule>,
    /// Content version (sha256 prefix of the text).
    pub version: String,
}
