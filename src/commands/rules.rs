//! `rules-check`: compiles a rules file against a taxonomy and says what is wrong, where.

use anyhow::{Context, Result};

use super::model_dir;
use crate::cli::RulesCheckArgs;
use crate::intent::IntentTree;
use crate::model::files;
use crate::rules::{self, compile::compile};

pub(super) fn rules_check(a: RulesCheckArgs) -> Result<()> {
    let taxonomy = match a.taxonomy {
        Some(t) => t,
        None => model_dir(a.model)?.join(files::TAXONOMY),
    };
    let tree = IntentTree::load(&taxonomy)?;
    let spec = a
        .rules
        .as_ref()
        .map_or_else(|| "default".to_string(), |p| p.display().to_string());
    let ruleset = load_rules(&spec, &tree)?;
    let name = if spec == "default" {
        "(built-in default rules)"
    } else {
        spec.as_str()
    };
    println!(
        "{name}: {} rules, version {}",
        ruleset.rules.len(),
        ruleset.version
    );
    Ok(())
}

/// Compiles a rules file (or `default`) against the model's taxonomy; warnings go to stderr.
pub(super) fn load_rules(spec: &str, tree: &IntentTree) -> Result<rules::RuleSet> {
    let (text, name) = if spec == "default" {
        (
            rules::DEFAULT_RULES.to_string(),
            "(built-in default rules)".to_string(),
        )
    } else {
        (
            std::fs::read_to_string(spec).with_context(|| spec.to_string())?,
            spec.to_string(),
        )
    };
    let compiled = compile(&text, &name, tree)?;
    for w in &compiled.warnings {
        eprintln!("warning: {w}");
    }
    Ok(compiled.ruleset)
}
