//! Text -> tokens: wraps the encoder's `tokenizer.json` with the model's input prefix and
//! truncation. Produces token ids only; no tensors (see `batch`), no ticket cleaning (see
//! `ticket`).

use std::path::{Path, PathBuf};

use tokenizers::models::unigram::Unigram;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PaddingParams,
    PostProcessorWrapper, PreTokenizerWrapper, Tokenizer, TruncationParams,
};

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
        let mut tokenizer = read_tokenizer(path).map_err(|message| TextError::Load {
            path: path.to_path_buf(),
            message,
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

/// Reads `tokenizer.json`. A Unigram tokenizer is read straight into its parts: the generic
/// reader of `tokenizers` buffers the model (the committed encoder's 159k vocabulary entries)
/// as generic JSON before it builds it, which was half of the tokenizer's loading time. Any
/// other model, and any file the direct reading rejects, goes to `tokenizers`' own reader,
/// which also words the error.
fn read_tokenizer(path: &Path) -> Result<Tokenizer, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    match serde_json::from_str::<UnigramFile>(&text) {
        Ok(file) if file.version == "1.0" => file.build(),
        _ => text.parse::<Tokenizer>().map_err(|e| e.to_string()),
    }
}

/// The fields of a `tokenizer.json` with a Unigram model, as `tokenizers` reads them.
#[derive(serde::Deserialize)]
struct UnigramFile {
    version: String,
    truncation: Option<TruncationParams>,
    padding: Option<PaddingParams>,
    #[serde(default)]
    added_tokens: Vec<AddedTokenWithId>,
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    post_processor: Option<PostProcessorWrapper>,
    decoder: Option<DecoderWrapper>,
    model: Unigram,
}

/// An `added_tokens` entry: the token and the id the file expects it to get.
#[derive(serde::Deserialize)]
struct AddedTokenWithId {
    id: u32,
    #[serde(flatten)]
    token: AddedToken,
}

impl UnigramFile {
    /// The tokenizer, assembled as `tokenizers` assembles a file it reads itself.
    fn build(self) -> Result<Tokenizer, String> {
        let mut tokenizer: Tokenizer = tokenizers::TokenizerBuilder::new()
            .with_model(ModelWrapper::from(self.model))
            .with_normalizer(self.normalizer)
            .with_pre_tokenizer(self.pre_tokenizer)
            .with_post_processor(self.post_processor)
            .with_decoder(self.decoder)
            .with_truncation(self.truncation)
            .with_padding(self.padding)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        for t in &self.added_tokens {
            match tokenizer.token_to_id(&t.token.content) {
                Some(found) if found != t.id => tracing::warn!(
                    token = %t.token.content,
                    expected = t.id,
                    found,
                    "tokenizer.json: an added token has another id in the vocabulary"
                ),
                _ => {}
            }
        }
        let added: Vec<AddedToken> = self.added_tokens.into_iter().map(|t| t.token).collect();
        tokenizer.add_tokens(&added);
        Ok(tokenizer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed encoder's tokenizer.
    fn committed() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/base/e5-small-ruen/tokenizer.json")
    }

    /// One text's ids, token strings and offsets.
    type Encoded = (Vec<u32>, Vec<String>, Vec<(usize, usize)>);

    fn encodings(t: &Tokenizer, texts: &[String]) -> Vec<Encoded> {
        texts
            .iter()
            .map(|text| {
                let e = t.encode(text.as_str(), true).unwrap();
                (
                    e.get_ids().to_vec(),
                    e.get_tokens().to_vec(),
                    e.get_offsets().to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn direct_reading_tokenizes_as_tokenizers_own_reader() {
        let path = committed();
        let direct = read_tokenizer(&path).unwrap();
        let own = Tokenizer::from_file(&path).unwrap();
        // The held-out sets as the model reads them (subject and body cleaned and joined).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("training-data");
        let columns = crate::train::dataset::CsvColumns::default();
        let mut texts: Vec<String> = [
            "dev.jsonl",
            "dev-independent-a.jsonl",
            "dev-independent-b.jsonl",
        ]
        .iter()
        .flat_map(|name| crate::train::dataset::load(&root.join(name), &columns, true).unwrap())
        .map(|ex| ex.text)
        .collect();
        texts.extend(["", "  ", "query: Ёлка ПРИВЕТ ﬁ ① 🙂 \u{301}é", "\0\t\n"].map(String::from));
        assert!(texts.len() > 1000);
        assert_eq!(encodings(&direct, &texts), encodings(&own, &texts));
        assert_eq!(direct.get_vocab_size(true), own.get_vocab_size(true));
    }

    #[test]
    fn added_tokens_and_other_models_load_as_tokenizers_loads_them() {
        let dir = tempfile::tempdir().unwrap();
        // A Unigram file with an added token (not in the vocabulary: it gets the next id).
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(committed()).unwrap()).unwrap();
        json["added_tokens"] = serde_json::json!([{
            "id": 158868, "content": "<ticket>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }]);
        let unigram = dir.path().join("unigram.json");
        std::fs::write(&unigram, json.to_string()).unwrap();
        // A WordLevel file, which the direct reading leaves to `tokenizers`.
        let word_level = dir.path().join("word-level.json");
        std::fs::write(
            &word_level,
            r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
                "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
                "decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"refund":1,"please":2},
                "unk_token":"[UNK]"}}"#,
        )
        .unwrap();
        let texts = vec![
            "refund <ticket> please".to_string(),
            "please refund me".to_string(),
        ];
        for path in [&unigram, &word_level] {
            let direct = read_tokenizer(path).unwrap();
            let own = Tokenizer::from_file(path).unwrap();
            assert_eq!(
                encodings(&direct, &texts),
                encodings(&own, &texts),
                "{}",
                path.display()
            );
        }
        let ids = read_tokenizer(&unigram)
            .unwrap()
            .encode("refund <ticket>", false)
            .unwrap();
        assert!(ids.get_ids().contains(&158868));
    }

    #[test]
    fn a_broken_file_gets_tokenizers_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(
            &path,
            r#"{"version":"1.0","model":{"type":"Unigram","vocab":[["a"]]}}"#,
        )
        .unwrap();
        let err = TextEncoder::load(&path, "", 16).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer.json: cannot load tokenizer"),
            "{err}"
        );
        let missing = TextEncoder::load(&dir.path().join("absent.json"), "", 16).unwrap_err();
        assert!(missing.to_string().contains("absent.json"), "{missing}");
    }
}
