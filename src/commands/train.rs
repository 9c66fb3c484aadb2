//! `train` and `eval`: a classifier trained on labelled tickets, and its evaluation report.

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::{columns, encoder_options, limits, load_classifier};
use crate::cli::{EvalArgs, TrainArgs};
use crate::model::encoder::EncoderOptions;
use crate::model::head::{HeadKind, HeadTraining};
use crate::model::ngrams::NgramSettings;
use crate::model::source::HubOptions;
use crate::train::finetune::FineTune;
use crate::train::trainer::{self, Progress, TrainOptions};
use crate::train::{dataset, eval};

pub(super) fn train(a: TrainArgs) -> Result<()> {
    let kind = match a.head.as_str() {
        "linear" => HeadKind::Linear,
        "mlp" => HeadKind::Mlp { hidden: a.hidden },
        other => bail!("--head: unknown head `{other}`; valid: linear, mlp"),
    };
    let runtime = encoder_options(&a.runtime)?;
    let ngrams = ngram_settings(&a, kind)?;
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
        node_thresholds: !a.no_node_thresholds,
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
            a.cache_dir.or_else(crate::train::cache::default_cache_dir)
        },
        columns: columns(&a.csv),
        fine_tune: a.fine_tune.then_some(FineTune {
            layers: a.fine_tune_layers,
            epochs: a.fine_tune_epochs,
            learning_rate: a.fine_tune_lr,
            head_learning_rate: a.fine_tune_head_lr,
            layer_decay: a.fine_tune_layer_decay,
            warmup: a.fine_tune_warmup,
            batch_size: a.fine_tune_batch_size,
            balance: a.fine_tune_balance,
            patience: a.fine_tune_patience,
            blocks: a.fine_tune_blocks,
        }),
        ngrams,
        scope_rejection: a.out_of_scope_rejection,
        multi_intent: a.multi_intent,
        also_false_rate: a.also_false_rate,
        preloaded: None,
    };
    let outcome = trainer::train(&opts, &Bars::default())?;
    eprintln!(
        "wrote {} (temperature {:.3})",
        outcome.out.display(),
        outcome.temperature
    );
    if let Some(r) = &outcome.node_thresholds {
        eprintln!(
            "node thresholds: {} node(s) tuned on {} tuning tickets; chains to a leaf {:.1}% -> \
             {:.1}%, resolved node right {:.1}% -> {:.1}%",
            r.tuned_nodes,
            r.tickets,
            100.0 * r.before.leaf,
            100.0 * r.after.leaf,
            100.0 * r.before.precision,
            100.0 * r.after.precision
        );
    }
    println!("{}", outcome.report.to_table());
    Ok(())
}

/// The n-gram view's settings: on for the linear head unless `--no-ngrams`.
fn ngram_settings(a: &TrainArgs, kind: HeadKind) -> Result<Option<NgramSettings>> {
    let given = a.ngram_min_df.is_some() || a.ngram_c.is_some() || a.embedding_weight.is_some();
    if kind != HeadKind::Linear {
        if given {
            bail!(
                "--ngram-min-df, --ngram-c and --embedding-weight go with the linear head; \
                 --head {} reads the embedding alone",
                a.head
            );
        }
        return Ok(None);
    }
    if a.no_ngrams {
        return Ok(None);
    }
    let defaults = NgramSettings::default();
    let c = a.ngram_c.unwrap_or(defaults.c);
    if !(c > 0.0 && c.is_finite()) {
        bail!("--ngram-c: must be a positive number, not {c}");
    }
    let embedding_weight = a.embedding_weight.unwrap_or(defaults.embedding_weight);
    if !(embedding_weight > 0.0 && embedding_weight.is_finite()) {
        bail!("--embedding-weight: must be a positive number, not {embedding_weight}");
    }
    let min_df = a.ngram_min_df.unwrap_or(defaults.word_min_df);
    Ok(Some(NgramSettings {
        word_min_df: min_df,
        char_min_df: min_df,
        embedding_weight,
        c,
    }))
}

pub(super) fn eval(a: EvalArgs) -> Result<()> {
    let classifier = load_classifier(a.model, &a.runtime)?;
    let all = dataset::load(&a.data, &columns(&a.csv), true)?;
    let gold_out: Vec<bool> = all
        .iter()
        .map(|e| e.intent == crate::intent::OUT_OF_SCOPE)
        .collect();
    let known = &classifier.meta.labels;
    let unseen: Vec<_> = all
        .iter()
        .filter(|e| !known.contains(&e.intent) && e.intent != crate::intent::OUT_OF_SCOPE)
        .collect();
    if !unseen.is_empty() {
        eprintln!(
            "{} of {} examples carry an intent the model does not know; each counts as an error:",
            unseen.len(),
            all.len()
        );
        for e in &unseen {
            eprintln!(
                "  {}:{}: {}: intent \"{}\" (known: {})",
                a.data.display(),
                e.line,
                e.id,
                e.intent,
                crate::intent::closest_known(known, &e.intent)
            );
        }
    }
    for e in &all {
        for also in e.also.iter().filter(|l| !known.contains(l)) {
            eprintln!(
                "  {}:{}: {}: also \"{also}\" is an intent the model does not know (never \
                 found; known: {})",
                a.data.display(),
                e.line,
                e.id,
                crate::intent::closest_known(known, also)
            );
        }
    }
    let texts: Vec<String> = all.iter().map(|e| e.text.clone()).collect();
    let scores = classifier.classify_texts(&texts, limits(&a.runtime))?;
    let (examples, probs): (Vec<_>, Vec<_>) = all
        .iter()
        .zip(&scores.probs)
        .zip(&gold_out)
        .filter(|(_, &out)| !out)
        .map(|((e, p), _)| (e.clone(), p.clone()))
        .unzip();
    let m = &classifier.meta;
    let mut report = trainer::score(
        &classifier.tree,
        &m.labels,
        &classifier.thresholds,
        &examples,
        &probs,
    );
    let resolved: Vec<_> = all
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let guesses = classifier.guesses(&e.text);
            let th = &classifier.thresholds;
            classifier.resolve(&scores.probs[i], scores.out_of_scope_of(i), &guesses, 1, th)
        })
        .collect();
    let langs: Vec<String> = all.iter().map(trainer::language_of).collect();
    let threshold = m.out_of_scope.map(|s| s.threshold);
    if threshold.is_some() || gold_out.contains(&true) {
        let items: Vec<eval::ScopeItem> = (0..all.len())
            .map(|i| eval::ScopeItem {
                gold_out: gold_out[i],
                rejected: resolved[i].is_out_of_scope(),
                lang: &langs[i],
            })
            .collect();
        report.out_of_scope = Some(eval::scope_report(threshold, &items));
    }
    if m.also.is_some() || all.iter().any(|e| !e.also.is_empty()) {
        let items: Vec<eval::AlsoItem> = (0..all.len())
            .filter(|&i| !gold_out[i])
            .map(|i| eval::AlsoItem {
                gold: &all[i].intent,
                gold_also: &all[i].also,
                intent: &resolved[i].intent,
                found: resolved[i]
                    .also()
                    .iter()
                    .map(|s| s.intent.as_str())
                    .collect(),
                lang: &langs[i],
            })
            .collect();
        let threshold = m.also.as_ref().map(|a| a.threshold);
        report.also = Some(eval::also_report(threshold, &items));
    }
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

/// Progress bars on stderr.
#[derive(Default)]
struct Bars {
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn stage(&self, name: &str, steps: usize) {
        let bar = ProgressBar::new(steps as u64).with_message(name.to_string());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>16} [{bar:30}] {pos}/{len} {elapsed}, about {eta} left",
            )
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
    fn note(&self, line: &str) {
        match self.bar.lock().expect("progress lock").as_ref() {
            Some(b) if !b.is_hidden() => b.println(line),
            _ => eprintln!("{line}"),
        }
    }
}
