//! Criterion benches per stage on the committed default model: tokenisation, encoder forward at
//! batch 1/8/32 (dense f32 linears and Q4 `QMatMul` linears), the head, and end-to-end classify.
//! Run: `cargo bench --bench engine` (figures in README "Performance").

use std::path::Path;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use intent_router::batch::BatchLimits;
use intent_router::engine::{Engine, EngineOptions};
use intent_router::model::bert::LinearMode;
use intent_router::model::classifier::Classifier;
use intent_router::model::encoder::{Encoder, EncoderOptions};
use intent_router::ticket::Ticket;

const SENTENCES: &[&str] = &[
    "Здравствуйте! Списали деньги дважды за один заказ, верните, пожалуйста, лишнее.",
    "I can't log in to my account, the SMS code never arrives and support is silent.",
    "Где мой заказ? Обещали доставить вчера, а трек-номер не обновляется уже три дня.",
    "Please send an invoice with our VAT number for the March subscription payment.",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| SENTENCES[i % SENTENCES.len()].to_string())
        .collect()
}

fn tokenization(c: &mut Criterion) {
    let enc = Encoder::load(
        &root().join("models/base/e5-small-ruen"),
        &EncoderOptions::default(),
    )
    .expect("base model");
    let batch = texts(32);
    let mut g = c.benchmark_group("tokenize");
    g.throughput(Throughput::Elements(32));
    g.bench_function("32 tickets", |b| {
        b.iter(|| enc.text().encode_many(&batch).expect("tokenize"))
    });
    g.finish();
}

fn encoder_forward(c: &mut Criterion) {
    let mut modes = vec![("dense", LinearMode::Dense), ("q4", LinearMode::Quantized)];
    if intent_router::model::qgemm::available() {
        modes.insert(0, ("int8", LinearMode::Int8));
    }
    for (name, linear) in modes {
        let opts = EncoderOptions {
            linear,
            ..Default::default()
        };
        let enc =
            Encoder::load(&root().join("models/base/e5-small-ruen"), &opts).expect("base model");
        let mut g = c.benchmark_group(format!("encoder/{name}"));
        g.sample_size(10);
        for n in [1usize, 8, 32] {
            let batch = texts(n);
            let limits = BatchLimits {
                max_batch: n,
                max_tokens: usize::MAX,
            };
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &batch, |b, batch| {
                b.iter(|| enc.embed(batch, limits).expect("embed"))
            });
        }
        g.finish();
    }
}

fn head_and_end_to_end(c: &mut Criterion) {
    let Ok(classifier) = Classifier::load(
        &root().join("models/helpdesk"),
        &EncoderOptions {
            linear: LinearMode::auto(),
            ..Default::default()
        },
    ) else {
        eprintln!("models/helpdesk missing: skipping head and end-to-end benches");
        return;
    };
    let x = Tensor::randn(0f32, 1f32, (32, classifier.encoder.dim()), &Device::Cpu).expect("randn");
    // The head with its n-gram view, where the model reads one, on 32 tickets' texts.
    let head_texts = texts(32);
    c.bench_function("head/32", |b| {
        b.iter(|| classifier.probabilities(&x, &head_texts).expect("head"))
    });
    let engine = Engine::new(classifier, EngineOptions::default());
    let tickets: Vec<Ticket> = texts(32).iter().map(|t| Ticket::from_text(t)).collect();
    let mut g = c.benchmark_group("classify");
    g.sample_size(10);
    g.throughput(Throughput::Elements(32));
    g.bench_function("32 tickets", |b| {
        b.iter(|| engine.classify(&tickets).expect("classify"))
    });
    g.finish();
}

criterion_group!(benches, tokenization, encoder_forward, head_and_end_to_end);
criterion_main!(benches);
