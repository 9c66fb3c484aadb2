//! `train --fine-tune`: fine-tunes the encoder's layers together with the head.
//!
//! The recipe: the word embeddings stay frozen (their outputs are computed once per example);
//! the chosen top layers (all by default) and the head train with dropout and AdamW, the head at
//! a higher learning rate than the encoder, each layer below the top at `layer_decay` times the
//! rate of the one above; the rates warm up linearly, then fall linearly to zero. Batches group
//! examples of similar length (less padding); classes can be weighed against their frequency.
//! After every epoch the dev examples are scored and the best epoch's weights are kept; training
//! stops once `patience` epochs in a row did not improve on it. The tuned tensors then replace
//! the base encoder's in the model's own copy of its weights file (see
//! [`crate::model::encoder::tuned_weights`]).

use std::collections::HashMap;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Optimizer, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::trainer::{Progress, TrainError};
use crate::batch::Batch;
use crate::model::bert::{self, BertLayer, LinearMode, Pass, WeightSource};
use crate::model::encoder::{self, Encoder};
use crate::model::files::EncoderMeta;
use crate::model::head::Head;
use crate::text::Tokens;

/// Fine-tuning settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FineTune {
    /// How many top layers train (more than the encoder has: all of them).
    pub layers: usize,
    /// Most passes over the data (fewer when the dev examples stop improving).
    pub epochs: usize,
    /// AdamW learning rate of the top layer, at the end of the warm-up.
    pub learning_rate: f64,
    /// AdamW learning rate of the head, at the end of the warm-up.
    pub head_learning_rate: f64,
    /// Each layer's rate is this times the rate of the layer above it.
    pub layer_decay: f64,
    /// Share of the steps over which the rates rise from zero.
    pub warmup: f64,
    /// Examples per step.
    pub batch_size: usize,
    /// Class weights are `(mean class size / class size) ^ balance`: 0 weighs every example
    /// alike, 1 every class alike.
    pub balance: f64,
    /// Epochs in a row without a better dev score before training stops.
    pub patience: usize,
    /// How the tuned matrices are stored in the model's encoder file.
    pub blocks: Blocks,
}

/// How fine-tuned matrices are stored in a GGUF encoder file (vectors stay f32; a safetensors
/// encoder keeps f32).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
pub enum Blocks {
    /// GGML Q8_0: 8-bit weights in blocks of 32 with one scale (about 1.06 bytes a weight).
    #[serde(rename = "q8_0")]
    #[value(name = "q8_0")]
    Q8_0,
    /// GGML Q4_0, as the base encoder ships (about 0.56 bytes a weight; coarser).
    #[serde(rename = "q4_0")]
    #[value(name = "q4_0")]
    Q4_0,
}

impl Blocks {
    /// The GGML type.
    pub fn ggml(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
        }
    }
}

impl Default for FineTune {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FineTune {
    /// The recipe's defaults (all layers, 4 epochs at most).
    pub const DEFAULT: Self = Self {
        layers: 12,
        epochs: 4,
        learning_rate: 1e-4,
        head_learning_rate: 2e-3,
        layer_decay: 0.9,
        warmup: 0.1,
        batch_size: 32,
        balance: 0.0,
        patience: 2,
        blocks: Blocks::Q8_0,
    };

    /// Refuses settings that cannot train, naming the setting.
    pub fn check(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("--{name} is {v}: it must be a number above 0"))
            }
        };
        positive("fine-tune-lr", self.learning_rate)?;
        positive("fine-tune-head-lr", self.head_learning_rate)?;
        positive("fine-tune-layer-decay", self.layer_decay)?;
        if self.layer_decay > 1.0 {
            return Err(format!(
                "--fine-tune-layer-decay is {}: it must be at most 1 (lower layers learn slower)",
                self.layer_decay
            ));
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return Err(format!(
                "--fine-tune-warmup is {}: it is a share of the steps, from 0 to below 1",
                self.warmup
            ));
        }
        if !(0.0..=1.0).contains(&self.balance) {
            return Err(format!(
                "--fine-tune-balance is {}: it must be from 0 (no class weights) to 1",
                self.balance
            ));
        }
        for (name, v) in [
            ("fine-tune-layers", self.layers),
            ("fine-tune-epochs", self.epochs),
            ("fine-tune-batch-size", self.batch_size),
            ("fine-tune-patience", self.patience),
        ] {
            if v == 0 {
                return Err(format!("--{name} is 0: it must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Tokenised examples with their label indices.
#[derive(Clone, Copy)]
pub struct Labelled<'a> {
    /// The examples' tokens.
    pub tokens: &'a [Tokens],
    /// Their labels, indices into the head's outputs.
    pub ys: &'a [u32],
}

/// One epoch's dev figures.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct EpochScore {
    /// 1-based epoch.
    pub epoch: usize,
    /// Top-1 accuracy on the dev examples.
    pub accuracy: f64,
    /// Mean cross-entropy on the dev examples.
    pub loss: f64,
}

/// Result of fine-tuning: tensors overriding the base by name, and the co-trained head.
pub struct FineTuned {
    /// Trained layer tensors (HF names).
    pub tensors: HashMap<String, Tensor>,
    /// The head trained with them.
    pub head: Head,
    /// Dev figures after each epoch run (empty without dev examples).
    pub epochs: Vec<EpochScore>,
    /// The epoch whose weights were kept.
    pub kept: usize,
}

/// Variables as a weight source, so layers built from it train.
struct VarSource(HashMap<String, Var>);

impl WeightSource for VarSource {
    fn dense(&self, name: &str) -> candle_core::Result<Tensor> {
        match self.0.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("missing tensor `{name}`"),
        }
    }
    fn quantized(
        &self,
        _: &str,
    ) -> candle_core::Result<Option<std::sync::Arc<candle_core::quantized::QTensor>>> {
        Ok(None)
    }
}

/// A group of variables that share a learning rate.
struct Group {
    optimizer: candle_nn::AdamW,
    /// Its rate at the end of the warm-up.
    peak: f64,
}

/// Fine-tunes the top `cfg.layers` layers and the head on `train`; with `dev`, keeps the
/// epoch that scores best on it.
pub fn fine_tune(
    encoder: &Encoder,
    head: &Head,
    train: Labelled,
    dev: Option<Labelled>,
    cfg: &FineTune,
    seed: u64,
    progress: &dyn Progress,
) -> Result<FineTuned, TrainError> {
    cfg.check().map_err(TrainError::Settings)?;
    let bert = encoder.bert();
    let total = bert.layers.len();
    let first = total - cfg.layers.min(total);
    let base = encoder::load_weights(
        encoder.dir(),
        &EncoderMeta::load(encoder.dir())?,
        &Device::Cpu,
    )?;
    let weight_params = |peak: f64| candle_nn::ParamsAdamW {
        lr: peak,
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut trained = HashMap::new();
    let mut groups = Vec::new();
    for i in first..total {
        let mut vars = Vec::new();
        for name in bert::layer_tensor_names(i) {
            let var = Var::from_tensor(&base.dense(&name)?)?;
            vars.push(var.clone());
            trained.insert(name, var);
        }
        let peak = cfg.learning_rate * cfg.layer_decay.powi((total - 1 - i) as i32);
        let optimizer = candle_nn::AdamW::new(vars, weight_params(peak))?;
        groups.push(Group { optimizer, peak });
    }
    let source = VarSource(trained);
    // Layers over the variables. Their LayerNorms keep copies of the parameters for the
    // inference kernels, so scoring builds them again from the current values.
    let build = || {
        (first..total)
            .map(|i| BertLayer::load(&source, &bert.config, i, LinearMode::Dense, seed + i as u64))
            .collect::<candle_core::Result<Vec<_>>>()
    };
    let layers = build()?;
    let head_vars = VarMap::new();
    let head = head.trainable_copy(&head_vars, 0.1, seed)?;
    groups.push(Group {
        optimizer: candle_nn::AdamW::new(head_vars.all_vars(), weight_params(1.0))?,
        peak: cfg.head_learning_rate,
    });
    let mut all_vars: Vec<(String, Var)> = source
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    all_vars.extend(head_vars.data().lock().expect("varmap lock").clone());
    all_vars.sort_by(|a, b| a.0.cmp(&b.0));

    let states = frozen_states(encoder, train.tokens, first)?;
    let dev_states = dev
        .map(|d| frozen_states(encoder, d.tokens, first))
        .transpose()?;
    let weights = class_weights(train.ys, head.labels(), cfg.balance);
    let per_epoch = train.tokens.len().div_ceil(cfg.batch_size);
    let steps = per_epoch * cfg.epochs;
    let warmup = (steps as f64 * cfg.warmup).round() as usize;
    progress.stage("fine-tuning", steps);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xF7);
    let mut step = 0;
    let mut scores = Vec::new();
    let mut best: Option<(EpochScore, Vec<Tensor>)> = None;
    for epoch in 1..=cfg.epochs {
        for batch in length_batches(&states, cfg.batch_size, &mut rng) {
            super::trainer::checkpoint(progress)?;
            let factor = schedule(step, warmup, steps);
            for g in &mut groups {
                g.optimizer.set_learning_rate(g.peak * factor);
            }
            let pooled = forward(&layers, &states, &batch, Pass::Train)?;
            let logits = head.forward(&pooled, true)?;
            let y: Vec<u32> = batch.iter().map(|&i| train.ys[i]).collect();
            let w: Vec<f32> = y.iter().map(|&c| weights[c as usize]).collect();
            let loss = weighted_cross_entropy(&logits, &y, &w)?;
            let grads = loss.backward()?;
            for g in &mut groups {
                g.optimizer.step(&grads)?;
            }
            step += 1;
            progress.step(step);
        }
        let (Some(dev), Some(dev_states)) = (dev, &dev_states) else {
            continue;
        };
        let score = evaluate(&build()?, &head, dev_states, dev.ys, epoch)?;
        let better = best.as_ref().is_none_or(|(b, _)| {
            score.accuracy > b.accuracy || (score.accuracy == b.accuracy && score.loss < b.loss)
        });
        progress.note(&format!(
            "fine-tuning epoch {epoch}: dev accuracy {:.4}, loss {:.4}{}",
            score.accuracy,
            score.loss,
            if better { " (best so far)" } else { "" }
        ));
        scores.push(score);
        if better {
            let copy = all_vars
                .iter()
                .map(|(_, v)| v.as_tensor().copy())
                .collect::<candle_core::Result<Vec<_>>>()?;
            best = Some((score, copy));
        } else if epoch - best.as_ref().map_or(0, |(b, _)| b.epoch) >= cfg.patience {
            break;
        }
    }
    let kept = match &best {
        Some((score, copy)) => {
            for ((_, var), value) in all_vars.iter().zip(copy) {
                var.set(value)?;
            }
            score.epoch
        }
        None => cfg.epochs,
    };
    let tensors = source
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    Ok(FineTuned {
        tensors,
        head,
        epochs: scores,
        kept,
    })
}

/// The rates' multiplier at `step`: linear warm-up to 1 over `warmup` steps, then linear decay
/// to 0 at `steps`.
fn schedule(step: usize, warmup: usize, steps: usize) -> f64 {
    if step < warmup {
        (step + 1) as f64 / warmup as f64
    } else {
        (steps - step) as f64 / (steps - warmup).max(1) as f64
    }
}

/// `(mean class size / class size) ^ balance` per label (1 for labels without examples).
fn class_weights(ys: &[u32], labels: usize, balance: f64) -> Vec<f32> {
    let mut counts = vec![0usize; labels];
    for &y in ys {
        counts[y as usize] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let mean = ys.len() as f64 / present as f64;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                1.0
            } else {
                (mean / c as f64).powf(balance) as f32
            }
        })
        .collect()
}

/// Cross-entropy of `logits` `[n, labels]` against `ys`, each example weighed by `w`
/// (a weighted mean).
fn weighted_cross_entropy(logits: &Tensor, ys: &[u32], w: &[f32]) -> candle_core::Result<Tensor> {
    let dev = logits.device();
    let y = Tensor::new(ys, dev)?.unsqueeze(1)?;
    let picked = candle_nn::ops::log_softmax(logits, D::Minus1)?
        .gather(&y, 1)?
        .squeeze(1)?;
    let total: f32 = w.iter().sum();
    let w = Tensor::new(w, dev)?;
    (picked * w)?
        .sum_all()?
        .affine(-1.0 / f64::from(total), 0.0)
}

/// Shuffled batches of `size` examples, each drawn from a window of similar lengths: the
/// examples are shuffled, cut into windows of 50 batches, each window sorted by length and cut
/// into batches, and the batches shuffled.
fn length_batches(states: &[Tensor], size: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..states.len()).collect();
    shuffle(&mut order, rng);
    let len = |i: &usize| states[*i].dim(0).unwrap_or(0);
    let mut batches = Vec::new();
    for window in order.chunks_mut(size * 50) {
        window.sort_by_key(len);
        batches.extend(window.chunks(size).map(<[usize]>::to_vec));
    }
    shuffle(&mut batches, rng);
    batches
}

/// Fisher–Yates with the seeded generator.
fn shuffle<T>(xs: &mut [T], rng: &mut impl Rng) {
    for i in (1..xs.len()).rev() {
        xs.swap(i, rng.random_range(0..=i));
    }
}

/// Pooled, normalised sentence vectors of examples `idx` through the trainable layers.
fn forward(
    layers: &[BertLayer],
    states: &[Tensor],
    idx: &[usize],
    pass: Pass,
) -> candle_core::Result<Tensor> {
    let (xs, mask) = pad_states(states, idx)?;
    let bias = bert::mask_bias(&mask, DType::F32)?;
    let mut h = xs;
    for layer in layers {
        h = layer.forward(&h, &bias, pass)?;
    }
    bert::l2_normalize(&bert::mean_pool(&h, &mask)?)
}

/// Dev accuracy and mean cross-entropy with the current weights (no dropout).
fn evaluate(
    layers: &[BertLayer],
    head: &Head,
    states: &[Tensor],
    ys: &[u32],
    epoch: usize,
) -> candle_core::Result<EpochScore> {
    let mut order: Vec<usize> = (0..states.len()).collect();
    order.sort_by_key(|&i| states[i].dim(0).unwrap_or(0));
    let (mut right, mut loss) = (0usize, 0f64);
    for chunk in order.chunks(64) {
        let logits = head.forward(&forward(layers, states, chunk, Pass::Infer)?, false)?;
        let y: Vec<u32> = chunk.iter().map(|&i| ys[i]).collect();
        let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        right += predicted.iter().zip(&y).filter(|(p, y)| p == y).count();
        let mean = weighted_cross_entropy(&logits, &y, &vec![1.0; y.len()])?;
        loss += f64::from(mean.to_scalar::<f32>()?) * y.len() as f64;
    }
    let n = states.len().max(1) as f64;
    Ok(EpochScore {
        epoch,
        accuracy: right as f64 / n,
        loss: loss / n,
    })
}

/// Hidden states after layer `first` for every example, unpadded `[len, h]`.
fn frozen_states(
    encoder: &Encoder,
    tokens: &[Tokens],
    first: usize,
) -> candle_core::Result<Vec<Tensor>> {
    let bert = encoder.bert();
    let mut out = Vec::with_capacity(tokens.len());
    for chunk in tokens.chunks(32) {
        let items: Vec<&Tokens> = chunk.iter().collect();
        let batch = Batch::new(&items, &Device::Cpu)?;
        let x = bert.embed(&batch.input_ids, &batch.token_type_ids)?;
        let x = bert.forward_layers(x, &batch.attention_mask, 0..first, Pass::Infer)?;
        for (i, t) in chunk.iter().enumerate() {
            out.push(x.get(i)?.narrow(0, 0, t.ids.len())?.contiguous()?);
        }
    }
    Ok(out)
}

/// Pads cached states of `idx` into `[b, s, h]` with a `[b, s]` mask.
fn pad_states(states: &[Tensor], idx: &[usize]) -> candle_core::Result<(Tensor, Tensor)> {
    let len = idx
        .iter()
        .map(|&i| states[i].dim(0).unwrap_or(0))
        .max()
        .unwrap_or(1);
    let mut rows = Vec::new();
    let mut mask = Vec::new();
    for &i in idx {
        let s = &states[i];
        let n = s.dim(0)?;
        rows.push(s.pad_with_zeros(0, 0, len - n)?);
        mask.extend((0..len).map(|j| u32::from(j < n)));
    }
    Ok((
        Tensor::stack(&rows, 0)?,
        Tensor::from_vec(mask, (idx.len(), len), &Device::Cpu)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_falls_to_zero() {
        assert!((schedule(0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((schedule(9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((schedule(10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((schedule(55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(schedule(99, 10, 100) > 0.0);
        // No warm-up: full rate from the first step.
        assert!((schedule(0, 0, 4) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn class_weights_follow_balance() {
        let ys = [0, 0, 0, 1];
        assert_eq!(class_weights(&ys, 3, 0.0), vec![1.0, 1.0, 1.0]);
        let w = class_weights(&ys, 3, 1.0);
        // Mean class size 2: the big class weighs 2/3, the small one 2, the empty one 1.
        assert!((w[0] - 2.0 / 3.0).abs() < 1e-6 && (w[1] - 2.0).abs() < 1e-6 && w[2] == 1.0);
    }

    #[test]
    fn weighted_cross_entropy_is_the_weighted_mean() {
        let logits = Tensor::new(&[[2f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        let nll = |row: [f32; 2], y: usize| {
            let z = row[0].exp() + row[1].exp();
            -(row[y].exp() / z).ln()
        };
        let (a, b) = (nll([2.0, 0.0], 0), nll([0.0, 1.0], 0));
        let got = weighted_cross_entropy(&logits, &[0, 0], &[1.0, 3.0])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got - (a + 3.0 * b) / 4.0).abs() < 1e-5, "{got}");
        // Equal weights: candle's own cross-entropy.
        let plain = candle_nn::loss::cross_entropy(
            &logits,
            &Tensor::new(&[0u32, 0], &Device::Cpu).unwrap(),
        )
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
        let equal = weighted_cross_entropy(&logits, &[0, 0], &[1.0, 1.0])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((plain - equal).abs() < 1e-6);
    }

    #[test]
    fn length_batches_cover_every_example_once_in_similar_lengths() {
        let states: Vec<Tensor> = (0..100)
            .map(|i| Tensor::zeros((1 + i % 17, 2), DType::F32, &Device::Cpu).unwrap())
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let batches = length_batches(&states, 8, &mut rng);
        let mut seen: Vec<usize> = batches.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.len() <= 8));
        // One window of 400 holds all: every batch is a sorted run, so its spread is small.
        let spread: usize = batches
            .iter()
            .map(|b| {
                let lens: Vec<usize> = b.iter().map(|&i| 1 + i % 17).collect();
                lens.iter().max().unwrap() - lens.iter().min().unwrap()
            })
            .sum();
        assert!(spread < 3 * batches.len(), "{spread}");
        let again = length_batches(&states, 8, &mut rand::rngs::StdRng::seed_from_u64(3));
        assert_eq!(batches, again);
    }

    #[test]
    fn check_names_the_setting() {
        assert!(FineTune::default().check().is_ok());
        let bad = FineTune {
            warmup: 1.0,
            ..FineTune::default()
        };
        assert!(bad.check().unwrap_err().contains("--fine-tune-warmup"));
        let bad = FineTune {
            layer_decay: 1.5,
            ..FineTune::default()
        };
        assert!(bad.check().unwrap_err().contains("--fine-tune-layer-decay"));
        let bad = FineTune {
            epochs: 0,
            ..FineTune::default()
        };
        assert!(bad.check().unwrap_err().contains("--fine-tune-epochs"));
    }
}
