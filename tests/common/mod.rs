//! Shared test helpers: a tiny random-weight BERT encoder directory (safetensors or GGUF) with a
//! small Unigram tokenizer, the committed base model's path, and the binary's path.

pub mod app;
pub mod helpdesk;
pub mod nats;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use intent_router::import::{charsmap, tokenizer_json};
use rand::{Rng, SeedableRng};

/// Path of the committed base encoder.
pub fn base_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/base/e5-small-ruen")
}

/// Path of the built binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_intent-router"))
}

/// Runs the binary with `args`; returns (exit ok, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    run_with_env(args, &[])
}

/// Runs the binary with `args` and extra environment variables.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .env_remove("INTENT_ROUTER_MODEL")
        .env_remove("INTENT_ROUTER_GENERIC_KERNELS")
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Tiny dimensions: hidden 32, 2 layers, 2 heads, FF 64 (all divisible by the Q4_0 block of 32).
pub const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const FF: usize = 64;
const MAX_POS: usize = 64;

fn pieces() -> Vec<(String, f32)> {
    let mut v: Vec<(String, f32)> = ["<s>", "<pad>", "</s>", "<unk>"]
        .iter()
        .map(|s| (s.to_string(), 0.0))
        .collect();
    let words = [
        "▁refund",
        "▁money",
        "▁back",
        "▁charged",
        "▁twice",
        "▁login",
        "▁password",
        "▁code",
        "▁order",
        "▁where",
        "▁parcel",
        "▁thanks",
        "▁great",
        "▁вернуть",
        "▁деньги",
        "▁пароль",
        "▁войти",
        "▁заказ",
        "▁где",
        "▁спасибо",
        "▁query",
        ":",
        "▁the",
        "▁my",
        "▁i",
        "▁please",
    ];
    for (i, w) in words.iter().enumerate() {
        v.push((w.to_string(), -3.0 - i as f32 * 0.05));
    }
    let singles = "▁abcdefghijklmnopqrstuvwxyzабвгдеёжзийклмнопрстуфхцчшщъыьэюя0123456789.,!?'-:";
    for (i, c) in singles.chars().enumerate() {
        v.push((c.to_string(), -8.0 - i as f32 * 0.01));
    }
    v.push(("<mask>".into(), 0.0));
    v
}

fn config(vocab: usize) -> serde_json::Value {
    serde_json::json!({
        "model_type": "bert", "vocab_size": vocab, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": 2, "intermediate_size": FF, "hidden_act": "gelu",
        "max_position_embeddings": MAX_POS, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "pad_token_id": 1,
        "initializer_range": 0.02, "position_embedding_type": "absolute", "use_cache": false
    })
}

/// Random weights with Hugging Face BERT names.
pub fn random_weights(vocab: usize, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = |dims: &[usize], scale: f32, offset: f32| {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| offset + rng.random_range(-scale..scale))
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    };
    let mut m = HashMap::new();
    m.insert(
        "embeddings.word_embeddings.weight".into(),
        t(&[vocab, HIDDEN], 0.5, 0.0),
    );
    m.insert(
        "embeddings.position_embeddings.weight".into(),
        t(&[MAX_POS, HIDDEN], 0.1, 0.0),
    );
    m.insert(
        "embeddings.token_type_embeddings.weight".into(),
        t(&[2, HIDDEN], 0.1, 0.0),
    );
    m.insert("embeddings.LayerNorm.weight".into(), t(&[HIDDEN], 0.1, 1.0));
    m.insert("embeddings.LayerNorm.bias".into(), t(&[HIDDEN], 0.1, 0.0));
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for (name, o, i) in [
            ("attention.self.query", HIDDEN, HIDDEN),
            ("attention.self.key", HIDDEN, HIDDEN),
            ("attention.self.value", HIDDEN, HIDDEN),
            ("attention.output.dense", HIDDEN, HIDDEN),
            ("intermediate.dense", FF, HIDDEN),
            ("output.dense", HIDDEN, FF),
        ] {
            m.insert(format!("{p}.{name}.weight"), t(&[o, i], 0.3, 0.0));
            m.insert(format!("{p}.{name}.bias"), t(&[o], 0.05, 0.0));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            m.insert(format!("{p}.{ln}.weight"), t(&[HIDDEN], 0.1, 1.0));
            m.insert(format!("{p}.{ln}.bias"), t(&[HIDDEN], 0.1, 0.0));
        }
    }
    m
}

/// Weight format of a tiny encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Hugging Face `model.safetensors` (f32).
    Safetensors,
    /// `model.gguf` with Q4_0 word embeddings and linear weights.
    Gguf,
}

/// Writes a tiny encoder directory into `dir` and returns its weights.
pub fn tiny_encoder(dir: &Path, format: Format) -> HashMap<String, Tensor> {
    std::fs::create_dir_all(dir).unwrap();
    let pieces = pieces();
    let cm = charsmap::build(&BTreeMap::from([(0x09, vec![0x20]), (0x0A, vec![0x20])])).unwrap();
    let control = [0, 1, 2, 3, pieces.len() as u32 - 1];
    let tok = tokenizer_json::build(&tokenizer_json::TokenizerSpec {
        pieces: &pieces,
        control: &control,
        charsmap: &cm.bytes,
        max_tokens: 48,
    });
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_vec(&tok).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config(pieces.len())).unwrap(),
    )
    .unwrap();
    let weights = random_weights(pieces.len(), 7);
    match format {
        Format::Safetensors => {
            candle_core::safetensors::save(&weights, dir.join("model.safetensors")).unwrap()
        }
        Format::Gguf => write_gguf(&dir.join("model.gguf"), &weights),
    }
    let meta = serde_json::json!({"format_version": 1, "weights": if format == Format::Gguf {"model.gguf"} else {"model.safetensors"},
        "prefix": "query: ", "pooling": "mean", "normalize": true, "max_tokens": 48, "source": "random test weights"});
    std::fs::write(
        dir.join("encoder.json"),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();
    weights
}

fn write_gguf(path: &Path, weights: &HashMap<String, Tensor>) {
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let qs: Vec<(String, QTensor)> = names
        .iter()
        .map(|n| {
            let t = &weights[*n];
            let quantize = n.ends_with(".weight")
                && t.rank() == 2
                && !n.contains("position")
                && !n.contains("token_type");
            let dtype = if quantize {
                GgmlDType::Q4_0
            } else {
                GgmlDType::F32
            };
            (
                n.to_string(),
                QTensor::quantize(&t.to_dtype(DType::F32).unwrap(), dtype).unwrap(),
            )
        })
        .collect();
    let refs: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &[], &refs).unwrap();
}

/// The tensors of a GGUF file, dequantised, and each one's stored type (`Q8_0`, `F32`...).
pub fn read_gguf(path: &Path) -> (HashMap<String, Tensor>, HashMap<String, String>) {
    let mut f = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let (mut tensors, mut dtypes) = (HashMap::new(), HashMap::new());
    for name in content.tensor_infos.keys() {
        let q = content
            .tensor(&mut f, name, &candle_core::Device::Cpu)
            .unwrap();
        dtypes.insert(name.clone(), format!("{:?}", q.dtype()));
        tensors.insert(
            name.clone(),
            q.dequantize(&candle_core::Device::Cpu).unwrap(),
        );
    }
    (tensors, dtypes)
}

/// Writes a small, learnable labelled data set: three intents with distinctive words, in
/// English and Russian.
pub fn tiny_dataset(path: &Path, per_class: usize, offset: usize) {
    let classes = [
        (
            "billing.refund",
            ["refund my money back please", "вернуть деньги пожалуйста"],
        ),
        (
            "account.access",
            ["i forgot my password login code", "не могу войти пароль"],
        ),
        (
            "orders.status",
            ["where is my order parcel", "где мой заказ"],
        ),
    ];
    let mut lines = Vec::new();
    for i in 0..per_class {
        for (label, texts) in &classes {
            for (k, t) in texts.iter().enumerate() {
                let lang = if k == 0 { "en" } else { "ru" };
                let text = format!(
                    "{t} {}",
                    ["", "!", "?", "thanks", "спасибо"][(i + offset) % 5]
                );
                lines.push(serde_json::json!({"id": format!("{label}-{lang}-{}", i + offset), "text": text, "intent": label, "lang": lang}).to_string());
            }
        }
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A taxonomy for [`tiny_dataset`].
pub fn tiny_taxonomy(path: &Path) {
    let text = "[[intent]]\nid = \"billing\"\nen = \"Billing\"\nru = \"Оплата\"\n\
                [[intent]]\nid = \"billing.refund\"\nen = \"Refund\"\nru = \"Возврат\"\n\
                [[intent]]\nid = \"account\"\nen = \"Account\"\nru = \"Аккаунт\"\n\
                [[intent]]\nid = \"account.access\"\nen = \"Access\"\nru = \"Вход\"\n\
                [[intent]]\nid = \"orders\"\nen = \"Orders\"\nru = \"Заказы\"\n\
                [[intent]]\nid = \"orders.status\"\nen = \"Status\"\nru = \"Статус\"\n";
    std::fs::write(path, text).unwrap();
}

/// Largest absolute element-wise difference of two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
