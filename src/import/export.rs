//! `export-hf`: writes an encoder (and, for a classifier directory, its head) as an ordinary
//! Hugging Face BERT directory: `model.safetensors` (f32, HF tensor names), `config.json`,
//! `tokenizer.json` and `encoder.json`. Other tools (PyTorch `transformers`, text-embeddings-
//! inference) then load exactly the weights our runtime uses, which is what the speed
//! comparison in `benches/compare` needs. Q4_0 tensors are dequantised, so the export equals the
//! exact model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::fsutil::{self, FsError, StagedDir};
use crate::model::bert::{self, BertConfig};
use crate::model::classifier::ClassifierMeta;
use crate::model::encoder::{self, EncoderError};
use crate::model::files::{self, EncoderMeta, FilesError};

/// Errors of the export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The input directory is incomplete or unreadable.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The encoder's weights could not be opened.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// A tensor could not be read or written.
    #[error("tensor `{name}`: {source}")]
    Tensor {
        name: String,
        #[source]
        source: candle_core::Error,
    },
    /// Writing the output failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// What `export_hf` wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// The output directory.
    pub out: PathBuf,
    /// Encoder directory the weights came from.
    pub encoder: PathBuf,
    /// Number of tensors written.
    pub tensors: usize,
    /// Whether a classifier head was exported too.
    pub head: bool,
}

/// `head.json` beside an exported head: what a foreign runtime needs to apply it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExportedHead {
    /// Output labels in head order.
    pub labels: Vec<String>,
    /// Calibration temperature: probabilities are `softmax(logits / temperature)`.
    pub temperature: f32,
    /// Head shape (`linear`, or `mlp` with GELU between `head.0` and `head.1`).
    pub head: serde_json::Value,
    /// The n-gram view's settings, where the head reads `ngrams.json` (copied too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ngrams: Option<crate::model::ngrams::NgramSettings>,
    /// The out-of-scope detector's settings, where `scope.safetensors` was copied too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_scope: Option<crate::model::scope::ScopeSettings>,
    /// The further-request detector's settings, where `also.safetensors` was copied too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also: Option<crate::model::also::AlsoSettings>,
    /// The chain thresholds as trained (per depth, and nodes' own), absent from exports made
    /// before 2026-12-07.
    #[serde(default)]
    pub thresholds: crate::intent::Thresholds,
}

/// Fills in the fields that `transformers` writes into every BERT `config.json` and that our own
/// config leaves out, so that strict readers (text-embeddings-inference requires
/// `initializer_range`) accept the export. Fields already present are kept.
fn complete_hf_config(mut config: serde_json::Value) -> serde_json::Value {
    if let Some(map) = config.as_object_mut() {
        for (key, value) in [
            ("initializer_range", serde_json::json!(0.02)),
            ("torch_dtype", serde_json::json!("float32")),
        ] {
            map.entry(key).or_insert(value);
        }
    }
    config
}

/// Exports `model` (an encoder directory, or a classifier directory whose base encoder is
/// exported along with its head) to `out` as a Hugging Face directory.
pub fn export_hf(model: &Path, out: &Path) -> Result<ExportSummary, ExportError> {
    let classifier = if model.join(files::CLASSIFIER_META).exists() {
        let meta: ClassifierMeta = files::read_json(&model.join(files::CLASSIFIER_META))?;
        Some(meta)
    } else {
        None
    };
    let encoder_dir = match &classifier {
        Some(meta) => model.join(&meta.base.path),
        None => model.to_path_buf(),
    };
    let config_path = files::require(&encoder_dir, files::HF_CONFIG, "BERT config")?;
    let config: BertConfig = files::read_json(&config_path)?;
    let tokenizer = files::require(&encoder_dir, files::TOKENIZER, "tokenizer")?;
    let meta = EncoderMeta::load(&encoder_dir)?;
    let weights = encoder::load_weights(&encoder_dir, &meta, &Device::Cpu)?;

    let mut names = vec![
        "embeddings.word_embeddings.weight".to_string(),
        "embeddings.position_embeddings.weight".to_string(),
        "embeddings.token_type_embeddings.weight".to_string(),
        "embeddings.LayerNorm.weight".to_string(),
        "embeddings.LayerNorm.bias".to_string(),
    ];
    names.extend((0..config.num_hidden_layers).flat_map(bert::layer_tensor_names));
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in &names {
        let t = weights.dense(name).map_err(|source| ExportError::Tensor {
            name: name.clone(),
            source,
        })?;
        tensors.insert(name.clone(), t);
    }

    let staged = StagedDir::new(out)?;
    let dir = staged.path();
    let st_path = dir.join(files::SAFETENSORS_WEIGHTS);
    candle_core::safetensors::save(&tensors, &st_path).map_err(|source| ExportError::Tensor {
        name: files::SAFETENSORS_WEIGHTS.into(),
        source,
    })?;
    fsutil::set_readable(&st_path).map_err(|e| FsError::new(&st_path, e))?;
    let hf_config: serde_json::Value = files::read_json(&config_path)?;
    fsutil::write_json_atomic(&dir.join(files::HF_CONFIG), &complete_hf_config(hf_config))?;
    fsutil::copy_into_staged(&tokenizer, &dir.join(files::TOKENIZER))?;
    let exported = EncoderMeta {
        weights: files::SAFETENSORS_WEIGHTS.into(),
        source: format!(
            "exported by `intent-router export-hf` from {} ({})",
            encoder_dir.display(),
            meta.source
        ),
        ..meta
    };
    fsutil::write_json_atomic(&dir.join(files::ENCODER_META), &exported)?;
    if let Some(meta) = &classifier {
        let head = files::require(model, files::HEAD_WEIGHTS, "classifier head weights")?;
        fsutil::copy_into_staged(&head, &dir.join(files::HEAD_WEIGHTS))?;
        if meta.ngrams.is_some() {
            let view = files::require(model, files::NGRAMS, "the head's n-gram view")?;
            fsutil::copy_into_staged(&view, &dir.join(files::NGRAMS))?;
        }
        if meta.out_of_scope.is_some() {
            let scope = files::require(model, files::SCOPE_WEIGHTS, "the out-of-scope detector")?;
            fsutil::copy_into_staged(&scope, &dir.join(files::SCOPE_WEIGHTS))?;
        }
        if meta.also.is_some() {
            let also = files::require(model, files::ALSO_WEIGHTS, "the further-request detector")?;
            fsutil::copy_into_staged(&also, &dir.join(files::ALSO_WEIGHTS))?;
        }
        let info = ExportedHead {
            labels: meta.labels.clone(),
            temperature: meta.temperature,
            head: serde_json::to_value(meta.head).unwrap_or_default(),
            ngrams: meta.ngrams,
            out_of_scope: meta.out_of_scope,
            also: meta.also.clone(),
            thresholds: meta.thresholds(),
        };
        fsutil::write_json_atomic(&dir.join("head.json"), &info)?;
    }
    let out = staged.commit()?;
    Ok(ExportSummary {
        out,
        encoder: encoder_dir,
        tensors: names.len(),
        head: classifier.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encoder::{Encoder, EncoderOptions};
    use std::path::PathBuf;

    fn committed_base() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/base/e5-small-ruen")
    }

    #[test]
    fn exported_directory_loads_and_embeds_like_the_original() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("hf");
        let s = export_hf(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/helpdesk"),
            &out,
        )
        .unwrap();
        assert!(s.head);
        assert_eq!(s.tensors, 5 + 16 * 12);
        for f in [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "encoder.json",
        ] {
            assert!(out.join(f).exists(), "{f}");
        }
        let head: ExportedHead =
            serde_json::from_slice(&std::fs::read(out.join("head.json")).unwrap()).unwrap();
        assert_eq!(head.labels.len(), 17);
        let model: ClassifierMeta = serde_json::from_slice(
            &std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("models/helpdesk/classifier.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(head.thresholds, model.thresholds());
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["initializer_range"], 0.02, "{config}");
        assert_eq!(config["num_hidden_layers"], 12, "{config}");

        let opts = EncoderOptions::default();
        let a = Encoder::load(&committed_base(), &opts).unwrap();
        let b = Encoder::load(&out, &opts).unwrap();
        let texts = vec![
            "Не могу войти в личный кабинет".to_string(),
            "Where is my order #5512?".to_string(),
        ];
        let limits = Default::default();
        let ea = a.embed(&texts, limits).unwrap();
        let eb = b.embed(&texts, limits).unwrap();
        let diff = crate::model::max_abs_diff(&ea, &eb);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn missing_encoder_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = export_hf(tmp.path(), &tmp.path().join("out")).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
