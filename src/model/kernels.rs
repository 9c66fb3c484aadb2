//! Hot CPU kernels with run-time dispatch. The build targets any x86-64 CPU; a kernel compiled
//! for AVX2+FMA (or AVX-512) is picked at run time when the CPU has it. Setting
//! `INTENT_ROUTER_GENERIC_KERNELS=1` forces the generic path, so tests cover both.
//! (Matrix multiplication is candle's `gemm`, which dispatches the same way by itself.)

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Environment switch that forces the generic (portable) kernels.
pub const GENERIC_ENV: &str = "INTENT_ROUTER_GENERIC_KERNELS";

/// Which implementation the kernels use on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPath {
    /// Portable code (candle's exact ops).
    Generic,
    /// Vectorised code compiled for AVX2 + FMA.
    Avx2,
    /// Vectorised code compiled for AVX-512F.
    Avx512,
}

/// The kernel path chosen for this process (detected once).
pub fn kernel_path() -> KernelPath {
    static PATH: OnceLock<KernelPath> = OnceLock::new();
    *PATH.get_or_init(|| {
        if std::env::var(GENERIC_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
            return KernelPath::Generic;
        }
        detect()
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> KernelPath {
    if std::arch::is_x86_feature_detected!("avx512f") {
        KernelPath::Avx512
    } else if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        KernelPath::Avx2
    } else {
        KernelPath::Generic
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> KernelPath {
    KernelPath::Generic
}

/// GELU (erf form). Inference on CPU f32 uses a vectorised rational erf approximation
/// (|error| < 1e-6, tested against the exact op); training and other devices use candle's
/// exact `gelu_erf`, which has a gradient.
pub fn gelu_erf(xs: &Tensor, train: bool) -> Result<Tensor> {
    if train
        || kernel_path() == KernelPath::Generic
        || !xs.device().is_cpu()
        || xs.dtype() != DType::F32
    {
        return xs.gelu_erf();
    }
    xs.apply_op1_no_bwd(&FastGelu(kernel_path()))
}

struct FastGelu(KernelPath);

impl CustomOp1 for FastGelu {
    fn name(&self) -> &'static str {
        "fast-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("fast-gelu-erf: expected f32 storage. This is a bug.")
        };
        let src = match layout.contiguous_offsets() {
            Some((a, b)) => &data[a..b],
            None => candle_core::bail!("fast-gelu-erf: non-contiguous input. This is a bug."),
        };
        let mut out = vec![0f32; src.len()];
        run_gelu(self.0, src, &mut out);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

fn run_gelu(path: KernelPath, src: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the path was chosen only after detecting the features at run time.
        match path {
            KernelPath::Avx512 => return unsafe { gelu_avx512(src, out) },
            KernelPath::Avx2 => return unsafe { gelu_avx2(src, out) },
            KernelPath::Generic => {}
        }
    }
    let _ = path;
    gelu_slice(src, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(src: &[f32], out: &mut [f32]) {
    gelu_slice(src, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(src: &[f32], out: &mut [f32]) {
    gelu_slice(src, out)
}

/// Branch-free loop the compiler vectorises for whichever target features it is inlined into.
#[inline(always)]
fn gelu_slice(src: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(src) {
        *o = 0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Rational approximation of erf on [-4, 4] (clamped outside, where erf is ±1 in f32); the
/// coefficients are Eigen's `generic_fast_erf_float`.
#[inline(always)]
pub fn erf_approx(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = (x2 * -2.726_142_3e-10 + 2.770_681_4e-8) * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let p = p * x;
    let mut q = x2 * -1.456_607_2e-5 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    p / q
}

/// Scaled dot-product attention for inference on CPU f32, fused: `q`, `k`, `v` are `[b, s, h]`
/// (heads side by side, as the projections produce them), `mask_bias` is `[b, 1, 1, s]` (0 for
/// tokens, a large negative value for padding). Returns the context `[b, s, h]` without
/// materialising the `[b, heads, s, s]` score tensor (100 MB at batch 32 × 256 tokens) or
/// transposing heads. Rows of padding get zeros: nothing reads them (every key of padding is
/// masked and pooling skips them). `None` when this path does not apply (training, another
/// device or dtype, or the generic switch), so that the caller uses candle's ops.
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_bias: &Tensor,
    heads: usize,
    train: bool,
) -> Result<Option<Tensor>> {
    let path = kernel_path();
    if train || path == KernelPath::Generic || !q.device().is_cpu() || q.dtype() != DType::F32 {
        return Ok(None);
    }
    let (b, s, h) = q.dims3()?;
    let hd = h / heads;
    let flat = |t: &Tensor| -> Result<Vec<f32>> { t.flatten_all()?.to_vec1::<f32>() };
    let (qv, kv, vv) = (flat(q)?, flat(k)?, flat(v)?);
    let valid: Vec<bool> = flat(mask_bias)?.iter().map(|&m| m > -1.0).collect();
    if valid.len() != b * s {
        candle_core::bail!(
            "fused attention: mask of {} values for {b} × {s}",
            valid.len()
        );
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; b * s * h];
    // One scratch row of probabilities per task, not per query row.
    let scratch = || vec![0f32; s];
    out.par_chunks_mut(h)
        .enumerate()
        .for_each_init(scratch, |p, (row, o)| {
            if !valid[row] {
                return;
            }
            let bi = row / s;
            let base = bi * s * h;
            let keys = &valid[bi * s..(bi + 1) * s];
            let ctx = AttnRow {
                q: &qv[row * h..(row + 1) * h],
                k: &kv[base..base + s * h],
                v: &vv[base..base + s * h],
                keys,
                h,
                hd,
                scale,
            };
            run_attention_row(path, &ctx, p, o);
        });
    Ok(Some(Tensor::from_vec(out, (b, s, h), q.device())?))
}

/// One query row's inputs: its `h` values, the batch item's keys and values (`[s, h]`) and
/// which keys are tokens.
struct AttnRow<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    keys: &'a [bool],
    h: usize,
    hd: usize,
    scale: f32,
}

fn run_attention_row(path: KernelPath, row: &AttnRow<'_>, p: &mut [f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the path was chosen only after detecting the features at run time.
        match path {
            KernelPath::Avx512 => return unsafe { attention_row_avx512(row, p, out) },
            KernelPath::Avx2 => return unsafe { attention_row_avx2(row, p, out) },
            KernelPath::Generic => {}
        }
    }
    let _ = path;
    attention_row(row, p, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_row_avx2(row: &AttnRow<'_>, p: &mut [f32], out: &mut [f32]) {
    attention_row(row, p, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attention_row_avx512(row: &AttnRow<'_>, p: &mut [f32], out: &mut [f32]) {
    attention_row(row, p, out)
}

/// Every head of one query row: scores against the valid keys, softmax, weighted values;
/// `p` is scratch for one head's probabilities (one per key).
#[inline(always)]
fn attention_row(row: &AttnRow<'_>, p: &mut [f32], out: &mut [f32]) {
    for head in 0..row.h / row.hd {
        let cols = head * row.hd..(head + 1) * row.hd;
        let q = &row.q[cols.clone()];
        let mut max = f32::NEG_INFINITY;
        for (j, pj) in p.iter_mut().enumerate() {
            if !row.keys[j] {
                continue;
            }
            let k = &row.k[j * row.h + cols.start..j * row.h + cols.end];
            let dot: f32 = q.iter().zip(k).map(|(a, b)| a * b).sum();
            *pj = dot * row.scale;
            max = max.max(*pj);
        }
        let mut sum = 0f32;
        for (j, pj) in p.iter_mut().enumerate() {
            *pj = if row.keys[j] {
                exp_approx(*pj - max)
            } else {
                0.0
            };
            sum += *pj;
        }
        let inv = 1.0 / sum;
        let o = &mut out[cols.clone()];
        o.fill(0.0);
        for (j, &pj) in p.iter().enumerate() {
            if pj == 0.0 {
                continue;
            }
            let v = &row.v[j * row.h + cols.start..j * row.h + cols.end];
            let w = pj * inv;
            for (o, v) in o.iter_mut().zip(v) {
                *o += w * v;
            }
        }
    }
}

/// exp(x) for x ≤ 0 (softmax after subtracting the maximum): 2^n · P(f) with a degree-6
/// polynomial on [-ln2/2, ln2/2]; relative error < 2e-7, 0 below -87.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let f = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = 1.987_569_1e-4f32;
    p = p * f + 1.398_199_9e-3;
    p = p * f + 8.333_452e-3;
    p = p * f + 4.166_579_6e-2;
    p = p * f + 0.166_666_66;
    p = p * f + 0.5;
    p = p * f * f + f + 1.0;
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_approx_matches_exp() {
        for i in 0..=87_000 {
            let x = -(i as f32) / 1000.0;
            let (a, e) = (exp_approx(x), x.exp());
            assert!((a - e).abs() <= 3e-7 * e + 1e-38, "{x}: {a} vs {e}");
        }
        assert!(exp_approx(-1000.0) < 2e-38);
    }

    #[test]
    fn fused_attention_matches_candle_ops_on_every_token() {
        if kernel_path() == KernelPath::Generic {
            eprintln!("skipped: generic kernels forced");
            return;
        }
        let dev = Device::Cpu;
        let (b, s, heads, hd) = (3, 9, 4, 8);
        let h = heads * hd;
        let q = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let lens = [9usize, 4, 1];
        let mask: Vec<u32> = lens
            .iter()
            .flat_map(|&l| (0..s).map(move |j| u32::from(j < l)))
            .collect();
        let mask = Tensor::from_vec(mask, (b, s), &dev).unwrap();
        let bias = crate::model::bert::mask_bias(&mask, DType::F32).unwrap();
        let fused = fused_attention(&q, &k, &v, &bias, heads, false)
            .unwrap()
            .unwrap();
        let split = |t: &Tensor| {
            t.reshape((b, s, heads, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (qs, ks, vs) = (split(&q), split(&k), split(&v));
        let scores = (qs.matmul(&ks.t().unwrap()).unwrap() / (hd as f64).sqrt())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let reference = probs
            .matmul(&vs)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, s, h))
            .unwrap();
        let f: Vec<Vec<Vec<f32>>> = fused.to_vec3().unwrap();
        let r: Vec<Vec<Vec<f32>>> = reference.to_vec3().unwrap();
        for (bi, &len) in lens.iter().enumerate() {
            for i in 0..s {
                for c in 0..h {
                    let want = if i < len { r[bi][i][c] } else { 0.0 };
                    assert!((f[bi][i][c] - want).abs() < 1e-5, "{bi} {i} {c}");
                }
            }
        }
        assert!(fused_attention(&q, &k, &v, &bias, heads, true)
            .unwrap()
            .is_none());
    }

    #[test]
    fn every_available_path_matches_exact_gelu() {
        let xs: Vec<f32> = (-8000..8000).map(|i| i as f32 / 1000.0).collect();
        let t = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let exact: Vec<f32> = t.gelu_erf().unwrap().to_vec1().unwrap();
        let mut paths = vec![KernelPath::Generic];
        if detect() != KernelPath::Generic {
            paths.push(KernelPath::Avx2);
        }
        if detect() == KernelPath::Avx512 {
            paths.push(KernelPath::Avx512);
        }
        for path in paths {
            let mut out = vec![0f32; xs.len()];
            run_gelu(path, &xs, &mut out);
            let worst = out
                .iter()
                .zip(&exact)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 2e-6, "{path:?}: max error {worst}");
        }
    }
}
