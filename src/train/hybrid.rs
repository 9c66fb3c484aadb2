//! Training of the hybrid head: one multinomial logistic regression over the sentence
//! embedding (scaled by `embedding_weight`) and the n-gram view's sparse features, L2-regularised
//! as scikit-learn's (`C`: the data term summed, half the squared weights added), minimised with
//! L-BFGS. Full batch, every sum in a fixed order: the same data gives the same weights, byte for
//! byte, whatever the thread count.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::model::head::{Head, NgramWeights};
use crate::model::ngrams::{NgramSettings, SparseRow};

/// Pairs of steps L-BFGS remembers.
const MEMORY: usize = 8;
/// Most L-BFGS iterations.
pub const MAX_ITERATIONS: usize = 400;
/// Stop once an iteration lowers the objective by less than this share.
const TOLERANCE: f64 = 1e-9;

/// The training problem: examples, their labels and the weight layout
/// `[embedding weights L×D | n-gram weights L×V | biases L]`.
struct Problem<'a> {
    emb: Vec<Vec<f32>>,
    rows: &'a [SparseRow],
    ys: &'a [u32],
    labels: usize,
    dim: usize,
    features: usize,
    /// Regularisation per example: `1 / (C · n)`.
    lambda: f64,
}

impl Problem<'_> {
    fn size(&self) -> usize {
        self.labels * (self.dim + self.features + 1)
    }

    /// Logits of example `i` under weights `w`.
    fn logits(&self, w: &[f32], i: usize) -> Vec<f32> {
        let (l, d, v) = (self.labels, self.dim, self.features);
        let (dense, rest) = w.split_at(l * d);
        let (sparse, bias) = rest.split_at(l * v);
        let (e, row) = (&self.emb[i], &self.rows[i]);
        (0..l)
            .map(|k| {
                let wd = &dense[k * d..(k + 1) * d];
                let ws = &sparse[k * v..(k + 1) * v];
                bias[k] + wd.iter().zip(e).map(|(a, b)| a * b).sum::<f32>() + row.dot(ws)
            })
            .collect()
    }

    /// The objective (mean cross-entropy plus `lambda / 2 · |W|²`, biases free) and its gradient.
    fn evaluate(&self, w: &[f32]) -> (f64, Vec<f32>) {
        let n = self.ys.len();
        // Residuals: softmax minus the one-hot label, over n; and each example's loss.
        let per: Vec<(f64, Vec<f32>)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let z = self.logits(w, i);
                let m = z.iter().copied().fold(f32::MIN, f32::max);
                let sum: f64 = z.iter().map(|&x| f64::from(x - m).exp()).sum();
                let y = self.ys[i] as usize;
                let loss = sum.ln() - f64::from(z[y] - m);
                let r = z
                    .iter()
                    .enumerate()
                    .map(|(k, &x)| {
                        let p = f64::from(x - m).exp() / sum;
                        ((p - f64::from(u8::from(k == y))) / n as f64) as f32
                    })
                    .collect();
                (loss, r)
            })
            .collect();
        let (l, d, v) = (self.labels, self.dim, self.features);
        let data: f64 = per.iter().map(|(loss, _)| loss).sum::<f64>() / n as f64;
        let squares: f64 = w[..l * (d + v)].iter().map(|&x| f64::from(x).powi(2)).sum();
        let lambda = self.lambda as f32;
        // One label's gradient at a time, examples in order.
        let by_label: Vec<(Vec<f32>, Vec<f32>, f32)> = (0..l)
            .into_par_iter()
            .map(|k| {
                let mut gd: Vec<f32> = w[k * d..(k + 1) * d].iter().map(|x| lambda * x).collect();
                let start = l * d + k * v;
                let mut gs: Vec<f32> = w[start..start + v].iter().map(|x| lambda * x).collect();
                let mut gb = 0.0;
                for (i, (_, r)) in per.iter().enumerate() {
                    let r = r[k];
                    gb += r;
                    for (g, x) in gd.iter_mut().zip(&self.emb[i]) {
                        *g += r * x;
                    }
                    let row = &self.rows[i];
                    for (&j, &x) in row.idx.iter().zip(&row.val) {
                        gs[j as usize] += r * x;
                    }
                }
                (gd, gs, gb)
            })
            .collect();
        let mut grad = Vec::with_capacity(self.size());
        for (gd, _, _) in &by_label {
            grad.extend_from_slice(gd);
        }
        for (_, gs, _) in &by_label {
            grad.extend_from_slice(gs);
        }
        grad.extend(by_label.iter().map(|(_, _, gb)| gb));
        (data + self.lambda / 2.0 * squares, grad)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// Minimises `problem` from zero weights with L-BFGS and a backtracking (Armijo) line search;
/// `progress` hears each iteration.
fn minimise(problem: &Problem, progress: &dyn Fn(usize)) -> Vec<f32> {
    let mut w = vec![0f32; problem.size()];
    let (mut f, mut g) = problem.evaluate(&w);
    let mut memory: std::collections::VecDeque<(Vec<f32>, Vec<f32>, f64)> =
        std::collections::VecDeque::new();
    for iteration in 0..MAX_ITERATIONS {
        // Two-loop recursion: d = -H g.
        let mut q: Vec<f64> = g.iter().map(|&x| f64::from(x)).collect();
        let mut alphas = Vec::with_capacity(memory.len());
        for (s, y, rho) in memory.iter().rev() {
            let a = rho
                * s.iter()
                    .zip(&q)
                    .map(|(&s, q)| f64::from(s) * q)
                    .sum::<f64>();
            for (q, &y) in q.iter_mut().zip(y) {
                *q -= a * f64::from(y);
            }
            alphas.push(a);
        }
        let gamma = memory.back().map_or_else(
            || 1.0 / dot(&g, &g).sqrt().max(1e-12),
            |(s, y, _)| dot(s, y) / dot(y, y).max(1e-30),
        );
        for q in &mut q {
            *q *= gamma;
        }
        for ((s, y, rho), a) in memory.iter().zip(alphas.iter().rev()) {
            let b = rho
                * y.iter()
                    .zip(&q)
                    .map(|(&y, q)| f64::from(y) * q)
                    .sum::<f64>();
            for (q, &s) in q.iter_mut().zip(s) {
                *q += (a - b) * f64::from(s);
            }
        }
        let mut direction: Vec<f32> = q.iter().map(|&x| -x as f32).collect();
        let mut slope = dot(&g, &direction);
        if slope >= 0.0 {
            // Not a descent direction (rounding): start again from the gradient.
            memory.clear();
            let scale = 1.0 / dot(&g, &g).sqrt().max(1e-12);
            direction = g.iter().map(|&x| (-f64::from(x) * scale) as f32).collect();
            slope = dot(&g, &direction);
        }
        let mut step = 1.0f32;
        let found = loop {
            let next: Vec<f32> = w
                .iter()
                .zip(&direction)
                .map(|(x, d)| x + step * d)
                .collect();
            let (f_next, g_next) = problem.evaluate(&next);
            if f_next <= f + 1e-4 * f64::from(step) * slope {
                break Some((next, f_next, g_next));
            }
            if step < 1e-10 {
                break None;
            }
            step *= 0.5;
        };
        let Some((next, f_next, g_next)) = found else {
            // No step lowers the objective: as close as rounding allows.
            tracing::info!(
                iterations = iteration,
                objective = f,
                "logistic regression trained"
            );
            break;
        };
        let s: Vec<f32> = next.iter().zip(&w).map(|(a, b)| a - b).collect();
        let y: Vec<f32> = g_next.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            if memory.len() == MEMORY {
                memory.pop_front();
            }
            memory.push_back((s, y, 1.0 / sy));
        }
        let done = (f - f_next).abs() <= TOLERANCE * f.abs().max(f_next.abs()).max(1.0);
        (w, f, g) = (next, f_next, g_next);
        progress(iteration + 1);
        if done || iteration + 1 == MAX_ITERATIONS {
            tracing::info!(
                iterations = iteration + 1,
                objective = f,
                converged = done,
                "logistic regression trained"
            );
            break;
        }
    }
    w
}

/// Trains a multinomial logistic regression over n-gram features alone (`features` wide) on
/// labels `ys`, regularised by `c`: weights `[labels × features]` (row-major) and biases.
pub fn train_sparse(
    rows: &[SparseRow],
    features: usize,
    ys: &[u32],
    labels: usize,
    c: f32,
    progress: &dyn Fn(usize),
) -> (Vec<f32>, Vec<f32>) {
    let n = ys.len();
    let problem = Problem {
        emb: vec![Vec::new(); n],
        rows,
        ys,
        labels,
        dim: 0,
        features,
        lambda: 1.0 / (f64::from(c) * n.max(1) as f64),
    };
    let mut w = minimise(&problem, progress);
    let bias = w.split_off(labels * features);
    (w, bias)
}

/// Trains a linear head over embeddings `[n, dim]` and the same examples' n-gram features
/// (`features` wide) on labels `ys`.
pub fn train_hybrid(
    xs: &Tensor,
    rows: &[SparseRow],
    features: usize,
    ys: &[u32],
    labels: usize,
    settings: &NgramSettings,
    progress: &dyn Fn(usize),
) -> candle_core::Result<Head> {
    let (n, dim) = xs.dims2()?;
    let scale = settings.embedding_weight;
    let emb: Vec<Vec<f32>> = (xs * f64::from(scale))?.to_vec2()?;
    let problem = Problem {
        emb,
        rows,
        ys,
        labels,
        dim,
        features,
        lambda: 1.0 / (f64::from(settings.c) * n.max(1) as f64),
    };
    let w = minimise(&problem, progress);
    let (dense, rest) = w.split_at(labels * dim);
    let (sparse, bias) = rest.split_at(labels * features);
    // The embedding's scale is folded into its weights: the head reads plain embeddings.
    let dense: Vec<f32> = dense.iter().map(|x| x * scale).collect();
    Ok(Head::hybrid(
        Tensor::from_vec(dense, (labels, dim), &Device::Cpu)?,
        Tensor::from_slice(bias, labels, &Device::Cpu)?,
        NgramWeights {
            weights: sparse.to_vec(),
            features,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ngrams::NgramView;

    fn toy() -> (Tensor, Vec<String>, Vec<u32>) {
        // Three classes; the embedding tells 0 from the rest, only the words tell 1 from 2.
        let texts: Vec<String> = (0..60)
            .map(|i| match i % 3 {
                0 => format!("parcel late number {i}"),
                1 => format!("refund please now {i}"),
                _ => format!("invoice copy needed {i}"),
            })
            .collect();
        let emb: Vec<f32> = (0..60)
            .flat_map(|i| {
                if i % 3 == 0 {
                    [1.0f32, 0.0]
                } else {
                    [0.0, 1.0]
                }
            })
            .collect();
        let ys = (0..60).map(|i| i % 3).collect();
        (
            Tensor::from_vec(emb, (60, 2), &Device::Cpu).unwrap(),
            texts,
            ys,
        )
    }

    #[test]
    fn learns_from_both_views_reproducibly() {
        let (xs, texts, ys) = toy();
        let settings = NgramSettings::default();
        let view = NgramView::fit(&texts, &settings);
        let rows: Vec<SparseRow> = texts.iter().map(|t| view.features(t)).collect();
        let train = || train_hybrid(&xs, &rows, view.len(), &ys, 3, &settings, &|_| {}).unwrap();
        let (a, b) = (train(), train());
        // The same weights on one thread as on several.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(train);
        assert_eq!(a.to_safetensors().unwrap(), one.to_safetensors().unwrap());
        let logits = a
            .logits(&xs, Some(&rows))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let right = logits
            .iter()
            .zip(&ys)
            .filter(|(z, &y)| {
                z.iter()
                    .enumerate()
                    .max_by(|p, q| p.1.total_cmp(q.1))
                    .unwrap()
                    .0
                    == y as usize
            })
            .count();
        assert_eq!(right, 60);
        assert_eq!(a.to_safetensors().unwrap(), b.to_safetensors().unwrap());
        // Without the n-gram features the head refuses instead of answering from half its input.
        assert!(a.logits(&xs, None).is_err());
    }

    #[test]
    fn the_gradient_is_the_objectives() {
        let (xs, texts, ys) = toy();
        let view = NgramView::fit(&texts, &NgramSettings::default());
        let rows: Vec<SparseRow> = texts.iter().map(|t| view.features(t)).collect();
        let problem = Problem {
            emb: xs.to_vec2().unwrap(),
            rows: &rows,
            ys: &ys,
            labels: 3,
            dim: 2,
            features: view.len(),
            lambda: 0.01,
        };
        let w: Vec<f32> = (0..problem.size())
            .map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5)
            .collect();
        let (_, g) = problem.evaluate(&w);
        for i in [0, 3, 7, problem.size() - 2] {
            let h = 1e-2f32;
            let (mut up, mut down) = (w.clone(), w.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = (problem.evaluate(&up).0 - problem.evaluate(&down).0) / (2.0 * h as f64);
            assert!(
                (numeric - f64::from(g[i])).abs() < 1e-3,
                "{i}: {numeric} vs {}",
                g[i]
            );
        }
    }
}
