//! Text -> tokens: wraps the encoder's `tokenizer.json` with the model's input prefix and
//! truncation. Produces token ids only; no tensors (see `batch`), no ticket cleaning (see
//! `ticket`).

use std::path::{Path, PathBuf};

/// Errors of tokenisation.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// `tokenizer.json` could not be loaded.
    #[error("{path}: cannot load tokenizer: {message}")]
    Load { path: PathBuf, message: String },
    /// Encoding failed.
    #[error("tokenizing failed: {0}")]
    Encode(String),
}

/// One tokenised text: ids with `<s>`/`</s>`, truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Token-type ids (all 0 for single texts).
    pub type_ids: Vec<u32>,
}

/// Tokenizer plus the model's input conventions.
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: tokenizers::Tokenizer,
    prefix: String,
    max_tokens: usize,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("prefix", &self.prefix)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

impl TextEncoder {
    /// Loads `tokenizer.json`; `prefix` is prepended to every text, `max_tokens` caps length.
    pub fn load(path: &Path, prefix: &str, max_tokens: usize) -> Result<Self, TextError> {
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(path).map_err(|e| TextError::Load {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let trunc = tokenizers::TruncationParams {
            max_length: max_tokens,
            ..Default::default()
        };
        tokenizer
            .with_truncation(Some(trunc))
            .map_err(|e| TextError::Load {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            prefix: prefix.to_string(),
            max_tokens,
        })
    }

    /// Truncation length in tokens.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    /// Tokenises one text (prefix added, truncated, with `<s>`/`</s>`).
    pub fn encode(&self, text: &str) -> Result<Tokens, TextError> {
        let input = format!("{}{}", self.prefix, text.trim());
        let enc = self
            .tokenizer
            .encode(input, true)
            .map_err(|e| TextError::Encode(e.to_string()))?;
        Ok(Tokens {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
        })
    }

    /// Tokenises many texts in parallel, in input order.
    pub fn encode_many(&self, texts: &[String]) -> Result<Vec<Tokens>, TextError> {
        use rayon::prelude::*;
        texts.par_iter().map(|t| self.encode(t)).collect()
    }

    /// The token strings of a text (for inspection and tests).
    pub fn pieces(&self, text: &str) -> Result<Vec<String>, TextError> {
        let input = format!("{}{}", self.prefix, text.trim());
        let enc = self
            .tokenizer
            .encode(input, true)
            .map_err(|e| TextError::Encode(e.to_string()))?;
        Ok(enc.get_tokens().to_vec())
    }
}
