//! Hot CPU kernels with run-time dispatch. The build targets any x86-64 CPU; a kernel compiled
//! for AVX2+FMA (or AVX-512) is picked at run time when the CPU has it. Setting
//! `INTENT_ROUTER_GENERIC_KERNELS=1` forces the generic path, so tests cover both.
//! (Matrix multiplication is candle's `gemm`, which dispatches the same way by itself.)

use std::mem::MaybeUninit;
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

/// Defines `fn $run(path, args…)`, which runs the `#[inline(always)]` body `$body` compiled for
/// AVX-512F or for AVX2 + FMA, as `path` (detected at run time) allows, or as portable code.
/// The body is written as plain loops without branches or serial reductions, so that the
/// compiler vectorises it for whichever features it is inlined into.
macro_rules! dispatched {
    ($(#[$doc:meta])* fn $run:ident => $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        fn $run(path: KernelPath, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                // SAFETY: the path was chosen only after detecting the features at run time.
                match path {
                    KernelPath::Avx512 => return unsafe { avx512($($arg),*) },
                    KernelPath::Avx2 => return unsafe { avx2($($arg),*) },
                    KernelPath::Generic => {}
                }
            }
            let _ = path;
            $body($($arg),*)
        }
    };
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
        // Chunks of 16k values over rayon: large enough to amortise a task, small enough that
        // a batch of one ticket (s × 1536 values per layer) still spreads over the cores.
        const CHUNK: usize = 1 << 14;
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(o, x)| run_gelu(self.0, x, o));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

dispatched! {
    /// GELU of `src` into `out` (same length).
    fn run_gelu => gelu_slice(src: &[f32], out: &mut [f32])
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

/// Runs `f` on a CPU f32 tensor's values in row-major order: borrowed when the tensor is
/// contiguous (the projections' outputs are), copied otherwise.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&data[start..end]));
        }
    }
    Ok(f(&t.flatten_all()?.to_vec1::<f32>()?))
}

/// Folds `xs` over 16 independent lanes with `fold`, then merges the lanes with `combine`
/// (as rayon's fold / reduce): unlike a plain fold (one serial chain), this vectorises.
#[inline(always)]
fn lanes_fold(
    xs: &[f32],
    init: f32,
    fold: impl Fn(f32, f32) -> f32,
    combine: impl Fn(f32, f32) -> f32,
) -> f32 {
    const LANES: usize = 16;
    let mut acc = [init; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder().iter().fold(init, |a, &x| fold(a, x));
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = fold(*a, x);
        }
    }
    acc.into_iter().fold(rest, combine)
}

/// A LayerNorm's parameters as plain values, for [`add_layer_norm`].
#[derive(Debug, Clone)]
pub struct NormParams {
    /// Scale, one per feature.
    pub weight: Vec<f32>,
    /// Shift, one per feature.
    pub bias: Vec<f32>,
    /// Added to the variance.
    pub eps: f32,
}

/// `LayerNorm(a + b)` over the last dimension for inference on CPU f32: a residual connection
/// and its norm in one parallel pass over rows. (candle's add would run on candle's own thread
/// pool, whose threads spin after each op and take the cores from rayon's, where every other
/// kernel of a layer runs.) `None` when this path does not apply, so that the caller uses
/// candle's ops.
pub fn add_layer_norm(
    a: &Tensor,
    b: &Tensor,
    norm: &NormParams,
    train: bool,
) -> Result<Option<Tensor>> {
    add_layer_norm_on(kernel_path(), a, b, norm, train)
}

/// [`add_layer_norm`] on a given kernel path (tests run every path the CPU has).
fn add_layer_norm_on(
    path: KernelPath,
    a: &Tensor,
    b: &Tensor,
    norm: &NormParams,
    train: bool,
) -> Result<Option<Tensor>> {
    let h = norm.weight.len();
    if train
        || path == KernelPath::Generic
        || !a.device().is_cpu()
        || a.dtype() != DType::F32
        || b.dtype() != DType::F32
        || a.shape() != b.shape()
        || a.dims().last() != Some(&h)
    {
        return Ok(None);
    }
    // Rows per task: a few thousand values, so that a task outweighs its scheduling.
    const ROWS: usize = 16;
    let out = with_f32(a, |a| {
        with_f32(b, |b| {
            let mut out: Vec<f32> = Vec::with_capacity(a.len());
            out.spare_capacity_mut()[..a.len()]
                .par_chunks_mut(h * ROWS)
                .zip(a.par_chunks(h * ROWS).zip(b.par_chunks(h * ROWS)))
                .for_each_init(
                    || vec![0f32; h],
                    |sum, (o, (a, b))| run_add_norm(path, a, b, norm, sum, o),
                );
            // SAFETY: the chunks cover the whole capacity and `add_norm_rows` writes every
            // value of its chunk.
            unsafe { out.set_len(a.len()) };
            out
        })
    })??;
    Ok(Some(Tensor::from_vec(out, a.shape(), a.device())?))
}

dispatched! {
    /// `LayerNorm(a + b)` of whole rows into `out`; `sum` is scratch for one row.
    fn run_add_norm => add_norm_rows(
        a: &[f32],
        b: &[f32],
        norm: &NormParams,
        sum: &mut [f32],
        out: &mut [MaybeUninit<f32>],
    )
}

#[inline(always)]
fn add_norm_rows(
    a: &[f32],
    b: &[f32],
    norm: &NormParams,
    sum: &mut [f32],
    out: &mut [MaybeUninit<f32>],
) {
    let h = norm.weight.len();
    let rows = a.chunks_exact(h).zip(b.chunks_exact(h));
    for ((a, b), o) in rows.zip(out.chunks_exact_mut(h)) {
        for ((s, &x), &y) in sum.iter_mut().zip(a).zip(b) {
            *s = x + y;
        }
        let mean = lanes_fold(sum, 0.0, |a, x| a + x, |a, b| a + b) / h as f32;
        for s in sum.iter_mut() {
            *s -= mean;
        }
        let var = lanes_fold(sum, 0.0, |a, x| x.mul_add(x, a), |a, b| a + b) / h as f32;
        let inv = 1.0 / (var + norm.eps).sqrt();
        let params = norm.weight.iter().zip(&norm.bias);
        for ((o, &s), (&w, &bias)) in o.iter_mut().zip(sum.iter()).zip(params) {
            o.write((s * inv).mul_add(w, bias));
        }
    }
}

/// The vectorised paths this CPU can run (tests run each).
#[cfg(test)]
pub(crate) fn fast_paths() -> Vec<KernelPath> {
    match detect() {
        KernelPath::Avx512 => vec![KernelPath::Avx2, KernelPath::Avx512],
        KernelPath::Avx2 => vec![KernelPath::Avx2],
        KernelPath::Generic => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn residual_layer_norm_matches_candle_ops_on_every_path() {
        let dev = Device::Cpu;
        // 37 rows of 48: two full tasks of 16 rows and a partial one.
        let a = Tensor::randn(0f32, 2.0, (37, 48), &dev).unwrap();
        let b = Tensor::randn(1f32, 1.0, (37, 48), &dev).unwrap();
        let weight = Tensor::randn(1f32, 0.2, 48, &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.2, 48, &dev).unwrap();
        let norm = NormParams {
            weight: weight.to_vec1().unwrap(),
            bias: bias.to_vec1().unwrap(),
            eps: 1e-12,
        };
        let sum = (&a + &b).unwrap();
        let reference = candle_nn::ops::layer_norm(&sum, &weight, &bias, 1e-12).unwrap();
        for path in fast_paths() {
            let fused = add_layer_norm_on(path, &a, &b, &norm, false)
                .unwrap()
                .unwrap();
            let diff = crate::model::max_abs_diff(&fused, &reference);
            assert!(diff < 1e-5, "{path:?}: {diff}");
        }
        let generic = add_layer_norm_on(KernelPath::Generic, &a, &b, &norm, false);
        assert!(generic.unwrap().is_none());
        assert!(add_layer_norm(&a, &b, &norm, true).unwrap().is_none());
    }

    #[test]
    fn every_available_path_matches_exact_gelu() {
        let xs: Vec<f32> = (-8000..8000).map(|i| i as f32 / 1000.0).collect();
        let t = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let exact: Vec<f32> = t.gelu_erf().unwrap().to_vec1().unwrap();
        for path in [vec![KernelPath::Generic], fast_paths()].concat() {
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
