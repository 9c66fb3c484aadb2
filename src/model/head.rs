//! The classifier head on top of sentence embeddings: a linear layer or a small MLP, trained
//! with AdamW (candle-nn), seeded and reproducible, plus temperature calibration.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Result, Tensor, Var, D};
use candle_nn::{Linear, Optimizer, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::bert::Dropout;
use super::ngrams::SparseRow;

/// Shape of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HeadKind {
    /// One linear layer.
    Linear,
    /// Linear -> GELU -> dropout -> linear.
    Mlp {
        /// Hidden width.
        hidden: usize,
    },
}

/// A classifier head.
#[derive(Debug)]
pub struct Head {
    kind: HeadKind,
    layers: Vec<Linear>,
    dropout: Dropout,
    /// Weights of the n-gram view's features, `[labels][features]`, added to a linear head's
    /// logits (see [`crate::model::ngrams`]).
    ngrams: Option<NgramWeights>,
}

/// A linear map from sparse n-gram features to logits.
#[derive(Debug, Clone, PartialEq)]
pub struct NgramWeights {
    /// Row-major `[labels][features]`.
    pub weights: Vec<f32>,
    /// Features per label.
    pub features: usize,
}

impl NgramWeights {
    /// Adds each row's contribution to its logits (`logits[i]` has one value per label).
    pub fn add_to(&self, rows: &[SparseRow], logits: &mut [Vec<f32>]) {
        for (row, out) in rows.iter().zip(logits) {
            for (l, logit) in out.iter_mut().enumerate() {
                *logit += row.dot(&self.weights[l * self.features..(l + 1) * self.features]);
            }
        }
    }
}

/// Tensor name of the n-gram weights in `head.safetensors`.
const NGRAM_WEIGHTS: &str = "ngrams.weight";

/// Training settings for the head.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct HeadTraining {
    /// Head shape.
    pub kind: HeadKind,
    /// Passes over the data.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Dropout in the MLP.
    pub dropout: f32,
    /// Seed for initialisation, shuffling and dropout.
    pub seed: u64,
}

impl Default for HeadTraining {
    fn default() -> Self {
        Self {
            kind: HeadKind::Linear,
            epochs: 100,
            batch_size: 64,
            learning_rate: 5e-3,
            weight_decay: 1e-2,
            dropout: 0.1,
            seed: 42,
        }
    }
}

/// A linear layer whose weight and bias are new variables registered in `data` as `name.*`.
fn trainable_linear(
    data: &mut HashMap<String, Var>,
    name: &str,
    w: &Tensor,
    b: &Tensor,
) -> Result<Linear> {
    let (w, b) = (Var::from_tensor(w)?, Var::from_tensor(b)?);
    let linear = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
    data.insert(format!("{name}.weight"), w);
    data.insert(format!("{name}.bias"), b);
    Ok(linear)
}

fn names(kind: HeadKind) -> &'static [&'static str] {
    match kind {
        HeadKind::Linear => &["head.0"],
        HeadKind::Mlp { .. } => &["head.0", "head.1"],
    }
}

impl Head {
    /// Creates a freshly initialised head whose parameters live in `vars`.
    pub fn init(
        vars: &VarMap,
        kind: HeadKind,
        dim: usize,
        labels: usize,
        seed: u64,
        dropout: f32,
    ) -> Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dims: Vec<(usize, usize)> = match kind {
            HeadKind::Linear => vec![(dim, labels)],
            HeadKind::Mlp { hidden } => vec![(dim, hidden), (hidden, labels)],
        };
        let mut layers = Vec::new();
        let mut data = vars
            .data()
            .lock()
            .expect("varmap lock poisoned. This is a bug.");
        for (name, (i, o)) in names(kind).iter().zip(dims) {
            let bound = (1.0 / i as f32).sqrt();
            let w: Vec<f32> = (0..i * o)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let w = Tensor::from_vec(w, (o, i), &Device::Cpu)?;
            let b = Tensor::zeros(o, DType::F32, &Device::Cpu)?;
            layers.push(trainable_linear(&mut data, name, &w, &b)?);
        }
        Ok(Self {
            kind,
            layers,
            dropout: Dropout::new(dropout, seed ^ 0xD0),
            ngrams: None,
        })
    }

    /// A trainable copy whose parameters are new variables in `vars` (for fine-tuning).
    pub fn trainable_copy(&self, vars: &VarMap, dropout: f32, seed: u64) -> Result<Self> {
        let mut data = vars
            .data()
            .lock()
            .expect("varmap lock poisoned. This is a bug.");
        let mut layers = Vec::new();
        for (name, l) in names(self.kind).iter().zip(&self.layers) {
            let b = l.bias().expect("head layers have a bias. This is a bug.");
            layers.push(trainable_linear(&mut data, name, l.weight(), b)?);
        }
        Ok(Self {
            kind: self.kind,
            layers,
            dropout: Dropout::new(dropout, seed ^ 0xD1),
            ngrams: self.ngrams.clone(),
        })
    }

    /// Loads a head from safetensors.
    pub fn load(path: &Path, kind: HeadKind) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let get = |n: String| {
            tensors.get(&n).cloned().ok_or_else(|| {
                candle_core::Error::Msg(format!("{}: missing tensor `{n}`", path.display()))
            })
        };
        let layers = names(kind)
            .iter()
            .map(|n| {
                Ok(Linear::new(
                    get(format!("{n}.weight"))?,
                    Some(get(format!("{n}.bias"))?),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut head = Self {
            kind,
            layers,
            dropout: Dropout::new(0.0, 0),
            ngrams: None,
        };
        if let Some(t) = tensors.get(NGRAM_WEIGHTS) {
            if kind != HeadKind::Linear {
                candle_core::bail!(
                    "{}: `{NGRAM_WEIGHTS}` goes with a linear head, not an MLP",
                    path.display()
                );
            }
            let (labels, features) = t.dims2()?;
            if labels != head.labels() {
                candle_core::bail!(
                    "{}: `{NGRAM_WEIGHTS}` has {labels} rows, not one per label",
                    path.display()
                );
            }
            let weights = t.flatten_all()?.to_vec1()?;
            head.ngrams = Some(NgramWeights { weights, features });
        }
        Ok(head)
    }

    /// A linear head over the embedding (`weight [labels, dim]`, `bias [labels]`) and n-gram
    /// features.
    pub fn hybrid(weight: Tensor, bias: Tensor, ngrams: NgramWeights) -> Self {
        Self {
            kind: HeadKind::Linear,
            layers: vec![Linear::new(weight, Some(bias))],
            dropout: Dropout::new(0.0, 0),
            ngrams: Some(ngrams),
        }
    }

    /// The n-gram weights, where this head reads an n-gram view.
    pub fn ngrams(&self) -> Option<&NgramWeights> {
        self.ngrams.as_ref()
    }

    /// Logits for embeddings `[n, dim]` and, where the head reads them, the same texts'
    /// n-gram features.
    pub fn logits(&self, xs: &Tensor, rows: Option<&[SparseRow]>) -> Result<Tensor> {
        let logits = self.forward(xs, false)?;
        let (Some(ngrams), Some(rows)) = (&self.ngrams, rows) else {
            if self.ngrams.is_some() {
                candle_core::bail!("the head reads n-gram features, and none were given");
            }
            return Ok(logits);
        };
        let (n, labels) = logits.dims2()?;
        if rows.len() != n {
            candle_core::bail!("{n} embeddings but n-gram features of {} texts", rows.len());
        }
        let mut out: Vec<Vec<f32>> = logits.to_vec2()?;
        ngrams.add_to(rows, &mut out);
        Tensor::from_vec(out.concat(), (n, labels), xs.device())
    }

    /// Number of output labels.
    pub fn labels(&self) -> usize {
        self.layers
            .last()
            .map_or(0, |l| l.weight().dim(0).unwrap_or(0))
    }

    /// Input width.
    pub fn dim(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |l| l.weight().dim(1).unwrap_or(0))
    }

    /// Logits `[n, labels]` for embeddings `[n, dim]`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        match self.kind {
            HeadKind::Linear => self.layers[0].forward(xs),
            HeadKind::Mlp { .. } => {
                let h = self.layers[0].forward(xs)?.gelu_erf()?;
                let h = self.dropout.forward(&h, train)?;
                self.layers[1].forward(&h)
            }
        }
    }

    /// Writes the head as safetensors bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut map = HashMap::new();
        for (name, l) in names(self.kind).iter().zip(&self.layers) {
            map.insert(format!("{name}.weight"), l.weight().clone());
            map.insert(
                format!("{name}.bias"),
                l.bias()
                    .expect("head layers have a bias. This is a bug.")
                    .clone(),
            );
        }
        if let Some(n) = &self.ngrams {
            let t = Tensor::from_slice(&n.weights, (self.labels(), n.features), &Device::Cpu)?;
            map.insert(NGRAM_WEIGHTS.to_string(), t);
        }
        safetensors_bytes(&map)
    }
}

/// Named tensors as the bytes of a safetensors file (candle writes only to a path: through a
/// temporary file).
pub fn safetensors_bytes(map: &HashMap<String, Tensor>) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tensors.safetensors");
    candle_core::safetensors::save(map, &path)?;
    Ok(std::fs::read(path)?)
}

/// Trains a head on embeddings `xs` `[n, dim]` with label indices `ys`.
pub fn train_head(
    xs: &Tensor,
    ys: &[u32],
    labels: usize,
    cfg: &HeadTraining,
    progress: &dyn Fn(usize),
) -> Result<Head> {
    let (n, dim) = xs.dims2()?;
    let vars = VarMap::new();
    let head = Head::init(&vars, cfg.kind, dim, labels, cfg.seed, cfg.dropout)?;
    let params = candle_nn::ParamsAdamW {
        lr: cfg.learning_rate,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(vars.all_vars(), params)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed ^ 0x5A);
    let mut order: Vec<u32> = (0..n as u32).collect();
    for epoch in 0..cfg.epochs {
        shuffle(&mut order, &mut rng);
        for chunk in order.chunks(cfg.batch_size.max(1)) {
            let idx = Tensor::new(chunk, &Device::Cpu)?;
            let bx = xs.index_select(&idx, 0)?;
            let by: Vec<u32> = chunk.iter().map(|&i| ys[i as usize]).collect();
            let by = Tensor::new(by.as_slice(), &Device::Cpu)?;
            let loss = candle_nn::loss::cross_entropy(&head.forward(&bx, true)?, &by)?;
            opt.backward_step(&loss)?;
        }
        progress(epoch + 1);
    }
    Ok(head)
}

fn shuffle(v: &mut [u32], rng: &mut rand::rngs::StdRng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

/// Softmax of `logits / temperature` as rows of probabilities.
pub fn probabilities(logits: &Tensor, temperature: f32) -> Result<Vec<Vec<f32>>> {
    candle_nn::ops::softmax(&(logits / temperature as f64)?, D::Minus1)?.to_vec2()
}

/// Fits the temperature that minimises the negative log-likelihood of `ys` under
/// `softmax(logits / T)` (a log-space grid, then golden-section refinement).
pub fn fit_temperature(logits: &Tensor, ys: &[u32]) -> Result<f32> {
    if ys.is_empty() {
        return Ok(1.0);
    }
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let nll = |t: f64| -> f64 {
        rows.iter()
            .zip(ys)
            .map(|(r, &y)| {
                let m = r.iter().copied().fold(f32::MIN, f32::max) as f64;
                let z: f64 = r.iter().map(|&v| ((v as f64 - m) / t).exp()).sum();
                -((r[y as usize] as f64 - m) / t - z.ln())
            })
            .sum::<f64>()
    };
    let grid: Vec<f64> = (0..=60)
        .map(|i| 0.05 * 10f64.powf(i as f64 * 3.0 / 60.0))
        .collect();
    let best = grid
        .iter()
        .copied()
        .min_by(|a, b| nll(*a).total_cmp(&nll(*b)))
        .unwrap_or(1.0);
    let (mut lo, mut hi) = (best / 1.15, best * 1.15);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..40 {
        let (a, b) = (hi - g * (hi - lo), lo + g * (hi - lo));
        if nll(a) < nll(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    Ok(((lo + hi) / 2.0) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Tensor, Vec<u32>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..90u32 {
            let y = i % 3;
            for d in 0..8 {
                let centre = if d as u32 == y { 2.0 } else { 0.0 };
                xs.push(centre + rng.random_range(-0.5f32..0.5));
            }
            ys.push(y);
        }
        (Tensor::from_vec(xs, (90, 8), &Device::Cpu).unwrap(), ys)
    }

    #[test]
    fn trains_reproducibly_and_separates_classes() {
        let (xs, ys) = toy();
        let cfg = HeadTraining {
            epochs: 30,
            batch_size: 16,
            ..Default::default()
        };
        let a = train_head(&xs, &ys, 3, &cfg, &|_| {}).unwrap();
        let b = train_head(&xs, &ys, 3, &cfg, &|_| {}).unwrap();
        let (la, lb) = (
            a.forward(&xs, false).unwrap(),
            b.forward(&xs, false).unwrap(),
        );
        assert_eq!(la.to_vec2::<f32>().unwrap(), lb.to_vec2::<f32>().unwrap());
        let pred: Vec<u32> = la.argmax(1).unwrap().to_vec1().unwrap();
        let correct = pred.iter().zip(&ys).filter(|(p, y)| p == y).count();
        assert!(correct >= 85, "{correct}/90");
    }

    #[test]
    fn temperature_shrinks_overconfident_logits() {
        // Logits scaled 10x with one in five wrong: the fitted temperature is well above 1.
        let mut rows = Vec::new();
        let mut ys = Vec::new();
        for i in 0..50 {
            rows.extend_from_slice(&[10.0f32, 0.0]);
            ys.push(if i % 5 == 0 { 1 } else { 0 });
        }
        let logits = Tensor::from_vec(rows, (50, 2), &Device::Cpu).unwrap();
        let t = fit_temperature(&logits, &ys).unwrap();
        // Optimal: sigmoid(10/T) = 0.8 -> T = 10 / ln(4) ≈ 7.21.
        assert!((t - 7.21).abs() < 0.1, "{t}");
    }

    #[test]
    fn safetensors_round_trip() {
        let (xs, ys) = toy();
        let cfg = HeadTraining {
            epochs: 2,
            kind: HeadKind::Linear,
            ..Default::default()
        };
        let head = train_head(&xs, &ys, 3, &cfg, &|_| {}).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.safetensors");
        std::fs::write(&p, head.to_safetensors().unwrap()).unwrap();
        let back = Head::load(&p, HeadKind::Linear).unwrap();
        assert_eq!(
            head.forward(&xs, false).unwrap().to_vec2::<f32>().unwrap(),
            back.forward(&xs, false).unwrap().to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn ngram_weights_are_refused_beside_an_mlp() {
        let z = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap();
        let map = HashMap::from([
            ("head.0.weight".to_string(), z(&[4, 8])),
            ("head.0.bias".to_string(), z(&[4])),
            ("head.1.weight".to_string(), z(&[3, 4])),
            ("head.1.bias".to_string(), z(&[3])),
            (NGRAM_WEIGHTS.to_string(), z(&[3, 5])),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.safetensors");
        candle_core::safetensors::save(&map, &p).unwrap();
        let e = Head::load(&p, HeadKind::Mlp { hidden: 4 }).unwrap_err();
        assert!(
            e.to_string()
                .contains("h.safetensors: `ngrams.weight` goes with a linear head, not an MLP"),
            "{e}"
        );
    }
}
