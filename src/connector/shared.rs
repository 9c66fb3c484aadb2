//! What the helpdesk kinds' configs share: the generic mapping keys they refuse (they know their
//! payloads), extra facts for the rules by path, the helpdesk's numeric ids of our names, and
//! tables of our words (priorities, statuses) to the helpdesk's values.

use std::collections::BTreeMap;

use super::config::{ConnectorFile, Errors, FieldsFile, Id};
use super::path::FieldPath;

/// Which `[connectors.events]` lists a kind reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Events {
    /// None.
    None,
    /// `closed` only (done statuses).
    Closed,
    /// All three (trigger names).
    All,
}

/// Refuses the generic kind's mapping keys, and the event lists the kind does not read.
pub(super) fn refuse_mapping(
    f: &ConnectorFile,
    kind: &str,
    events: Events,
    errors: &mut Errors<'_>,
) {
    let fields = &f.fields;
    let keys = [
        ("fields.id", fields.id.is_some()),
        ("fields.subject", fields.subject.is_some()),
        ("fields.body", fields.body.is_some()),
        ("fields.channel", fields.channel.is_some()),
        ("fields.customer_tier", fields.customer_tier.is_some()),
        ("fields.language", fields.language.is_some()),
        ("fields.event", fields.event.is_some()),
        ("fields.delivery_id", fields.delivery_id.is_some()),
        ("fields.delivery_header", fields.delivery_header.is_some()),
        ("fields.team", fields.team.is_some()),
        ("fields.agent", fields.agent.is_some()),
        (
            "events.created",
            events != Events::All && !f.events.created.is_empty(),
        ),
        (
            "events.closed",
            events == Events::None && !f.events.closed.is_empty(),
        ),
        (
            "events.reassigned",
            events != Events::All && !f.events.reassigned.is_empty(),
        ),
    ];
    for (key, given) in keys {
        if given && key.starts_with("events.") {
            errors.add(
                key,
                format!("kind {kind} knows which of its events do what"),
            );
        } else if given {
            errors.add(
                key,
                format!(
                    "set by kind {kind} (its payloads are known); map extra facts in fields.custom"
                ),
            );
        }
    }
    if events == Events::All {
        overlapping_events(f, errors);
    }
}

/// Refuses an event type (or trigger name) listed under two of `created`, `closed` and
/// `reassigned`: which it does could not be told.
pub(super) fn overlapping_events(f: &ConnectorFile, errors: &mut Errors<'_>) {
    let e = &f.events;
    let lists = [
        ("created", &e.created),
        ("closed", &e.closed),
        ("reassigned", &e.reassigned),
    ];
    for (i, (key, names)) in lists.iter().enumerate() {
        for (other, others) in &lists[i + 1..] {
            for name in names.iter().filter(|n| others.contains(n)) {
                errors.add(
                    &format!("events.{other}"),
                    format!("{name:?} is also in events.{key}; list it once"),
                );
            }
        }
    }
}

/// The `fields.custom` paths (extra facts for the rules), each checked.
pub(super) fn custom_paths(
    fields: &FieldsFile,
    errors: &mut Errors<'_>,
) -> Vec<(String, FieldPath)> {
    fields
        .custom
        .iter()
        .filter_map(|(name, p)| match FieldPath::parse(p) {
            Ok(p) => Some((name.clone(), p)),
            Err(e) => {
                errors.add(&format!("fields.custom.{name}"), e);
                None
            }
        })
        .collect()
}

/// A table of the helpdesk's numeric ids (`key` names it in errors).
pub(super) fn positive_ids(
    table: &BTreeMap<String, Id>,
    key: &str,
    helpdesk: &str,
    errors: &mut Errors<'_>,
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (name, id) in table {
        match id {
            Id::Number(n) if *n > 0 => {
                out.insert(name.clone(), *n);
            }
            _ => errors.add(
                &format!("write_back.{key}.{name}"),
                format!("a {helpdesk} id is a positive number"),
            ),
        }
    }
    out
}

/// `defaults` with the configured `given` entries over them: keys must be among `ours`, values
/// are read by `value` (an error says what is valid).
pub(super) fn overrides<V>(
    given: &BTreeMap<String, String>,
    key: &str,
    ours: &[&str],
    defaults: BTreeMap<String, V>,
    value: impl Fn(&str) -> Result<V, String>,
    errors: &mut Errors<'_>,
) -> BTreeMap<String, V> {
    let mut out = defaults;
    for (k, v) in given {
        let at = format!("write_back.{key}.{k}");
        if !ours.contains(&k.as_str()) {
            errors.add(&at, format!("not one of ours: {}", ours.join(", ")));
            continue;
        }
        match value(v) {
            Ok(v) => {
                out.insert(k.clone(), v);
            }
            Err(why) => errors.add(&at, why),
        }
    }
    out
}

/// A table of our words to the helpdesk's values.
pub(super) fn table<V: Clone>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Our priority names.
pub(super) fn our_priorities() -> Vec<&'static str> {
    crate::rules::Priority::ALL
        .iter()
        .map(|p| p.name())
        .collect()
}

/// Our status names.
pub(super) fn our_statuses() -> Vec<&'static str> {
    crate::rules::Status::ALL.iter().map(|s| s.name()).collect()
}

/// A value that must be one of the helpdesk's words.
pub(super) fn one_of(
    helpdesk: &'static str,
    theirs: &'static [&'static str],
) -> impl Fn(&str) -> Result<String, String> {
    move |v| {
        if theirs.contains(&v) {
            Ok(v.to_string())
        } else {
            Err(format!("{v:?} is not {helpdesk}'s: {}", theirs.join(", ")))
        }
    }
}

/// Our name for a helpdesk's id or name (a `groups` or `agents` table read backwards); none
/// when several of ours share it (which of them is meant cannot be told).
pub(super) fn ours_for<V: std::fmt::Display>(
    table: &BTreeMap<String, V>,
    theirs: &str,
) -> Option<String> {
    let mut ours = table.iter().filter(|(_, v)| v.to_string() == theirs);
    match (ours.next(), ours.next()) {
        (Some((name, _)), None) => Some(name.clone()),
        _ => None,
    }
}

/// The context of a reassignment event: the team the ticket is in now (our name) and who
/// moved it (the correction's author).
pub(super) fn reassignment(team: &str, agent: &str) -> Option<String> {
    Some(serde_json::json!({"team": team, "agent": agent}).to_string())
}

/// An `Authorization` header value for HTTP basic authentication.
pub(super) fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Any text.
pub(super) fn any_text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

/// The helpdesk's value for one of our names (`what`: team, agent, priority), or why the
/// write-back cannot be built, naming the table to add it to (agents: or write the group only).
pub(super) fn value_for<'a, V>(
    table: &'a BTreeMap<String, V>,
    what: &str,
    name: &str,
    theirs: &str,
    key: &str,
) -> Result<&'a V, String> {
    table.get(name).ok_or_else(|| {
        let or = if what == "agent" {
            " (or set group_only)"
        } else {
            ""
        };
        format!("{what} {name:?} has no {theirs}: add it to write_back.{key}{or}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_helpdesk_value_is_ours_only_when_one_team_has_it() {
        let groups: BTreeMap<String, i64> = [("billing", 8), ("refunds", 8), ("oncall", 9)]
            .map(|(t, g)| (t.to_string(), g))
            .into();
        assert_eq!(ours_for(&groups, "9").as_deref(), Some("oncall"));
        assert_eq!(ours_for(&groups, "8"), None, "shared by two teams");
        assert_eq!(ours_for(&groups, "7"), None);
    }
}
