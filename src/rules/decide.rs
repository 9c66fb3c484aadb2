//! The pure decision step: ticket facts + classification + ruleset -> [`Decision`] with a trace.
//! No state: assignment of a concrete agent for a strategy happens elsewhere.

use super::{Actions, Condition, PriorityAction, RuleSet, ALSO_INTENT};
use crate::decision::{Decision, TraceStep};
use crate::intent::{Resolution, UNKNOWN};
use crate::rules::{Priority, Status};
use crate::ticket::Ticket;

/// What the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The ticket.
    pub ticket: &'a Ticket,
    /// Its classification.
    pub intent: &'a Resolution,
    /// Its language code.
    pub language: &'a str,
    /// When the ticket was received (business-hours conditions).
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// The open incident it was linked to while routed.
    pub incident: Option<&'a str>,
}

impl Facts<'_> {
    fn confidence(&self) -> f32 {
        self.intent.top_k.first().map_or(0.0, |s| s.p)
    }

    fn text_lower(&self) -> String {
        format!(
            "{}\n{}",
            self.ticket.subject.as_deref().unwrap_or_default(),
            self.ticket.body
        )
        .to_lowercase()
    }
}

/// Whether `intent` is `node` or below it.
fn under(intent: &str, node: &str) -> bool {
    intent == node
        || intent
            .strip_prefix(node)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn one_of(value: Option<&str>, allowed: &[String]) -> bool {
    value.is_some_and(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v)))
}

/// `None` when the condition holds, otherwise why not.
fn check(c: &Condition, f: &Facts) -> Option<String> {
    let fail = |ok: bool, why: String| (!ok).then_some(why);
    match c {
        Condition::Intent(nodes) => {
            let i = f.intent.intent.as_str();
            fail(
                nodes.iter().any(|n| under(i, n)),
                format!("intent {i} is not under {}", nodes.join(" / ")),
            )
        }
        Condition::Unknown(want) => {
            let is = f.intent.intent == UNKNOWN;
            fail(
                is == *want,
                format!("intent is {}", if is { "unknown" } else { "known" }),
            )
        }
        Condition::OutOfScope(want) => {
            let is = f.intent.is_out_of_scope();
            fail(
                is == *want,
                format!("ticket is {}", if is { "out of scope" } else { "in scope" }),
            )
        }
        Condition::Also(want) => {
            let is = !f.intent.also().is_empty();
            fail(
                is == *want,
                format!(
                    "ticket holds {}",
                    if is {
                        "a further request"
                    } else {
                        "one request"
                    }
                ),
            )
        }
        Condition::AlsoIntent(nodes) => {
            let also = f.intent.also();
            let named: Vec<&str> = also.iter().map(|s| s.intent.as_str()).collect();
            fail(
                also.iter()
                    .any(|s| nodes.iter().any(|n| under(&s.intent, n))),
                format!(
                    "no further request under {} (further: {})",
                    nodes.join(" / "),
                    if named.is_empty() {
                        "none".to_string()
                    } else {
                        named.join(", ")
                    }
                ),
            )
        }
        Condition::Incident(want) => fail(
            f.incident.is_some() == *want,
            match f.incident {
                Some(id) => format!("linked to incident {id}"),
                None => "linked to no incident".to_string(),
            },
        ),
        Condition::ConfidenceBelow(t) => fail(
            f.confidence() < *t,
            format!("confidence {:.2} is not below {t}", f.confidence()),
        ),
        Condition::ConfidenceAtLeast(t) => fail(
            f.confidence() >= *t,
            format!("confidence {:.2} is below {t}", f.confidence()),
        ),
        Condition::MarginBelow(t) => fail(
            f.intent.margin < *t,
            format!("margin {:.2} is not below {t}", f.intent.margin),
        ),
        Condition::Language(l) => fail(
            one_of(Some(f.language), l),
            format!("language {} is not {}", f.language, l.join(" / ")),
        ),
        Condition::Channel(l) => {
            let ch = f.ticket.channel.as_deref();
            fail(
                one_of(ch, l),
                format!(
                    "channel {} is not {}",
                    ch.unwrap_or("(none)"),
                    l.join(" / ")
                ),
            )
        }
        // The trace is logged for good: it names what the rule wanted, never the customer's
        // own tier or field values (personal data, kept only for the retention period).
        Condition::Tier(l) => {
            let t = f.ticket.customer.tier.as_deref();
            fail(one_of(t, l), format!("tier is not {}", l.join(" / ")))
        }
        Condition::Field(name, values) => {
            let v = f
                .ticket
                .fields
                .get(name)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
            let why = match v {
                None => format!("field {name} is absent"),
                Some(_) => format!("field {name} is not {}", values.join(" / ")),
            };
            fail(one_of(v.as_deref(), values), why)
        }
        Condition::Keywords(words) => {
            let text = f.text_lower();
            fail(
                words.iter().any(|w| text.contains(w.as_str())),
                format!("none of the keywords {}", words.join(", ")),
            )
        }
        Condition::Regex(r) => {
            let text = format!(
                "{}\n{}",
                f.ticket.subject.as_deref().unwrap_or_default(),
                f.ticket.body
            );
            fail(
                r.is_match(&text),
                format!("text does not match /{}/", r.as_str()),
            )
        }
        Condition::BusinessHours {
            name,
            calendar,
            open,
        } => {
            let is_open = calendar.is_open(f.received_at);
            fail(
                is_open == *open,
                format!(
                    "received {} ({}), {} business hours of \"{name}\"",
                    f.received_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    calendar.describe(f.received_at),
                    if is_open { "inside" } else { "outside" }
                ),
            )
        }
        Condition::All(cs) => cs.iter().find_map(|c| check(c, f)),
        Condition::Any(cs) => {
            let whys: Vec<String> = cs.iter().filter_map(|c| check(c, f)).collect();
            (whys.len() == cs.len() && !cs.is_empty())
                .then(|| format!("none of: {}", whys.join("; ")))
        }
        Condition::Not(c) => fail(
            check(c, f).is_some(),
            "the negated condition holds".to_string(),
        ),
    }
}

/// Applies actions onto a decision in progress.
fn apply(d: &mut Decision, a: &Actions, f: &Facts) {
    if let Some(t) = &a.team {
        d.team = Some(t.clone());
    }
    if let Some(x) = &a.assignee {
        d.assignee = Some(x.clone());
    }
    if let Some(s) = a.status {
        d.status = s;
    }
    match a.priority {
        Some(PriorityAction::Set(p)) => d.priority = p,
        Some(PriorityAction::Raise) => d.priority = d.priority.raised(),
        Some(PriorityAction::Lower) => d.priority = d.priority.lowered(),
        None => {}
    }
    for t in &a.tags {
        let tags: Vec<String> = if t.contains(ALSO_INTENT) {
            f.intent
                .also()
                .iter()
                .map(|s| t.replace(ALSO_INTENT, &s.intent))
                .collect()
        } else {
            vec![t.clone()]
        };
        for t in tags {
            if !d.tags.contains(&t) {
                d.tags.push(t);
            }
        }
    }
}

/// Decides: start from the defaults (status `open`, priority `normal` unless they say
/// otherwise), apply every matching rule in order, stop after a matching rule with `stop`.
pub fn decide(rules: &RuleSet, facts: &Facts) -> Decision {
    let mut d = Decision {
        team: None,
        assignee: None,
        status: Status::Open,
        priority: Priority::Normal,
        tags: Vec::new(),
        rule_ids: Vec::new(),
        trace: Vec::new(),
    };
    apply(&mut d, &rules.defaults, facts);
    for rule in &rules.rules {
        let failed = rule.when.iter().find_map(|c| check(c, facts));
        d.trace.push(TraceStep {
            rule: rule.id.clone(),
            matched: failed.is_none(),
            failed: failed.clone(),
        });
        if failed.is_none() {
            apply(&mut d, &rule.then, facts);
            d.rule_ids.push(rule.id.clone());
            if rule.then.stop {
                break;
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::{IntentTree, Scored};
    use crate::rules::compile::compile;
    use crate::rules::Assignee;

    const RULES: &str = r#"
[defaults]
team = "triage"
status = "new"

[[rules]]
id = "spam"
when.intent = "other.spam"
then = { status = "spam", assignee = "none", stop = true }

[[rules]]
id = "outage"
when.intent = "tech.outage"
then = { team = "oncall", priority = "urgent", status = "open", assignee = { strategy = "least-loaded" } }

[[rules]]
id = "billing"
when = { intent = "billing", confidence_at_least = 0.5 }
then = { team = "billing", status = "open", assignee = { strategy = "round-robin" } }

[[rules]]
id = "vip"
when = { tier = "vip", not = { channel = "phone" } }
then = { priority = "raise", tags = ["vip"] }

[[rules]]
id = "refund-words"
when = { any = [{ keywords = ["chargeback"] }, { regex = "(?i)возврат" }] }
then = { tags = ["refund-words", "vip"] }
"#;

    fn resolution(intent: &str, p: f32) -> Resolution {
        Resolution {
            intent: intent.into(),
            chain: vec![],
            top_k: vec![Scored {
                intent: intent.into(),
                p,
            }],
            margin: p / 2.0,
            out_of_scope: None,
            intents: vec![],
        }
    }

    fn run(intent: &str, p: f32, ticket: &Ticket) -> Decision {
        let tree = IntentTree::from_labels(&["billing.refund", "tech.outage", "other.spam"]);
        let rules = compile(RULES, "r.toml", &tree).unwrap().ruleset;
        let res = resolution(intent, p);
        decide(
            &rules,
            &Facts {
                ticket,
                intent: &res,
                language: "ru",
                received_at: chrono::Utc::now(),
                incident: None,
            },
        )
    }

    #[test]
    fn later_rules_refine_and_stop_ends() {
        let vip = Ticket {
            customer: crate::ticket::Customer {
                tier: Some("VIP".into()),
            },
            body: "Где возврат?".into(),
            ..Default::default()
        };
        let d = run("billing.refund", 0.9, &vip);
        assert_eq!(
            (d.team.as_deref(), d.status, d.priority),
            (Some("billing"), Status::Open, Priority::High)
        );
        assert_eq!(d.assignee, Some(Assignee::RoundRobin));
        assert_eq!(d.rule_ids, vec!["billing", "vip", "refund-words"]);
        assert_eq!(d.tags, vec!["vip", "refund-words"]);
        assert_eq!(d.trace.len(), 5);
        assert_eq!(
            d.trace[0].failed.as_deref(),
            Some("intent billing.refund is not under other.spam")
        );

        let d = run("other.spam", 0.99, &vip);
        assert_eq!(
            (d.status, d.assignee.clone(), d.trace.len()),
            (Status::Spam, Some(Assignee::Nobody), 1)
        );
    }

    #[test]
    fn default_rules_compile_cleanly_for_the_default_taxonomy() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/training-data/taxonomy.toml");
        let tree = IntentTree::load(std::path::Path::new(path)).unwrap();
        let c = compile(crate::rules::DEFAULT_RULES, "default.toml", &tree).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let decide_for = |intent: &str, p: f32, tier: Option<&str>| {
            let t = Ticket {
                customer: crate::ticket::Customer {
                    tier: tier.map(str::to_string),
                },
                ..Ticket::from_text("x")
            };
            let res = resolution(intent, p);
            decide(
                &c.ruleset,
                &Facts {
                    ticket: &t,
                    intent: &res,
                    language: "en",
                    received_at: chrono::Utc::now(),
                    incident: None,
                },
            )
        };
        let d = decide_for("tech.outage", 0.9, None);
        assert_eq!(
            (d.team.as_deref(), d.priority, d.status),
            (Some("oncall"), Priority::Urgent, Status::Open)
        );
        let d = decide_for("billing.charge_dispute", 0.9, Some("vip"));
        assert_eq!(
            (d.team.as_deref(), d.priority),
            (Some("billing"), Priority::Urgent)
        );
        let d = decide_for("feedback.praise", 0.9, None);
        assert_eq!((d.status, d.priority), (Status::Solved, Priority::Low));
        let d = decide_for("other.spam", 0.9, Some("vip"));
        assert_eq!(
            (d.status, d.assignee),
            (Status::Spam, Some(Assignee::Nobody))
        );
        let d = decide_for("billing", 0.4, None);
        assert_eq!((d.team.as_deref(), d.status), (Some("triage"), Status::New));
        let d = decide_for(UNKNOWN, 0.2, None);
        assert_eq!(d.rule_ids, vec!["uncertain"]);
        // A ticket the detector rejects goes to triage, whatever its top label, before any
        // rule of an intent or a tier.
        let d = decide_for(crate::intent::OUT_OF_SCOPE, 0.9, Some("vip"));
        assert_eq!(d.rule_ids, vec!["out-of-scope"]);
        assert_eq!(
            (d.team.as_deref(), d.status, d.priority, d.tags.clone()),
            (
                Some("triage"),
                Status::New,
                Priority::Normal,
                vec!["out-of-scope".to_string()]
            )
        );
        assert!(d
            .trace
            .iter()
            .any(|t| t.failed.as_deref() == Some("intent out_of_scope is not under other.spam")));
    }

    #[test]
    fn further_requests_match_and_name_their_tags() {
        let tree = IntentTree::from_labels(&["billing.refund", "orders.status", "tech.bug"]);
        let rules = "[[rules]]\nid = \"more\"\nwhen.also = true\nthen = { tags = [\"also:{also_intent}\"] }\n\
                     [[rules]]\nid = \"orders\"\nwhen.also_intent = \"orders\"\nthen = { priority = \"high\" }\n\
                     [[rules]]\nid = \"one\"\nwhen.also = false\nthen = { tags = [\"single\"] }\n";
        let rules = compile(rules, "r.toml", &tree).unwrap().ruleset;
        let ticket = Ticket::from_text("x");
        let run = |also: &[&str]| {
            let mut r = resolution("billing.refund", 0.9);
            r.intents = std::iter::once("billing.refund")
                .chain(also.iter().copied())
                .map(|i| Scored {
                    intent: i.into(),
                    p: 0.8,
                })
                .collect();
            decide(
                &rules,
                &Facts {
                    ticket: &ticket,
                    intent: &r,
                    language: "en",
                    received_at: chrono::Utc::now(),
                    incident: None,
                },
            )
        };
        let d = run(&["orders.status", "tech.bug"]);
        assert_eq!(d.tags, ["also:orders.status", "also:tech.bug"]);
        assert_eq!(d.priority, Priority::High);
        let d = run(&["tech.bug"]);
        assert_eq!(d.priority, Priority::Normal);
        assert_eq!(
            d.trace[1].failed.as_deref(),
            Some("no further request under orders (further: tech.bug)")
        );
        let d = run(&[]);
        assert_eq!(d.tags, ["single"]);
        assert_eq!(
            d.trace[0].failed.as_deref(),
            Some("ticket holds one request")
        );
        // An unknown placeholder or intent is refused where it is written.
        let bad = "[[rules]]\nid = \"x\"\nwhen.also_intent = \"order\"\nthen = { tags = [\"{intent}\"] }\n";
        let e = compile(bad, "r.toml", &tree).unwrap_err().to_string();
        // (Braces that name no placeholder are plain text.)
        let plain = "[[rules]]\nid = \"x\"\nthen = { tags = [\"a{b\", \"{}\"] }\n";
        assert!(compile(plain, "r.toml", &tree).is_ok());
        assert!(
            e.contains("rules[0].when.also_intent: unknown intent \"order\""),
            "{e}"
        );
        assert!(
            e.contains("tag \"{intent}\": the only placeholder is {also_intent}"),
            "{e}"
        );
    }

    #[test]
    fn out_of_scope_condition_reads_the_detector() {
        let rules = "[[rules]]\nid = \"away\"\nwhen.out_of_scope = true\nthen = { tags = [\"away\"] }\n\
                     [[rules]]\nid = \"here\"\nwhen.out_of_scope = false\nthen = { tags = [\"here\"] }\n";
        let tree = IntentTree::from_labels(&["billing.refund"]);
        let rules = compile(rules, "r.toml", &tree).unwrap().ruleset;
        let t = Ticket::from_text("x");
        let fire = |res: Resolution| {
            let f = Facts {
                ticket: &t,
                intent: &res,
                language: "en",
                received_at: chrono::Utc::now(),
                incident: None,
            };
            let d = decide(&rules, &f);
            (
                d.rule_ids,
                d.trace
                    .iter()
                    .filter_map(|t| t.failed.clone())
                    .collect::<Vec<_>>(),
            )
        };
        let away = resolution("billing.refund", 0.8).scoped(0.9, 0.5);
        assert_eq!(away.intent, crate::intent::OUT_OF_SCOPE);
        assert_eq!(
            fire(away),
            (
                vec!["away".to_string()],
                vec!["ticket is out of scope".to_string()]
            )
        );
        let here = resolution("billing.refund", 0.8).scoped(0.1, 0.5);
        assert_eq!(here.intent, "billing.refund");
        assert_eq!(
            fire(here),
            (
                vec!["here".to_string()],
                vec!["ticket is in scope".to_string()]
            )
        );
    }

    #[test]
    fn failed_conditions_are_explained_and_defaults_hold() {
        let phone = Ticket {
            channel: Some("phone".into()),
            customer: crate::ticket::Customer {
                tier: Some("vip".into()),
            },
            body: "x".into(),
            ..Default::default()
        };
        let d = run("billing.refund", 0.3, &phone);
        assert_eq!(
            (d.team.as_deref(), d.status, d.priority),
            (Some("triage"), Status::New, Priority::Normal)
        );
        assert_eq!(
            d.trace[2].failed.as_deref(),
            Some("confidence 0.30 is below 0.5")
        );
        assert_eq!(
            d.trace[3].failed.as_deref(),
            Some("the negated condition holds")
        );
        assert_eq!(
            d.trace[4].failed.as_deref(),
            Some("none of: none of the keywords chargeback; text does not match /(?i)возврат/")
        );
        let d = run("tech.outage", 0.8, &Ticket::from_text("down"));
        assert_eq!(
            (d.team.as_deref(), d.priority),
            (Some("oncall"), Priority::Urgent)
        );
        assert_eq!(Priority::Urgent.raised(), Priority::Urgent);
        assert_eq!(Priority::Low.lowered(), Priority::Low);
    }

    #[test]
    fn a_failed_tier_or_field_condition_names_the_rule_and_not_the_customer() {
        let text = r#"
[[rules]]
id = "gold"
when.tier = "gold"
then = { priority = "high" }

[[rules]]
id = "corp"
when.fields = { contact = "sales@corp.example" }
then = { team = "sales" }

[[rules]]
id = "plan"
when.fields = { plan = "pro" }
then = { team = "pro" }
"#;
        let tree = IntentTree::from_labels(&["billing.refund"]);
        let rules = compile(text, "r.toml", &tree).unwrap().ruleset;
        let t = Ticket {
            customer: crate::ticket::Customer {
                tier: Some("vip".into()),
            },
            fields: [("contact".to_string(), "ivan@example.com".into())].into(),
            body: "x".into(),
            ..Default::default()
        };
        let res = resolution("billing.refund", 0.9);
        let d = decide(
            &rules,
            &Facts {
                ticket: &t,
                intent: &res,
                language: "en",
                received_at: chrono::Utc::now(),
                incident: None,
            },
        );
        let why: Vec<&str> = d.trace.iter().filter_map(|s| s.failed.as_deref()).collect();
        assert_eq!(
            why,
            [
                "tier is not gold",
                "field contact is not sales@corp.example",
                "field plan is absent"
            ]
        );
    }

    #[test]
    fn a_rule_acts_on_tickets_linked_to_an_incident_and_says_why_not() {
        let text = r#"
[[rules]]
id = "known-incident"
when = { incident = true, intent = "billing" }
then = { status = "pending", tags = ["incident"] }

[[rules]]
id = "new-problem"
when.incident = false
then = { tags = ["fresh"] }
"#;
        let tree = IntentTree::from_labels(&["billing.refund", "tech.outage"]);
        let rules = compile(text, "r.toml", &tree).unwrap().ruleset;
        let res = resolution("billing.refund", 0.9);
        let t = Ticket::default();
        let decide_with = |incident| {
            decide(
                &rules,
                &Facts {
                    ticket: &t,
                    intent: &res,
                    language: "en",
                    received_at: chrono::Utc::now(),
                    incident,
                },
            )
        };
        let linked = decide_with(Some("inc-7"));
        assert_eq!(
            (linked.status, linked.tags.clone()),
            (Status::Pending, vec!["incident".to_string()])
        );
        assert_eq!(
            linked.trace[1].failed.as_deref(),
            Some("linked to incident inc-7")
        );
        let alone = decide_with(None);
        assert_eq!(alone.tags, ["fresh"]);
        assert_eq!(
            alone.trace[0].failed.as_deref(),
            Some("linked to no incident")
        );
    }

    #[test]
    fn business_hours_decide_by_the_calendar_and_explain_why() {
        let text = r#"
[calendars.moscow]
timezone = "Europe/Moscow"
weekly = { mon = "09:00-18:00", tue = "09:00-18:00" }
holidays = ["2026-12-01"]

[[rules]]
id = "night"
when.outside_business_hours = "moscow"
then = { team = "night-shift" }

[[rules]]
id = "day"
when.business_hours = "moscow"
then = { tags = ["office-hours"] }
"#;
        let tree = IntentTree::from_labels(&["billing.refund"]);
        let rules = compile(text, "r.toml", &tree).unwrap().ruleset;
        let t = Ticket::from_text("x");
        let res = resolution("billing.refund", 0.9);
        let at = |s: &str| {
            decide(
                &rules,
                &Facts {
                    ticket: &t,
                    intent: &res,
                    language: "en",
                    received_at: chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc(),
                    incident: None,
                },
            )
        };
        // Monday 10:00 Moscow.
        let d = at("2026-11-30T07:00:00Z");
        assert_eq!(d.rule_ids, vec!["day"]);
        assert_eq!(
            d.trace[0].failed.as_deref(),
            Some("received 2026-11-30T07:00:00Z (Mon 2026-11-30 10:00 Europe/Moscow), inside business hours of \"moscow\"")
        );
        // Tuesday 2026-12-01 is a holiday; Wednesday is closed.
        assert_eq!(at("2026-12-01T07:00:00Z").rule_ids, vec!["night"]);
        assert_eq!(
            at("2026-12-02T07:00:00Z").team.as_deref(),
            Some("night-shift")
        );

        let e = compile(
            "[[rules]]\nid = \"a\"\nwhen.business_hours = \"berlin\"\nthen = {}\n",
            "r.toml",
            &tree,
        )
        .unwrap_err();
        assert_eq!(
            e.lines(),
            vec!["r.toml:3: rules[0].when.business_hours: unknown calendar \"berlin\"; defined: none (add a [calendars.<name>] table)"]
        );
        let e = compile(
            "[calendars.x]\ntimezone = \"Nowhere/City\"\n",
            "r.toml",
            &tree,
        )
        .unwrap_err();
        assert_eq!(
            e.lines(),
            vec!["r.toml:1: calendars.x.timezone: unknown time zone \"Nowhere/City\"; use an IANA name such as Europe/Moscow or UTC"]
        );
    }
}
