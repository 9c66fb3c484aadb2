//! The attention kernels themselves, one per instruction set, written once as a macro over
//! a 16-lane vector type and its few operations. Owns the arithmetic only: the layouts are
//! [`super::HeadScratch`]'s, and the dispatch is [`super::run_head`]'s.

/// ln 2 split in two, so that `x - n·ln 2` stays exact for the exponent range of f32.
const LN2_SPLIT: [f32; 2] = [0.693_145_75, 1.428_606_8e-6];

/// Coefficients of exp on [-ln2/2, ln2/2] past the first two (1 + f): highest degree first.
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_66,
    0.5,
];

/// Writes `head`, the attention of one gathered head `$rows` query rows at a time, and the
/// vector exp it uses, for one instruction set: `V` holds 16 f32, and `zero`, `splat`,
/// `load`, `store`, `fma` (a·b + c), `mul`, `add`, `sub`, `max`, `round` (to nearest),
/// `scale2` (a·2ⁿ for whole n) and `lanes` work on it.
macro_rules! head_kernel {
    ($features:literal, $rows:expr) => {
        /// Query rows per register block.
        pub(crate) const ROWS: usize = $rows;

        /// Attention of one gathered head (see [`super::super::HeadScratch`] for the layouts):
        /// scores of `ROWS` query rows against each block of 16 keys, softmax, weighted
        /// values; every key or value load feeds `ROWS` independent accumulators.
        ///
        /// # Safety
        /// The CPU must have the features, and the scratch the sizes `check` verifies.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn head(w: &mut super::super::HeadScratch) {
            use super::super::BLOCK;
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
        /// gets exp's floor, about 1.7e-38: nothing measurable in the sum, and no value
        /// multiplies it.
        ///
        /// # Safety
        /// `p` must hold `key_blocks × ROWS × BLOCK` values.
        #[target_feature(enable = $features)]
        unsafe fn softmax(p: *mut f32, key_blocks: usize) -> [f32; ROWS] {
            use super::super::BLOCK;
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

        /// [`exp`] of 16 values (tests).
        #[cfg(test)]
        #[target_feature(enable = $features)]
        pub(crate) fn exp16(x: &[f32; 16]) -> [f32; 16] {
            // SAFETY: `x` holds 16 values.
            lanes(exp(unsafe { load(x.as_ptr()) }))
        }

        /// exp(x) of 16 lanes for x ≤ 0 (softmax after subtracting the maximum): 2ⁿ · P(f)
        /// with a degree-6 polynomial on [-ln2/2, ln2/2]; relative error < 3e-7, about
        /// 1.7e-38 at -87 and below.
        #[inline]
        #[target_feature(enable = $features)]
        fn exp(x: V) -> V {
            use super::{EXP_POLY, LN2_SPLIT};
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
pub(super) mod avx512 {
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
pub(super) mod avx2 {
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
    use crate::model::kernels::{fast_paths, KernelPath};

    #[test]
    fn every_path_s_vector_exp_matches_exp() {
        let xs: Vec<f32> = (0..=87_000)
            .map(|i| -(i as f32) / 1000.0)
            .chain([f32::NEG_INFINITY, -1000.0, -87.5])
            .collect();
        for path in fast_paths() {
            for chunk in xs.chunks(16) {
                let mut x = [0f32; 16];
                x[..chunk.len()].copy_from_slice(chunk);
                // SAFETY: the path's features were detected on this CPU.
                let got = unsafe {
                    match path {
                        KernelPath::Avx512 => avx512::exp16(&x),
                        _ => avx2::exp16(&x),
                    }
                };
                for (&x, &a) in x.iter().zip(&got) {
                    let e = x.exp();
                    assert!(
                        (a - e).abs() <= 3e-7 * e + 2e-38,
                        "{path:?} {x}: {a} vs {e}"
                    );
                }
            }
        }
    }
}
