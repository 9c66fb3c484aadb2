//! Parse, validate, freeze: a rules file becomes an immutable [`RuleSet`] plus warnings, or ALL
//! its errors, each with file, line, path and what is valid
//! (`rules.toml:12: rules[3].when.intent: unknown intent "billing.refnd"; known: billing.refund, …`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use regex::Regex;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::calendar::Calendar;
use super::schema::{OneOrMany, RawActions, RawAssignee, RawCondition, RawRuleSet};
use super::{Actions, Assignee, Condition, Priority, PriorityAction, Rule, RuleSet, Status};
use crate::intent::IntentTree;

/// One error in a rules file: where (file, line, the key path) and what is wrong.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleError {
    /// The file's name (`rules` over the API).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The key path (`rules[3].when.intent`); empty for TOML syntax errors.
    pub path: String,
    /// What is wrong, and what is valid.
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error of a ruleset.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.lines().join("\n"))]
pub struct CompileErrors(pub Vec<RuleError>);

impl CompileErrors {
    /// Each error on one line, as `file:line: path: message`.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// A compiled ruleset and what looks wrong in it without being an error.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The ruleset.
    pub ruleset: RuleSet,
    /// Warnings (unreachable rules, intents no rule handles).
    pub warnings: Vec<String>,
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    tree: &'a IntentTree,
    calendars: BTreeMap<String, Arc<Calendar>>,
    errors: Vec<RuleError>,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error(&mut self, offset: usize, path: &str, message: impl AsRef<str>) {
        let line = self.line(offset);
        self.errors.push(RuleError {
            file: self.file.to_string(),
            line,
            path: path.to_string(),
            message: message.as_ref().to_string(),
        });
    }
}

/// Compiles rules text (`file` names it in messages) against a taxonomy.
pub fn compile(text: &str, file: &str, tree: &IntentTree) -> Result<Compiled, CompileErrors> {
    let raw: RawRuleSet = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        });
        CompileErrors(vec![RuleError {
            file: file.to_string(),
            line,
            path: String::new(),
            message: e.message().to_string(),
        }])
    })?;
    let mut ctx = Ctx {
        file,
        text,
        tree,
        calendars: BTreeMap::new(),
        errors: Vec::new(),
    };
    for (name, raw_cal) in &raw.calendars {
        match Calendar::parse(raw_cal.get_ref()) {
            Ok(c) => {
                ctx.calendars.insert(name.clone(), Arc::new(c));
            }
            Err(errors) => {
                let line = ctx.line(raw_cal.span().start);
                for e in errors {
                    // Calendar errors read `field: what is wrong`.
                    let (field, message) = e.split_once(": ").unwrap_or(("", &e));
                    ctx.errors.push(RuleError {
                        file: file.to_string(),
                        line,
                        path: format!("calendars.{name}.{field}"),
                        message: message.to_string(),
                    });
                }
            }
        }
    }
    let defaults = match &raw.defaults {
        Some(d) => actions(&mut ctx, d, "defaults"),
        None => Actions::default(),
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        let rule = r.get_ref();
        let id = rule.id.get_ref().trim().to_string();
        if id.is_empty() {
            ctx.error(
                rule.id.span().start,
                &format!("{path}.id"),
                "must not be empty",
            );
        } else if let Some(first) = seen.insert(id.clone(), i) {
            ctx.error(
                rule.id.span().start,
                &format!("{path}.id"),
                format!("duplicate id \"{id}\" (first used by rules[{first}])"),
            );
        }
        let when = match &rule.when {
            Some(w) => conditions(&mut ctx, w, &format!("{path}.when")),
            None => Vec::new(),
        };
        let then = actions(&mut ctx, &rule.then, &format!("{path}.then"));
        rules.push(Rule {
            id,
            description: rule.description.clone(),
            when,
            then,
        });
    }
    if !ctx.errors.is_empty() {
        return Err(CompileErrors(ctx.errors));
    }
    let warnings = warnings(&rules, tree);
    let version = crate::import::hex(&Sha256::digest(text.as_bytes()))[..16].to_string();
    Ok(Compiled {
        ruleset: RuleSet {
            defaults,
            rules,
            version,
        },
        warnings,
    })
}

fn probability(ctx: &mut Ctx, v: &Spanned<f64>, path: &str) -> f32 {
    let x = *v.get_ref();
    if !(0.0..=1.0).contains(&x) {
        ctx.error(
            v.span().start,
            path,
            format!("{x} is not a probability; valid: 0.0 to 1.0"),
        );
    }
    x as f32
}

/// The intent nodes a condition names, each checked against the taxonomy.
fn intent_nodes(ctx: &mut Ctx, raw: &Spanned<OneOrMany>, path: &str, key: &str) -> Vec<String> {
    let nodes = raw.get_ref().to_vec();
    for n in &nodes {
        if !ctx.tree.contains(n) {
            let known = known_intents(ctx.tree, n);
            ctx.error(
                raw.span().start,
                &format!("{path}.{key}"),
                format!("unknown intent \"{n}\"; known: {known}"),
            );
        }
    }
    nodes
}

/// Compiles a `when` table into the list of conditions it ANDs.
fn conditions(ctx: &mut Ctx, raw: &Spanned<RawCondition>, path: &str) -> Vec<Condition> {
    let at = raw.span().start;
    let c = raw.get_ref();
    let mut out = Vec::new();
    if let Some(intent) = &c.intent {
        out.push(Condition::Intent(intent_nodes(ctx, intent, path, "intent")));
    }
    if let Some(a) = c.also {
        out.push(Condition::Also(a));
    }
    if let Some(intent) = &c.also_intent {
        out.push(Condition::AlsoIntent(intent_nodes(
            ctx,
            intent,
            path,
            "also_intent",
        )));
    }
    if let Some(u) = c.unknown {
        out.push(Condition::Unknown(u));
    }
    if let Some(o) = c.out_of_scope {
        out.push(Condition::OutOfScope(o));
    }
    if let Some(i) = c.incident {
        out.push(Condition::Incident(i));
    }
    if let Some(v) = &c.confidence_below {
        out.push(Condition::ConfidenceBelow(probability(
            ctx,
            v,
            &format!("{path}.confidence_below"),
        )));
    }
    if let Some(v) = &c.confidence_at_least {
        out.push(Condition::ConfidenceAtLeast(probability(
            ctx,
            v,
            &format!("{path}.confidence_at_least"),
        )));
    }
    if let Some(v) = &c.margin_below {
        out.push(Condition::MarginBelow(probability(
            ctx,
            v,
            &format!("{path}.margin_below"),
        )));
    }
    let lower = |v: &OneOrMany| {
        v.to_vec()
            .into_iter()
            .map(|s| s.to_lowercase())
            .collect::<Vec<_>>()
    };
    if let Some(v) = &c.language {
        out.push(Condition::Language(lower(v)));
    }
    if let Some(v) = &c.channel {
        out.push(Condition::Channel(lower(v)));
    }
    if let Some(v) = &c.tier {
        out.push(Condition::Tier(lower(v)));
    }
    for (name, values) in c.fields.iter().flatten() {
        out.push(Condition::Field(name.clone(), values.to_vec()));
    }
    if let Some(words) = &c.keywords {
        if words.iter().any(|w| w.trim().is_empty()) {
            ctx.error(
                at,
                &format!("{path}.keywords"),
                "keywords must not be empty strings",
            );
        }
        out.push(Condition::Keywords(
            words.iter().map(|w| w.to_lowercase()).collect(),
        ));
    }
    if let Some(re) = &c.regex {
        match Regex::new(re.get_ref()) {
            Ok(r) => out.push(Condition::Regex(r)),
            Err(e) => {
                let msg = format!(
                    "invalid regex: {}",
                    e.to_string().lines().last().unwrap_or_default()
                );
                ctx.error(re.span().start, &format!("{path}.regex"), msg);
            }
        }
    }
    for (key, name, open) in [
        ("business_hours", &c.business_hours, true),
        ("outside_business_hours", &c.outside_business_hours, false),
    ] {
        let Some(name) = name else { continue };
        match ctx.calendars.get(name.get_ref()) {
            Some(calendar) => out.push(Condition::BusinessHours {
                name: name.get_ref().clone(),
                calendar: Arc::clone(calendar),
                open,
            }),
            None => {
                let known: Vec<&str> = ctx.calendars.keys().map(String::as_str).collect();
                let msg = format!(
                    "unknown calendar \"{}\"; defined: {}",
                    name.get_ref(),
                    if known.is_empty() {
                        "none (add a [calendars.<name>] table)".to_string()
                    } else {
                        known.join(", ")
                    }
                );
                ctx.error(name.span().start, &format!("{path}.{key}"), msg);
            }
        }
    }
    for (key, list) in [("all", &c.all), ("any", &c.any)] {
        if let Some(list) = list {
            if list.is_empty() {
                ctx.error(
                    at,
                    &format!("{path}.{key}"),
                    "must list at least one condition",
                );
            }
            let inner: Vec<Condition> = list
                .iter()
                .enumerate()
                .map(|(i, sub)| Condition::All(conditions(ctx, sub, &format!("{path}.{key}[{i}]"))))
                .collect();
            out.push(if key == "all" {
                Condition::All(inner)
            } else {
                Condition::Any(inner)
            });
        }
    }
    if let Some(not) = &c.not {
        out.push(Condition::Not(Box::new(Condition::All(conditions(
            ctx,
            not,
            &format!("{path}.not"),
        )))));
    }
    out
}

fn actions(ctx: &mut Ctx, raw: &Spanned<RawActions>, path: &str) -> Actions {
    let a = raw.get_ref();
    let status = a.status.as_ref().and_then(|s| {
        let parsed = Status::parse(s.get_ref());
        if parsed.is_none() {
            let msg = format!(
                "unknown status \"{}\"; valid: new, open, pending, solved, spam",
                s.get_ref()
            );
            ctx.error(s.span().start, &format!("{path}.status"), msg);
        }
        parsed
    });
    let priority = a.priority.as_ref().and_then(|p| {
        let parsed = match p.get_ref().as_str() {
            "raise" => Some(PriorityAction::Raise),
            "lower" => Some(PriorityAction::Lower),
            other => Priority::parse(other).map(PriorityAction::Set),
        };
        if parsed.is_none() {
            let msg = format!(
                "unknown priority \"{}\"; valid: low, normal, high, urgent, raise, lower",
                p.get_ref()
            );
            ctx.error(p.span().start, &format!("{path}.priority"), msg);
        }
        parsed
    });
    let assignee = a.assignee.as_ref().and_then(|s| {
        let parsed = match s.get_ref() {
            RawAssignee::Agent(a) if a == "none" => Some(Assignee::Nobody),
            RawAssignee::Agent(a) if !a.trim().is_empty() => Some(Assignee::Agent(a.clone())),
            RawAssignee::Agent(_) => None,
            RawAssignee::Strategy { strategy } => match strategy.as_str() {
                "round-robin" => Some(Assignee::RoundRobin),
                "least-loaded" => Some(Assignee::LeastLoaded),
                _ => None,
            },
        };
        if parsed.is_none() {
            let msg = "invalid assignee; valid: an agent name, \"none\", { strategy = \"round-robin\" } or { strategy = \"least-loaded\" }";
            ctx.error(s.span().start, &format!("{path}.assignee"), msg);
        }
        parsed
    });
    for t in &a.tags {
        let rest = t.replace(super::ALSO_INTENT, "");
        if placeholder().is_match(&rest) {
            let msg = format!(
                "tag \"{t}\": the only placeholder is {}",
                super::ALSO_INTENT
            );
            ctx.error(raw.span().start, &format!("{path}.tags"), msg);
        }
    }
    Actions {
        team: a.team.clone(),
        assignee,
        status,
        priority,
        tags: a.tags.clone(),
        stop: a.stop,
    }
}

/// A `{word}` in a tag: a placeholder (only `{also_intent}` is one).
fn placeholder() -> &'static Regex {
    static R: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    R.get_or_init(|| Regex::new(r"\{[A-Za-z_]+\}").expect("static regex compiles. This is a bug."))
}

fn known_intents(tree: &IntentTree, wrong: &str) -> String {
    let ids: Vec<&str> = tree.nodes().iter().map(|n| n.id.as_str()).collect();
    crate::intent::closest_known(&ids, wrong)
}

/// Rules after a stopping catch-all never run; taxonomy leaves that no intent condition covers.
fn warnings(rules: &[Rule], tree: &IntentTree) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(i) = rules.iter().position(|r| r.when.is_empty() && r.then.stop) {
        for later in &rules[i + 1..] {
            out.push(format!(
                "rules: \"{}\" is unreachable: \"{}\" matches every ticket and stops",
                later.id, rules[i].id
            ));
        }
    }
    let mut covered: BTreeSet<String> = BTreeSet::new();
    fn collect(c: &Condition, into: &mut BTreeSet<String>) {
        match c {
            Condition::Intent(nodes) => into.extend(nodes.iter().cloned()),
            Condition::All(v) | Condition::Any(v) => v.iter().for_each(|c| collect(c, into)),
            _ => {}
        }
    }
    rules
        .iter()
        .flat_map(|r| &r.when)
        .for_each(|c| collect(c, &mut covered));
    for leaf in tree.leaves() {
        let handled = covered
            .iter()
            .any(|n| leaf == *n || leaf.starts_with(&format!("{n}.")));
        if !handled {
            out.push(format!("taxonomy: no rule handles intent \"{leaf}\""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> IntentTree {
        IntentTree::from_labels(&[
            "billing.refund",
            "billing.charge_dispute",
            "tech.outage",
            "tech.bug",
        ])
    }

    #[test]
    fn collects_every_error_with_line_and_path() {
        let text = r#"
[[rules]]
id = "a"
when.intent = "billing.refnd"
then = { team = "billing", priority = "hgih" }

[[rules]]
id = "a"
when = { confidence_below = 1.5, regex = "(" }
then = { status = "closed", assignee = { strategy = "random" } }
"#;
        let errors = compile(text, "rules.toml", &tree()).unwrap_err().lines();
        assert_eq!(
            errors,
            vec![
                "rules.toml:4: rules[0].when.intent: unknown intent \"billing.refnd\"; known: billing.refund, billing, billing.charge_dispute, tech, tech.bug, …",
                "rules.toml:5: rules[0].then.priority: unknown priority \"hgih\"; valid: low, normal, high, urgent, raise, lower",
                "rules.toml:8: rules[1].id: duplicate id \"a\" (first used by rules[0])",
                "rules.toml:9: rules[1].when.confidence_below: 1.5 is not a probability; valid: 0.0 to 1.0",
                "rules.toml:9: rules[1].when.regex: invalid regex: error: unclosed group",
                "rules.toml:10: rules[1].then.status: unknown status \"closed\"; valid: new, open, pending, solved, spam",
                "rules.toml:10: rules[1].then.assignee: invalid assignee; valid: an agent name, \"none\", { strategy = \"round-robin\" } or { strategy = \"least-loaded\" }",
            ]
        );
    }

    #[test]
    fn empty_combinators_are_errors() {
        let e = compile(
            "[[rules]]\nid = \"a\"\nwhen.any = []\nthen = {}\n",
            "r.toml",
            &tree(),
        )
        .unwrap_err();
        assert_eq!(
            e.lines(),
            vec!["r.toml:3: rules[0].when.any: must list at least one condition"]
        );
        assert_eq!(
            e.0[0],
            RuleError {
                file: "r.toml".into(),
                line: 3,
                path: "rules[0].when.any".into(),
                message: "must list at least one condition".into(),
            }
        );
    }

    #[test]
    fn syntax_and_unknown_keys_are_errors_with_lines() {
        let e = compile(
            "[[rules]]\nid = \"a\"\nwhen.colour = \"red\"\nthen = {}\n",
            "r.toml",
            &tree(),
        )
        .unwrap_err();
        assert!(
            e.lines()[0].starts_with("r.toml:3: unknown field `colour`"),
            "{e}"
        );
        let e = compile("[[rules]\n", "r.toml", &tree()).unwrap_err();
        assert!(e.lines()[0].starts_with("r.toml:1: "), "{e}");
    }

    #[test]
    fn warns_about_unreachable_rules_and_unhandled_intents() {
        let text = r#"
[[rules]]
id = "billing"
when.intent = "billing"
then.team = "billing"

[[rules]]
id = "catch-all"
then = { team = "triage", stop = true }

[[rules]]
id = "never"
when.intent = "tech"
then.team = "tech"
"#;
        let c = compile(text, "r.toml", &tree()).unwrap();
        assert_eq!(
            c.warnings,
            vec![
                "rules: \"never\" is unreachable: \"catch-all\" matches every ticket and stops"
                    .to_string(),
            ]
        );
        let c = compile(
            "[[rules]]\nid = \"b\"\nwhen.intent = \"billing\"\nthen.team = \"b\"\n",
            "r.toml",
            &tree(),
        )
        .unwrap();
        assert_eq!(
            c.warnings,
            vec![
                "taxonomy: no rule handles intent \"tech.outage\"",
                "taxonomy: no rule handles intent \"tech.bug\""
            ]
        );
        assert_eq!(c.ruleset.version.len(), 16);
    }
}
