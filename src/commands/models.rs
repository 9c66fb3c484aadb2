//! `retrain` and `models`: the model registry of a `serve` deployment, offline. Changes go to the
//! database through the same registry service the server uses; a running server follows them.

use anyhow::{bail, Context, Result};

use crate::cli::{ModelsAction, ModelsArgs, RetrainArgs, ServeArgs};
use crate::config::Settings;
use crate::registry::{AfterGate, ModelRegistry, RetrainOutcome};
use crate::store::Store;

/// The registry of the deployment that `serve`'s settings describe.
async fn open(a: &ServeArgs) -> Result<ModelRegistry> {
    let settings = Settings::load(a).map_err(anyhow::Error::msg)?;
    let database = settings.database.to_string();
    let store = Store::connect(&settings.database, &settings.connect)
        .await
        .with_context(|| database.clone())?;
    let config = settings.registry().map_err(anyhow::Error::msg)?;
    ModelRegistry::offline(std::sync::Arc::new(store), config)
        .await
        .with_context(|| database)
}

/// `retrain`: trains a candidate, gates it, and activates a passing one (unless told not to).
pub(super) async fn retrain(a: RetrainArgs) -> Result<()> {
    let registry = open(&a.serve).await?;
    eprintln!("retraining from {} …", registry.active().await?.id);
    let after = if a.no_activate {
        AfterGate::Keep
    } else {
        AfterGate::Activate
    };
    let r = registry.retrain(a.fine_tune, Some(after)).await?;
    println!("{}", serde_json::to_string_pretty(&r.gate)?);
    let id = &r.record.id;
    match r.outcome {
        RetrainOutcome::Refused => bail!(
            "candidate {id} refused by the gate: {}",
            r.gate.reasons.join("; ")
        ),
        RetrainOutcome::Kept => {
            eprintln!("candidate {id} passed the gate; not activated (--no-activate)")
        }
        RetrainOutcome::Activated | RetrainOutcome::Shadow => eprintln!(
            "candidate {id} passed the gate and is {} (a running server follows)",
            r.record.status
        ),
    }
    Ok(())
}

/// `models list | activate ID | rollback`.
pub(super) async fn models(a: ModelsArgs) -> Result<()> {
    let serve = match &a.action {
        ModelsAction::List(s) | ModelsAction::Rollback(s) => s,
        ModelsAction::Activate { serve, .. } => serve,
    };
    let registry = open(serve).await?;
    match a.action {
        ModelsAction::List(_) => {
            println!("| id | status | shadow | created | dev macro-F1 | note |");
            println!("|---|---|---|---|---:|---|");
            for m in registry.list().await? {
                let f1 = m
                    .metrics
                    .dev_macro_f1()
                    .map_or("-".to_string(), |f| format!("{f:.3}"));
                println!(
                    "| {} | {} | {} | {} | {f1} | {} |",
                    m.id,
                    m.status,
                    if m.shadow { "yes" } else { "" },
                    m.created_at.format("%Y-%m-%d %H:%M"),
                    m.note
                );
            }
        }
        ModelsAction::Activate { id, .. } => {
            registry.activate(&id, Some("activated by the CLI")).await?;
            eprintln!("{id} is active (a running server follows)");
        }
        ModelsAction::Rollback(_) => {
            let m = registry.rollback("rolled back to by the CLI").await?;
            eprintln!("{} is active again (a running server follows)", m.id);
        }
    }
    Ok(())
}
