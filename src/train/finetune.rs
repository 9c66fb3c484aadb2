//! `train --fine-tune`: fine-tunes the encoder's top layers together with the head. The frozen
//! lower layers run once per example (their outputs are cached in memory); the top layers and
//! the head train with dropout and AdamW. The result is a set of f32 tensors that override the
//! base encoder's by name (`overrides.safetensors`).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::model::bert::{self, BertLayer, LinearMode, WeightSource};
use crate::model::encoder::{self, Encoder, EncoderError};
use crate::model::files::EncoderMeta;
use crate::model::head::Head;
use crate::text::Tokens;

/// Fine-tuning settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct FineTune {
    /// How many top layers train.
    pub layers: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// Examples per step.
    pub batch_size: usize,
}

impl Default for FineTune {
    fn default() -> Self {
        Self {
            layers: 2,
            epochs: 3,
            learning_rate: 5e-5,
            batch_size: 16,
        }
    }
}

/// Result of fine-tuning: tensors overriding the base by name, and the co-trained head.
pub struct FineTuned {
    /// Trained layer tensors (HF names).
    pub overrides: HashMap<String, Tensor>,
    /// The head trained with them.
    pub head: Head,
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

/// Fine-tunes the top `cfg.layers` layers and the head on tokenised examples with labels `ys`.
pub fn fine_tune(
    encoder: &Encoder,
    head: &Head,
    tokens: &[Tokens],
    ys: &[u32],
    cfg: &FineTune,
    seed: u64,
    progress: &dyn Fn(usize),
) -> Result<FineTuned, EncoderError> {
    let wrap = |context: &str| {
        let context = context.to_string();
        move |source| EncoderError::Candle {
            context: context.clone(),
            source,
        }
    };
    let bert = encoder.bert();
    let total = bert.layers.len();
    let first = total - cfg.layers.min(total);
    let base = encoder::load_weights(
        encoder.dir(),
        &EncoderMeta::load(encoder.dir())?,
        &Device::Cpu,
    )?;
    let vars = VarMap::new();
    let mut trained = HashMap::new();
    for i in first..total {
        for name in bert::layer_tensor_names(i) {
            let var = Var::from_tensor(&base.dense(&name).map_err(wrap("reading base layers"))?)
                .map_err(wrap("var"))?;
            vars.data()
                .lock()
                .expect("varmap lock. This is a bug.")
                .insert(name.clone(), var.clone());
            trained.insert(name, var);
        }
    }
    let source = VarSource(trained);
    let layers = (first..total)
        .map(|i| BertLayer::load(&source, &bert.config, i, LinearMode::Dense, seed + i as u64))
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(wrap("building trainable layers"))?;
    let head = head
        .trainable_copy(&vars, 0.1, seed)
        .map_err(wrap("head"))?;
    let frozen = frozen_states(encoder, tokens, first).map_err(wrap("frozen layers"))?;
    let params = candle_nn::ParamsAdamW {
        lr: cfg.learning_rate,
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(vars.all_vars(), params).map_err(wrap("optimizer"))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xF7);
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    for epoch in 0..cfg.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        for chunk in order.chunks(cfg.batch_size.max(1)) {
            let (xs, mask) = pad_states(&frozen, chunk).map_err(wrap("batch"))?;
            let bias = bert::mask_bias(&mask, DType::F32).map_err(wrap("mask"))?;
            let mut h = xs;
            for layer in &layers {
                h = layer
                    .forward(&h, &bias, bert::Pass::Train)
                    .map_err(wrap("forward"))?;
            }
            let pooled = bert::l2_normalize(&bert::mean_pool(&h, &mask).map_err(wrap("pool"))?)
                .map_err(wrap("norm"))?;
            let y: Vec<u32> = chunk.iter().map(|&i| ys[i]).collect();
            let y = Tensor::new(y.as_slice(), &Device::Cpu).map_err(wrap("labels"))?;
            let loss = candle_nn::loss::cross_entropy(
                &head.forward(&pooled, true).map_err(wrap("head"))?,
                &y,
            )
            .map_err(wrap("loss"))?;
            opt.backward_step(&loss).map_err(wrap("step"))?;
        }
        progress(epoch + 1);
    }
    let overrides = source
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    Ok(FineTuned { overrides, head })
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
        let x = bert.forward_layers(x, &batch.attention_mask, 0..first, bert::Pass::Infer)?;
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
