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
    fused_attention_on(kernel_path(), q, k, v, mask_bias, heads, train)
}

/// [`fused_attention`] on a given kernel path (tests run every path the CPU has).
fn fused_attention_on(
    path: KernelPath,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_bias: &Tensor,
    heads: usize,
    train: bool,
) -> Result<Option<Tensor>> {
    if train || path == KernelPath::Generic || !q.device().is_cpu() || q.dtype() != DType::F32 {
        return Ok(None);
    }
    let (b, s, h) = q.dims3()?;
    if !h.is_multiple_of(heads) || !(h / heads).is_multiple_of(BLOCK) {
        // The kernel works in blocks of 16 lanes of a head (BERT heads are 32 or 64 wide).
        return Ok(None);
    }
    let valid: Vec<bool> = with_f32(mask_bias, |m| m.iter().map(|&m| m > -1.0).collect())?;
    if valid.len() != b * s {
        candle_core::bail!(
            "fused attention: mask of {} values for {b} × {s}",
            valid.len()
        );
    }
    let shape = AttnShape {
        s,
        h,
        hd: h / heads,
    };
    // Each batch item's valid keys, gathered once per head (see `HeadKv`) and shared by all of
    // that item's query rows.
    let kvs: Vec<HeadKv> = with_f32(k, |kv| {
        with_f32(v, |vv| {
            (0..b * heads)
                .into_par_iter()
                .map(|t| HeadKv::gather(kv, vv, &shape, &valid, t / heads, t % heads))
                .collect()
        })
    })??;
    let scale = 1.0 / (shape.hd as f32).sqrt();
    let mut out = vec![0f32; b * s * h];
    with_f32(q, |qv| {
        // One scratch row of scores per task, not per query row.
        out.par_chunks_mut(h).enumerate().for_each_init(
            || vec![0f32; s.div_ceil(BLOCK) * BLOCK],
            |p, (row, o)| {
                if !valid[row] {
                    return;
                }
                let bi = row / s;
                let ctx = AttnRow {
                    q: &qv[row * h..(row + 1) * h],
                    heads: &kvs[bi * heads..(bi + 1) * heads],
                    hd: shape.hd,
                    scale,
                };
                run_attention_row(path, &ctx, p, o);
            },
        )
    })?;
    Ok(Some(Tensor::from_vec(out, (b, s, h), q.device())?))
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

/// Sizes of one attention call: sequence, hidden and head width.
struct AttnShape {
    s: usize,
    h: usize,
    hd: usize,
}

/// Width of the kernels' register blocks: 16 f32 (one AVX-512 register, two AVX2 ones).
const BLOCK: usize = 16;

/// One head of one batch item, its `n` valid keys only. `kt` holds K transposed in blocks of
/// `BLOCK` keys (`[n / BLOCK rounded up, hd, BLOCK]`, the last block padded with zeros), so
/// that one query's scores against a block of keys stay in registers; `v` is `[n, hd]`.
struct HeadKv {
    kt: Vec<f32>,
    v: Vec<f32>,
    n: usize,
}

impl HeadKv {
    fn gather(
        k: &[f32],
        v: &[f32],
        shape: &AttnShape,
        valid: &[bool],
        bi: usize,
        head: usize,
    ) -> Self {
        let AttnShape { s, h, hd } = *shape;
        let keys: Vec<usize> = (0..s).filter(|&j| valid[bi * s + j]).collect();
        let n = keys.len();
        let mut kt = vec![0f32; n.div_ceil(BLOCK) * hd * BLOCK];
        let mut vs = Vec::with_capacity(n * hd);
        for (jj, &j) in keys.iter().enumerate() {
            let src = (bi * s + j) * h + head * hd;
            let block = &mut kt[(jj / BLOCK) * hd * BLOCK..][..hd * BLOCK];
            for (d, &x) in k[src..src + hd].iter().enumerate() {
                block[d * BLOCK + jj % BLOCK] = x;
            }
            vs.extend_from_slice(&v[src..src + hd]);
        }
        Self { kt, v: vs, n }
    }
}

/// One query row's inputs: its `h` values and its batch item's keys and values, per head.
struct AttnRow<'a> {
    q: &'a [f32],
    heads: &'a [HeadKv],
    hd: usize,
    scale: f32,
}

dispatched! {
    /// One query row of attention into `out` (`p`: scratch scores).
    fn run_attention_row => attention_row(row: &AttnRow<'_>, p: &mut [f32], out: &mut [f32])
}

/// Every head of one query row: scores against the valid keys, softmax, weighted values;
/// `p` is scratch for one head's scores (one per key, rounded up to `BLOCK`). The scores and
/// the weighted sum accumulate `BLOCK` lanes in registers, and no loop has a branch or a
/// serial reduction, so everything vectorises.
#[inline(always)]
fn attention_row(row: &AttnRow<'_>, p: &mut [f32], out: &mut [f32]) {
    let hd = row.hd;
    for (head, kv) in row.heads.iter().enumerate() {
        let q = &row.q[head * hd..(head + 1) * hd];
        let o = &mut out[head * hd..(head + 1) * hd];
        if kv.n == 0 {
            o.fill(0.0);
            continue;
        }
        let p = &mut p[..kv.n.div_ceil(BLOCK) * BLOCK];
        for (pb, kb) in p
            .chunks_exact_mut(BLOCK)
            .zip(kv.kt.chunks_exact(hd * BLOCK))
        {
            let mut acc = [0f32; BLOCK];
            for (&qd, k) in q.iter().zip(kb.chunks_exact(BLOCK)) {
                for (a, &x) in acc.iter_mut().zip(k) {
                    *a = x.mul_add(qd, *a);
                }
            }
            for (pj, a) in pb.iter_mut().zip(acc) {
                *pj = a * row.scale;
            }
        }
        let p = &mut p[..kv.n];
        let max = lanes_fold(p, f32::NEG_INFINITY, f32::max, f32::max);
        for pj in p.iter_mut() {
            *pj = exp_approx(*pj - max);
        }
        let inv = 1.0 / lanes_fold(p, 0.0, |a, x| a + x, |a, b| a + b);
        for (c, oc) in o.chunks_exact_mut(BLOCK).enumerate() {
            let mut acc = [0f32; BLOCK];
            for (&pj, v) in p.iter().zip(kv.v.chunks_exact(hd)) {
                for (a, &x) in acc.iter_mut().zip(&v[c * BLOCK..(c + 1) * BLOCK]) {
                    *a = x.mul_add(pj, *a);
                }
            }
            for (o, a) in oc.iter_mut().zip(acc) {
                *o = a * inv;
            }
        }
    }
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
        let dev = Device::Cpu;
        // Heads 32 wide (two register blocks), up to 19 keys (a full key block and a partial one).
        let (b, s, heads, hd) = (4, 19, 3, 32);
        let h = heads * hd;
        let q = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let lens = [19usize, 16, 4, 1];
        let mask: Vec<u32> = lens
            .iter()
            .flat_map(|&l| (0..s).map(move |j| u32::from(j < l)))
            .collect();
        let mask = Tensor::from_vec(mask, (b, s), &dev).unwrap();
        let bias = crate::model::bert::mask_bias(&mask, DType::F32).unwrap();
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
        let r: Vec<Vec<Vec<f32>>> = reference.to_vec3().unwrap();
        for path in fast_paths() {
            let fused = fused_attention_on(path, &q, &k, &v, &bias, heads, false)
                .unwrap()
                .unwrap();
            let f: Vec<Vec<Vec<f32>>> = fused.to_vec3().unwrap();
            for (bi, &len) in lens.iter().enumerate() {
                for i in 0..s {
                    for c in 0..h {
                        let want = if i < len { r[bi][i][c] } else { 0.0 };
                        let got = f[bi][i][c];
                        assert!((got - want).abs() < 1e-5, "{path:?} {bi} {i} {c}");
                    }
                }
            }
        }
        let generic = fused_attention_on(KernelPath::Generic, &q, &k, &v, &bias, heads, false);
        assert!(generic.unwrap().is_none());
        assert!(fused_attention(&q, &k, &v, &bias, heads, true)
            .unwrap()
            .is_none());
        // Heads whose width is not a multiple of the block are left to candle's ops.
        assert!(fused_attention(&q, &k, &v, &bias, heads * 4, false)
            .unwrap()
            .is_none());
    }

    /// The vectorised paths this CPU can run.
    fn fast_paths() -> Vec<KernelPath> {
        match detect() {
            KernelPath::Avx512 => vec![KernelPath::Avx2, KernelPath::Avx512],
            KernelPath::Avx2 => vec![KernelPath::Avx2],
            KernelPath::Generic => vec![],
        }
    }

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
