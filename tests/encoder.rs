//! The encoder on tiny random models: agreement with candle-transformers' BERT, GGUF and
//! safetensors loading, padding invariance, kernel paths.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use intent_router::batch::{Batch, BatchLimits};
use intent_router::model::encoder::{Encoder, EncoderOptions};

use crate::common::{self, Format};

#[test]
fn our_bert_matches_candle_transformers_bert() {
    let dir = tempfile::tempdir().unwrap();
    let weights = common::tiny_encoder(dir.path(), Format::Safetensors);
    let ours = Encoder::load(dir.path(), &EncoderOptions::default()).unwrap();
    let cfg: candle_transformers::models::bert::Config =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let reference = candle_transformers::models::bert::BertModel::load(vb, &cfg).unwrap();
    let toks = ours
        .text()
        .encode_many(&["refund my money".into(), "где заказ".into()])
        .unwrap();
    let batch = Batch::new(&toks.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let a = ours
        .bert()
        .forward(
            &batch.input_ids,
            &batch.attention_mask,
            &batch.token_type_ids,
            intent_router::model::bert::Pass::Infer,
        )
        .unwrap();
    let b = reference
        .forward(
            &batch.input_ids,
            &batch.token_type_ids,
            Some(&batch.attention_mask),
        )
        .unwrap();
    // Token positions only: rows of padding are not part of the output (nothing attends to
    // them, pooling skips them), and the fused attention leaves them at zero.
    let m = batch
        .attention_mask
        .to_dtype(DType::F32)
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let diff = common::max_abs_diff(&a.broadcast_mul(&m).unwrap(), &b.broadcast_mul(&m).unwrap());
    assert!(diff < 1e-4, "max difference {diff}");
}

#[test]
fn gguf_q4_model_loads_and_stays_close_to_f32() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::tiny_encoder(d1.path(), Format::Safetensors);
    common::tiny_encoder(d2.path(), Format::Gguf);
    let texts: Vec<String> = vec!["i forgot my password".into(), "не могу войти".into()];
    let dense = Encoder::load(d1.path(), &EncoderOptions::default())
        .unwrap()
        .embed(&texts, BatchLimits::default())
        .unwrap();
    let q4 = Encoder::load(d2.path(), &EncoderOptions::default())
        .unwrap()
        .embed(&texts, BatchLimits::default())
        .unwrap();
    let cos = (dense * q4)
        .unwrap()
        .sum(1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(cos.iter().all(|&c| c > 0.9), "{cos:?}");
}

#[test]
fn padding_does_not_change_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_encoder(dir.path(), Format::Safetensors);
    let enc = Encoder::load(dir.path(), &EncoderOptions::default()).unwrap();
    let texts: Vec<String> = vec![
        "thanks".into(),
        "where is my order parcel please the my".into(),
    ];
    let together = enc.embed(&texts, BatchLimits::default()).unwrap();
    let alone = enc.embed(&texts[..1], BatchLimits::default()).unwrap();
    assert!(common::max_abs_diff(&together.get(0).unwrap(), &alone.get(0).unwrap()) < 1e-5);
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_encoder(dir.path(), Format::Safetensors);
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = Encoder::load(dir.path(), &EncoderOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}: missing tokenizer.json (tokenizer)",
            dir.path().display()
        )
    );
}
