//! Fused scaled dot-product attention for CPU inference in f32: no `[b, heads, s, s]` score
//! tensor, no head transposes, padding skipped. Owns this one kernel; the layer that calls it
//! is [`crate::model::bert`], the dispatch and the shared vector helpers are in
//! [`crate::model::kernels`].
//!
//! Work is split by (batch item, head). A task gathers its head's valid queries, keys and
//! values once into scratch laid out for the registers, then takes the queries a block of
//! `R` rows at a time: each key block loaded (16 keys) or value row feeds `R` independent
//! accumulators, so the multiply-adds run at the CPU's throughput, not one chain at its
//! latency, and a head's keys and values (29 KB each at 256 tokens) stay in the core's cache
//! while all its rows read them.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

use crate::model::kernels::{kernel_path, with_f32, KernelPath};

/// Width of the kernels' register blocks: 16 f32 (one AVX-512 register, two AVX2 ones).
const BLOCK: usize = 16;

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
        heads,
    };
    let mut out = vec![0f32; b * s * h];
    let dst = Disjoint(out.as_mut_ptr());
    with_f32(q, |qv| {
        with_f32(k, |kv| {
            with_f32(v, |vv| {
                let input = AttnInput {
                    q: qv,
                    k: kv,
                    v: vv,
                    valid: &valid,
                    shape: &shape,
                };
                (0..b * heads).into_par_iter().for_each_init(
                    HeadScratch::default,
                    |scratch, task| {
                        let (bi, head) = (task / heads, task % heads);
                        scratch.gather(&input, bi, head, rows_per_block(path));
                        run_head(path, scratch);
                        // SAFETY: task (bi, head) writes only the `hd` values of head `head`
                        // in the rows of item `bi`, which no other task writes, and `out`
                        // outlives the parallel loop.
                        unsafe { scratch.scatter(&dst, &shape, bi, head) };
                    },
                )
            })
        })
    })???;
    Ok(Some(Tensor::from_vec(out, (b, s, h), q.device())?))
}

/// Sizes of one attention call: sequence, hidden, head width and heads.
struct AttnShape {
    s: usize,
    h: usize,
    hd: usize,
    heads: usize,
}

/// One attention call's inputs, `[b, s, h]` each, and which of the `b × s` tokens are valid.
struct AttnInput<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    valid: &'a [bool],
    shape: &'a AttnShape,
}

/// The output buffer, written by tasks at disjoint places (see [`HeadScratch::scatter`]).
struct Disjoint(*mut f32);

// SAFETY: tasks write through the pointer only at places no other task touches.
unsafe impl Sync for Disjoint {}

/// Query rows per register block of `path`'s kernel.
fn rows_per_block(path: KernelPath) -> usize {
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512 => avx512::ROWS,
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2 => avx2::ROWS,
        _ => 1,
    }
}

/// One (batch item, head)'s valid tokens laid out for the kernel, reused across tasks.
#[derive(Default)]
struct HeadScratch {
    /// Positions of the item's valid tokens (its queries and its keys).
    tokens: Vec<usize>,
    /// Head width.
    hd: usize,
    /// Queries scaled by 1/√hd, per block of `R` rows transposed: `[blocks, hd, R]`, the
    /// rows past the last valid one zero.
    q: Vec<f32>,
    /// Keys transposed per block of `BLOCK` keys: `[key blocks, hd, BLOCK]`, zero-padded.
    kt: Vec<f32>,
    /// Values `[key blocks × BLOCK, hd]`, zero-padded.
    v: Vec<f32>,
    /// One row block's scores, then probabilities: `[key blocks, R, BLOCK]`.
    p: Vec<f32>,
    /// Context rows `[blocks × R, hd]`.
    out: Vec<f32>,
}

impl HeadScratch {
    /// Gathers head `head` of item `bi`: its valid tokens' queries, keys and values.
    fn gather(&mut self, input: &AttnInput<'_>, bi: usize, head: usize, rows: usize) {
        let AttnShape { s, h, hd, .. } = *input.shape;
        self.hd = hd;
        self.tokens.clear();
        self.tokens
            .extend((0..s).filter(|&j| input.valid[bi * s + j]));
        let n = self.tokens.len();
        let (key_blocks, row_blocks) = (n.div_ceil(BLOCK), n.div_ceil(rows));
        let scale = 1.0 / (hd as f32).sqrt();
        reset(&mut self.q, row_blocks * hd * rows);
        reset(&mut self.kt, key_blocks * hd * BLOCK);
        reset(&mut self.v, key_blocks * BLOCK * hd);
        // Every score and context value is written before it is read.
        self.p.resize(key_blocks * rows * BLOCK, 0.0);
        self.out.resize(row_blocks * rows * hd, 0.0);
        for (i, &j) in self.tokens.iter().enumerate() {
            let src = (bi * s + j) * h + head * hd;
            let qb = &mut self.q[(i / rows) * hd * rows..][..hd * rows];
            for (d, &x) in input.q[src..src + hd].iter().enumerate() {
                qb[d * rows + i % rows] = x * scale;
            }
            let kb = &mut self.kt[(i / BLOCK) * hd * BLOCK..][..hd * BLOCK];
            for (d, &x) in input.k[src..src + hd].iter().enumerate() {
                kb[d * BLOCK + i % BLOCK] = x;
            }
            self.v[i * hd..(i + 1) * hd].copy_from_slice(&input.v[src..src + hd]);
        }
    }

    /// Writes the context rows into `[b, s, h]` at head `head` of item `bi`.
    ///
    /// # Safety
    /// `dst` must point to a live `[b, s, h]` buffer that no one else writes at these places.
    unsafe fn scatter(&self, dst: &Disjoint, shape: &AttnShape, bi: usize, head: usize) {
        let AttnShape { s, h, hd, heads } = *shape;
        debug_assert!(head < heads && hd == self.hd);
        for (i, &j) in self.tokens.iter().enumerate() {
            let at = (bi * s + j) * h + head * hd;
            let row = &self.out[i * hd..(i + 1) * hd];
            // SAFETY: `at + hd ≤ b·s·h` and the place is this task's alone (the caller's
            // contract).
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), dst.0.add(at), hd) };
        }
    }
}

/// Clears `buf` to `len` zeros, keeping its allocation.
fn reset(buf: &mut Vec<f32>, len: usize) {
    buf.clear();
    buf.resize(len, 0.0);
}

/// Runs the kernel of `path` on one gathered head.
fn run_head(path: KernelPath, w: &mut HeadScratch) {
    #[cfg(target_arch = "x86_64")]
    {
        w.check(rows_per_block(path));
        // SAFETY: the path was chosen only after detecting the features at run time, and
        // `check` verified the scratch's sizes for its row block, which the kernels rely on.
        match path {
            KernelPath::Avx512 => return unsafe { avx512::head(w) },
            KernelPath::Avx2 => return unsafe { avx2::head(w) },
            KernelPath::Generic => {}
        }
    }
    unreachable!(
        "fused attention runs only on the AVX2 and AVX-512 paths ({path:?}). This is a bug."
    )
}

impl HeadScratch {
    /// Panics unless the buffers have the sizes [`HeadScratch::gather`] gives them (the
    /// kernels read and write them through raw pointers).
    fn check(&self, rows: usize) {
        let (hd, n) = (self.hd, self.tokens.len());
        let key_blocks = n.div_ceil(BLOCK);
        let ok = hd.is_multiple_of(BLOCK)
            && self.q.len() == n.div_ceil(rows) * hd * rows
            && self.kt.len() == key_blocks * hd * BLOCK
            && self.v.len() == key_blocks * BLOCK * hd
            && self.p.len() == key_blocks * rows * BLOCK
            && self.out.len() == self.q.len();
        assert!(ok, "attention scratch of the wrong size. This is a bug.");
    }
}

/// Writes `head`, the attention of one gathered head `$rows` query rows at a time, and the
/// vector exp it uses, for one instruction set: `V` holds 16 f32, and `zero`, `splat`,
/// `load`, `store`, `fma` (a·b + c), `mul`, `add`, `sub`, `max`, `round` (to nearest),
/// `scale2` (a·2ⁿ for whole n) and `lanes` work on it.
#[cfg(target_arch = "x86_64")]
macro_rules! head_kernel {
    ($features:literal, $rows:expr) => {
        /// Query rows per register block.
        pub(super) const ROWS: usize = $rows;

        /// Attention of one gathered head (see [`super::HeadScratch`] for the layouts):
        /// scores of `ROWS` query rows against each block of 16 keys, softmax, weighted
        /// values; every key or value load feeds `ROWS` independent accumulators.
        ///
        /// # Safety
        /// The CPU must have the features, and the scratch the sizes `check` verifies.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn head(w: &mut super::HeadScratch) {
            use super::BLOCK;
            let (hd, n) = (w.hd, w.tokens.len());
            if n == 0 {
                return;
            }
            let key_blocks = n.div_ceil(BLOCK);
            let tail = n - (key_blocks - 1) * BLOCK;
            let (kt, v, p) = (w.kt.as_ptr(), w.v.as_ptr(), w.p.as_mut_ptr());
            for (qb, ob) in
                w.q.chunks_exact(hd * ROWS)
                    .zip(w.out.chunks_exact_mut(hd * ROWS))
            {
                // SAFETY (every raw access below): `kt` holds `key_blocks` blocks of
                // `hd × BLOCK`, `v` `key_blocks × BLOCK` rows of `hd`, `p` `key_blocks`
                // blocks of `ROWS × BLOCK`, and `qb` / `ob` `hd × ROWS` values.
                let q = qb.as_ptr();
                for kb in 0..key_blocks {
                    let k = unsafe { kt.add(kb * hd * BLOCK) };
                    let mut acc = [zero(); ROWS];
                    for d in 0..hd {
                        let kd = unsafe { load(k.add(d * BLOCK)) };
                        for (r, a) in acc.iter_mut().enumerate() {
                            *a = fma(kd, splat(unsafe { *q.add(d * ROWS + r) }), *a);
                        }
                    }
                    for (r, a) in acc.into_iter().enumerate() {
                        unsafe { store(p.add((kb * ROWS + r) * BLOCK), a) };
                    }
                }
                // Keys past the last valid one (the last block's padding) get no weight.
                for r in 0..ROWS {
                    for l in tail..BLOCK {
                        unsafe {
                            *p.add(((key_blocks - 1) * ROWS + r) * BLOCK + l) = f32::NEG_INFINITY
                        };
                    }
                }
                let inv = unsafe { softmax(p, key_blocks) };
                for c in 0..hd / BLOCK {
                    let mut acc = [zero(); ROWS];
                    for j in 0..n {
                        let vj = unsafe { load(v.add(j * hd + c * BLOCK)) };
                        let pj = unsafe { p.add(((j / BLOCK) * ROWS) * BLOCK + j % BLOCK) };
                        for (r, a) in acc.iter_mut().enumerate() {
                            *a = fma(vj, splat(unsafe { *pj.add(r * BLOCK) }), *a);
                        }
                    }
                    for (r, a) in acc.into_iter().enumerate() {
                        let o = &mut ob[r * hd + c * BLOCK..][..BLOCK];
                        unsafe { store(o.as_mut_ptr(), mul(a, splat(inv[r]))) };
                    }
                }
            }
        }

        /// Softmax of the `ROWS` rows of scores at `p` (`[key_blocks, ROWS, BLOCK]`) in
        /// place, without the final division: returns each row's 1/sum. Padding (-∞)
        /// gets a weight below 2⁻¹²⁵, which no value multiplies.
        ///
        /// # Safety
        /// `p` must hold `key_blocks × ROWS × BLOCK` values.
        #[target_feature(enable = $features)]
        unsafe fn softmax(p: *mut f32, key_blocks: usize) -> [f32; ROWS] {
            use super::BLOCK;
            let at = |kb: usize, r: usize| unsafe { p.add((kb * ROWS + r) * BLOCK) };
            let mut top = [splat(f32::NEG_INFINITY); ROWS];
            for kb in 0..key_blocks {
                for (r, m) in top.iter_mut().enumerate() {
                    *m = max(*m, unsafe { load(at(kb, r)) });
                }
            }
            let top = top.map(|m| splat(lanes(m).into_iter().fold(f32::NEG_INFINITY, f32::max)));
            let mut sum = [zero(); ROWS];
            for kb in 0..key_blocks {
                for (r, s) in sum.iter_mut().enumerate() {
                    let e = exp(sub(unsafe { load(at(kb, r)) }, top[r]));
                    unsafe { store(at(kb, r), e) };
                    *s = add(*s, e);
                }
            }
            sum.map(|s| 1.0 / lanes(s).into_iter().sum::<f32>())
        }

        /// [`crate::model::kernels::exp_approx`] on 16 lanes.
        #[inline]
        #[target_feature(enable = $features)]
        fn exp(x: V) -> V {
            use crate::model::kernels::{EXP_POLY, LN2_SPLIT};
            let x = max(x, splat(-87.0));
            let n = round(mul(x, splat(std::f32::consts::LOG2_E)));
            let f = fma(n, splat(-LN2_SPLIT[0]), x);
            let f = fma(n, splat(-LN2_SPLIT[1]), f);
            let mut p = splat(EXP_POLY[0]);
            for &c in &EXP_POLY[1..] {
                p = fma(p, f, splat(c));
            }
            scale2(fma(mul(p, f), f, add(f, splat(1.0))), n)
        }
    };
}

/// The kernel for AVX-512F: one register per 16 lanes.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    head_kernel!("avx512f", 8);

    type V = __m512;

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn zero() -> V {
        _mm512_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn splat(x: f32) -> V {
        _mm512_set1_ps(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f32) -> V {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(p: *mut f32, x: V) {
        unsafe { _mm512_storeu_ps(p, x) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn fma(a: V, b: V, c: V) -> V {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn mul(a: V, b: V) -> V {
        _mm512_mul_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn add(a: V, b: V) -> V {
        _mm512_add_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn sub(a: V, b: V) -> V {
        _mm512_sub_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn max(a: V, b: V) -> V {
        _mm512_max_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn round(x: V) -> V {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn scale2(a: V, n: V) -> V {
        _mm512_scalef_ps(a, n)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lanes(x: V) -> [f32; 16] {
        let mut out = [0f32; 16];
        // SAFETY: `out` holds 16 values.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), x) };
        out
    }
}

/// The kernel for AVX2 + FMA: two registers per 16 lanes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    head_kernel!("avx2,fma", 4);

    type V = [__m256; 2];

    /// `f` on each half.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn each(x: V, f: impl Fn(__m256) -> __m256) -> V {
        [f(x[0]), f(x[1])]
    }
    /// `f` on each pair of halves.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn pair(a: V, b: V, f: impl Fn(__m256, __m256) -> __m256) -> V {
        [f(a[0], b[0]), f(a[1], b[1])]
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn zero() -> V {
        [_mm256_setzero_ps(); 2]
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn splat(x: f32) -> V {
        [_mm256_set1_ps(x); 2]
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(p: *const f32) -> V {
        unsafe { [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))] }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(p: *mut f32, x: V) {
        unsafe {
            _mm256_storeu_ps(p, x[0]);
            _mm256_storeu_ps(p.add(8), x[1]);
        }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fma(a: V, b: V, c: V) -> V {
        [
            _mm256_fmadd_ps(a[0], b[0], c[0]),
            _mm256_fmadd_ps(a[1], b[1], c[1]),
        ]
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn mul(a: V, b: V) -> V {
        pair(a, b, |a, b| _mm256_mul_ps(a, b))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn add(a: V, b: V) -> V {
        pair(a, b, |a, b| _mm256_add_ps(a, b))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn sub(a: V, b: V) -> V {
        pair(a, b, |a, b| _mm256_sub_ps(a, b))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn max(a: V, b: V) -> V {
        pair(a, b, |a, b| _mm256_max_ps(a, b))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn round(x: V) -> V {
        each(x, |x| {
            _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x)
        })
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn scale2(a: V, n: V) -> V {
        pair(a, n, |a, n| {
            let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            _mm256_mul_ps(a, _mm256_castsi256_ps(bits))
        })
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn lanes(x: V) -> [f32; 16] {
        let mut out = [0f32; 16];
        // SAFETY: `out` holds 16 values.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), x[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), x[1]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::fast_paths;
    use candle_core::Device;

    /// Candle's unfused attention (the reference), heads split out and joined back.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, heads: usize) -> Tensor {
        let (b, s, h) = q.dims3().unwrap();
        let hd = h / heads;
        let split = |t: &Tensor| {
            t.reshape((b, s, heads, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (qs, ks, vs) = (split(q), split(k), split(v));
        let scores = (qs.matmul(&ks.t().unwrap()).unwrap() / (hd as f64).sqrt())
            .unwrap()
            .broadcast_add(bias)
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        probs
            .matmul(&vs)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, s, h))
            .unwrap()
    }

    /// Checks the fused kernel against the reference on every path, for items of `lens`
    /// valid tokens (the rest padding), heads `hd` wide.
    fn check(lens: &[usize], s: usize, heads: usize, hd: usize) {
        let dev = Device::Cpu;
        let b = lens.len();
        let h = heads * hd;
        let q = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let mask: Vec<u32> = lens
            .iter()
            .flat_map(|&l| (0..s).map(move |j| u32::from(j < l)))
            .collect();
        let mask = Tensor::from_vec(mask, (b, s), &dev).unwrap();
        let bias = crate::model::bert::mask_bias(&mask, DType::F32).unwrap();
        let r: Vec<Vec<Vec<f32>>> = reference(&q, &k, &v, &bias, heads).to_vec3().unwrap();
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
    }

    #[test]
    fn fused_attention_matches_candle_ops_on_every_token() {
        // Heads 32 wide (two register blocks), up to 19 keys (a full key block and a partial
        // one), items shorter than a row block and one of a single token.
        check(&[19, 16, 4, 1], 19, 3, 32);
        // Heads 64 wide; 41 tokens: several row blocks of 4 and 8 with a partial last one.
        check(&[41, 33, 8, 9], 41, 2, 64);
        check(&[256, 200, 130], 256, 12, 32);
    }

    #[test]
    fn fused_attention_steps_aside_where_it_does_not_apply() {
        let dev = Device::Cpu;
        let (b, s, heads, hd) = (2, 5, 3, 32);
        let t = Tensor::randn(0f32, 1.0, (b, s, heads * hd), &dev).unwrap();
        let mask = Tensor::ones((b, s), DType::U32, &dev).unwrap();
        let bias = crate::model::bert::mask_bias(&mask, DType::F32).unwrap();
        let generic = fused_attention_on(KernelPath::Generic, &t, &t, &t, &bias, heads, false);
        assert!(generic.unwrap().is_none());
        assert!(fused_attention(&t, &t, &t, &bias, heads, true)
            .unwrap()
            .is_none());
        // Heads whose width is not a multiple of the block are left to candle's ops.
        assert!(fused_attention(&t, &t, &t, &bias, heads * 4, false)
            .unwrap()
            .is_none());
    }
}
