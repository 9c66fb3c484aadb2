//! Int8 linear layers for CPU inference: weights quantised once per output channel
//! (symmetric int8), activations quantised per row at run time (asymmetric u8: the row's
//! [min, max] range, zero included, in 256 steps, which doubles the resolution of one-sided
//! rows such as GELU outputs), products accumulated exactly in i32 with AVX-512 VNNI (`vpdpbusd`), then
//! rescaled to f32 with the bias added. The same scheme as PyTorch's dynamic quantisation and
//! oneDNN's u8s8 GEMM; the accuracy cost on our encoder is measured in the README.
//!
//! Only used where [`available`] (AVX-512 F/BW/VNNI at run time and the generic switch off);
//! elsewhere the encoder keeps its exact f32 linears. A scalar reference over the same packed
//! layout checks the vector kernel bit for bit.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::kernels::{kernel_path, with_f32, KernelPath};

/// Rows of the activation tile one micro-kernel call computes.
const MR: usize = 6;
/// Output columns of one micro-kernel call (two 16-lane vectors).
const NR: usize = 32;

/// Whether the int8 path can run on this machine (and is not switched off).
pub fn available() -> bool {
    kernel_path() == KernelPath::Avx512 && vnni()
}

#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

#[cfg(not(target_arch = "x86_64"))]
fn vnni() -> bool {
    false
}

/// A linear layer `y = x Wᵀ + b` with int8 weights packed for the VNNI micro-kernel.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    /// Output features.
    n: usize,
    /// Input features.
    k: usize,
    /// `k` rounded up to a multiple of 4 (one `vpdpbusd` lane takes 4 bytes).
    kp: usize,
    /// Weights as `[n / NR][kp / 4][NR][4]` i8, `n` padded with zero rows to a multiple of NR.
    packed: Vec<i8>,
    /// Per output channel: weight scale.
    scale: Vec<f32>,
    /// Per output channel: the sum of its int8 weights (times a row's zero point, the
    /// correction for that row's offset).
    wsum: Vec<i32>,
    /// Bias, zero-padded to the packed width.
    bias: Vec<f32>,
}

impl Int8Linear {
    /// Quantises a dense `[n, k]` weight and `[n]` bias.
    pub fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let w: Vec<f32> = weight.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = bias.to_vec1()?;
        let kp = k.div_ceil(4) * 4;
        let np = n.div_ceil(NR) * NR;
        let mut q = vec![0i8; np * kp];
        let mut scale = vec![0f32; np];
        let mut wsum = vec![0i32; np];
        for row in 0..n {
            let src = &w[row * k..(row + 1) * k];
            let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            scale[row] = s;
            let mut sum = 0i32;
            for (c, v) in src.iter().enumerate() {
                let x = (v / s).round().clamp(-127.0, 127.0) as i8;
                q[row * kp + c] = x;
                sum += x as i32;
            }
            wsum[row] = sum;
        }
        let mut packed = vec![0i8; np * kp];
        for block in 0..np / NR {
            for k4 in 0..kp / 4 {
                for col in 0..NR {
                    for j in 0..4 {
                        let dst = ((block * (kp / 4) + k4) * NR + col) * 4 + j;
                        packed[dst] = q[(block * NR + col) * kp + k4 * 4 + j];
                    }
                }
            }
        }
        let mut bias = b;
        bias.resize(np, 0.0);
        Ok(Self {
            n,
            k,
            kp,
            packed,
            scale,
            wsum,
            bias,
        })
    }

    /// `x [.., k]` (f32, CPU) -> `[.., n]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        if k != self.k {
            candle_core::bail!("int8 linear: input has {k} features, expected {}", self.k);
        }
        let m = x.elem_count() / k.max(1);
        let out = with_f32(x, |data| self.matmul(data, m, available()))?;
        let mut shape = dims;
        *shape.last_mut().expect("non-empty shape") = self.n;
        Tensor::from_vec(out, shape, x.device())
    }

    /// `[m, k]` row-major f32 -> `[m, n]`; `simd` picks the VNNI kernel over the scalar one.
    fn matmul(&self, x: &[f32], m: usize, simd: bool) -> Vec<f32> {
        let rows = m.div_ceil(MR) * MR;
        // Zeroed in parallel: one thread zeroing megabytes would leave the other cores idle.
        let mut xq = Vec::with_capacity(rows * self.kp);
        xq.par_extend(rayon::iter::repeat_n(0u8, rows * self.kp));
        let mut xs = vec![RowQuant::default(); rows];
        // Quantise in chunks of rows (one parallel task each: rayon's cost per task is larger
        // than a row's work).
        const CHUNK: usize = 64;
        xq.par_chunks_mut(self.kp * CHUNK)
            .zip(xs.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, (dst, scales))| {
                for (i, (d, s)) in dst.chunks_mut(self.kp).zip(scales).enumerate() {
                    let r = c * CHUNK + i;
                    if r < m {
                        *s = quantize_row(&x[r * self.k..(r + 1) * self.k], d, simd);
                    }
                }
            });
        let np = self.bias.len();
        // Not zeroed: the tiles below write every element (see the SAFETY note at `set_len`).
        let mut out: Vec<f32> = Vec::with_capacity(m * self.n);
        // Tasks: row panels when there are enough rows to keep every thread busy, otherwise
        // row panels × column blocks.
        let threads = rayon::current_num_threads().max(1);
        let row_tiles = rows / MR;
        let col_blocks = np / NR;
        let col_split = if row_tiles >= 4 * threads {
            1
        } else {
            (2 * threads).min(col_blocks)
        };
        let rows_per_task = if col_split == 1 {
            row_tiles.div_ceil(4 * threads).max(1) * MR
        } else {
            rows
        };
        let blocks_per_task = col_blocks.div_ceil(col_split);
        let tasks: Vec<(usize, usize)> = (0..rows.div_ceil(rows_per_task))
            .flat_map(|r| (0..col_split).map(move |c| (r * rows_per_task, c * blocks_per_task)))
            .filter(|&(_, b)| b < col_blocks)
            .collect();
        let out_ptr = SendPtr(out.as_mut_ptr());
        tasks.par_iter().for_each(|&(r0, b0)| {
            let r1 = (r0 + rows_per_task).min(rows);
            let b1 = (b0 + blocks_per_task).min(col_blocks);
            let out_ptr = &out_ptr;
            for r in (r0..r1).step_by(MR) {
                for b in b0..b1 {
                    let tile = Tile {
                        a: &xq[r * self.kp..(r + MR) * self.kp],
                        quant: &xs[r..r + MR],
                        rows: (m.saturating_sub(r)).min(MR),
                        block: b,
                    };
                    // SAFETY: tasks cover disjoint (row, column) tiles of `out`'s capacity,
                    // which outlives the parallel loop; each tile writes only its own rows < m
                    // and columns < n.
                    unsafe { self.tile(&tile, out_ptr.0.add(r * self.n), simd) };
                }
            }
        });
        // SAFETY: the tiles cover every row < m (row panels step by MR up to `rows` ≥ m) and
        // every column < n (blocks up to `np` ≥ n), and each tile stores all of its real rows
        // and columns, so all m × n elements are initialised.
        unsafe { out.set_len(m * self.n) };
        out
    }

    /// Computes one MR × NR tile into `out` (the tile's first row of the `[m, n]` output).
    ///
    /// # Safety
    /// `out` must be valid for `tile.rows` rows of `self.n` floats.
    unsafe fn tile(&self, tile: &Tile<'_>, out: *mut f32, simd: bool) {
        let panel = &self.packed[tile.block * self.kp * NR..(tile.block + 1) * self.kp * NR];
        let c0 = tile.block * NR;
        let epi = Epilogue {
            wsum: &self.wsum[c0..c0 + NR],
            scale: &self.scale[c0..c0 + NR],
            bias: &self.bias[c0..c0 + NR],
            cols: self.n.saturating_sub(c0).min(NR),
            stride: self.n,
        };
        // SAFETY: c0 < n, inside the caller's output row.
        let out = unsafe { out.add(c0) };
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only set after detecting AVX-512 F/BW/VNNI; `out` as promised.
            return unsafe { tile_vnni(tile, panel, self.kp, &epi, out) };
        }
        let _ = simd;
        // SAFETY: as promised by the caller.
        unsafe { tile_scalar(tile, panel, self.kp, &epi, out) }
    }
}

/// One micro-kernel call's inputs.
struct Tile<'a> {
    /// MR quantised activation rows of `kp` bytes.
    a: &'a [u8],
    /// Their scales.
    quant: &'a [RowQuant],
    /// Rows that are real (the rest is padding).
    rows: usize,
    /// Column block (NR wide).
    block: usize,
}

/// Per-column constants of one NR-wide block and the output geometry.
struct Epilogue<'a> {
    /// The columns' int8 weight sums.
    wsum: &'a [i32],
    /// Weight scales.
    scale: &'a [f32],
    /// Bias.
    bias: &'a [f32],
    /// Columns of the block that are real (the rest is padding).
    cols: usize,
    /// Floats per output row.
    stride: usize,
}

struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint output tiles to rayon tasks (see `matmul`).
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// How one activation row was quantised: `x ≈ scale × (q - zero)`.
#[derive(Debug, Clone, Copy, Default)]
struct RowQuant {
    scale: f32,
    zero: i32,
}

/// Quantises one row to u8 over its [min, max] range (zero included, so 0 is exact);
/// `simd` uses the AVX-512 version, which gives the same bytes.
fn quantize_row(x: &[f32], dst: &mut [u8], simd: bool) -> RowQuant {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only set after detecting AVX-512 F/BW/VNNI.
        return unsafe { quantize_row_avx512(x, dst) };
    }
    let _ = simd;
    let (lo, hi) = x
        .iter()
        .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let q = row_quant(lo, hi);
    let inv = 1.0 / q.scale;
    for (d, v) in dst.iter_mut().zip(x) {
        *d = quantize_one(*v, inv, q.zero);
    }
    q
}

/// Scale and zero point for a row whose values lie in [lo, hi] (lo ≤ 0 ≤ hi).
fn row_quant(lo: f32, hi: f32) -> RowQuant {
    let range = hi - lo;
    let scale = if range > 0.0 { range / 255.0 } else { 1.0 };
    let zero = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i32;
    RowQuant { scale, zero }
}

/// One value to u8: scale, round to nearest even, shift by the zero point, clamp to 0..=255.
#[inline(always)]
fn quantize_one(v: f32, inv: f32, zero: i32) -> u8 {
    ((v * inv).round_ties_even() as i32 + zero).clamp(0, 255) as u8
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row_avx512(x: &[f32], dst: &mut [u8]) -> RowQuant {
    use std::arch::x86_64::*;
    let n16 = x.len() / 16 * 16;
    let (mut vlo, mut vhi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for i in (0..n16).step_by(16) {
        // SAFETY: i + 16 <= x.len().
        let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) };
        vlo = _mm512_min_ps(vlo, v);
        vhi = _mm512_max_ps(vhi, v);
    }
    let (lo, hi) = x[n16..].iter().fold(
        (_mm512_reduce_min_ps(vlo), _mm512_reduce_max_ps(vhi)),
        |(lo, hi), &v| (lo.min(v), hi.max(v)),
    );
    let q = row_quant(lo, hi);
    let inv = 1.0 / q.scale;
    let (vinv, zero, min, max) = (
        _mm512_set1_ps(inv),
        _mm512_set1_epi32(q.zero),
        _mm512_setzero_si512(),
        _mm512_set1_epi32(255),
    );
    for i in (0..n16).step_by(16) {
        // SAFETY: i + 16 <= x.len() <= dst.len().
        unsafe {
            let v = _mm512_mul_ps(_mm512_loadu_ps(x.as_ptr().add(i)), vinv);
            // Round to nearest even (the default rounding mode), as `round_ties_even`.
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zero);
            let q = _mm512_min_epi32(_mm512_max_epi32(q, min), max);
            _mm_storeu_si128(
                dst.as_mut_ptr().add(i) as *mut __m128i,
                _mm512_cvtepi32_epi8(q),
            );
        }
    }
    for (d, v) in dst[n16..].iter_mut().zip(&x[n16..]) {
        *d = quantize_one(*v, inv, q.zero);
    }
    q
}

/// Reference micro-kernel: the same arithmetic as `tile_vnni`, one product at a time.
///
/// # Safety
/// `out` must be valid for `tile.rows` rows of `epi.stride` floats, `epi.cols` from the start.
unsafe fn tile_scalar(tile: &Tile<'_>, panel: &[i8], kp: usize, epi: &Epilogue<'_>, out: *mut f32) {
    for r in 0..tile.rows {
        let row = &tile.a[r * kp..(r + 1) * kp];
        let RowQuant { scale: sx, zero } = tile.quant[r];
        for c in 0..epi.cols {
            let mut acc = 0i32;
            for k in 0..kp {
                acc += row[k] as i32 * panel[(k / 4 * NR + c) * 4 + k % 4] as i32;
            }
            let v = (acc - zero * epi.wsum[c]) as f32;
            // SAFETY: r < tile.rows, c < epi.cols, as promised.
            unsafe { *out.add(r * epi.stride + c) = v * (sx * epi.scale[c]) + epi.bias[c] };
        }
    }
}

/// MR × NR tile with `vpdpbusd`: per step of 4 input features, two 64-byte weight vectors
/// (NR columns × 4) and one broadcast of 4 activation bytes per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni(tile: &Tile<'_>, panel: &[i8], kp: usize, epi: &Epilogue<'_>, out: *mut f32) {
    use std::arch::x86_64::*;
    let a = tile.a;
    debug_assert!(a.len() >= MR * kp && panel.len() >= kp * NR);
    let mut c = [[_mm512_setzero_si512(); 2]; MR];
    let ap = a.as_ptr();
    let bp = panel.as_ptr();
    for k4 in 0..kp / 4 {
        // SAFETY: k4 * 4 < kp and the panel holds kp / 4 steps of NR × 4 bytes.
        let (b0, b1) = unsafe {
            let b = bp.add(k4 * NR * 4);
            (
                _mm512_loadu_si512(b as *const _),
                _mm512_loadu_si512(b.add(64) as *const _),
            )
        };
        for (r, c) in c.iter_mut().enumerate() {
            // SAFETY: row r < MR of `a`, 4 bytes at k4 * 4 < kp.
            let x = unsafe { (ap.add(r * kp + k4 * 4) as *const i32).read_unaligned() };
            let x = _mm512_set1_epi32(x);
            c[0] = _mm512_dpbusd_epi32(c[0], x, b0);
            c[1] = _mm512_dpbusd_epi32(c[1], x, b1);
        }
    }
    // Epilogue: (acc - zero × wsum) as f32 * (row scale * column scale) + bias, masked to the
    // real columns; mul then add (no FMA) so that it equals the scalar reference exactly.
    for (half, off) in [0usize, 16].into_iter().enumerate() {
        let live = epi.cols.saturating_sub(off).min(16);
        if live == 0 {
            continue;
        }
        let mask: __mmask16 = if live == 16 {
            0xFFFF
        } else {
            (1u16 << live) - 1
        };
        // SAFETY: the block's constants hold NR = 32 entries.
        let (wsum, scale, bias) = unsafe {
            (
                _mm512_loadu_si512(epi.wsum.as_ptr().add(off) as *const _),
                _mm512_loadu_ps(epi.scale.as_ptr().add(off)),
                _mm512_loadu_ps(epi.bias.as_ptr().add(off)),
            )
        };
        for (r, c) in c.iter().enumerate().take(tile.rows) {
            let q = tile.quant[r];
            let corr = _mm512_mullo_epi32(_mm512_set1_epi32(q.zero), wsum);
            let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(c[half], corr));
            let s = _mm512_mul_ps(_mm512_set1_ps(q.scale), scale);
            let y = _mm512_add_ps(_mm512_mul_ps(v, s), bias);
            // SAFETY: row r < tile.rows, `live` columns from `off`, as promised by the caller.
            unsafe { _mm512_mask_storeu_ps(out.add(r * epi.stride + off), mask, y) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    fn random(shape: (usize, usize), seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn vector_kernel_equals_scalar_reference_bit_for_bit() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU (or the generic switch is set)");
            return;
        }
        // Odd sizes exercise row, column and k padding.
        for &(m, k, n) in &[
            (1, 384, 384),
            (7, 37, 50),
            (33, 384, 1536),
            (100, 1536, 384),
        ] {
            let lin = Int8Linear::new(&random((n, k), 1), &random((1, n), 2).squeeze(0).unwrap())
                .unwrap();
            let x: Vec<f32> = random((m, k), 3).flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(
                lin.matmul(&x, m, true),
                lin.matmul(&x, m, false),
                "{m}x{k}x{n}"
            );
        }
    }

    #[test]
    fn int8_linear_approximates_the_dense_layer() {
        for &(m, k, n) in &[(5, 384, 384), (9, 61, 30)] {
            let w = random((n, k), 4);
            let b = random((1, n), 5).squeeze(0).unwrap();
            let x = random((m, k), 6);
            let exact = candle_nn::Linear::new(w.clone(), Some(b.clone()))
                .forward(&x)
                .unwrap();
            let lin = Int8Linear::new(&w, &b).unwrap();
            let exact: Vec<f32> = exact.flatten_all().unwrap().to_vec1().unwrap();
            let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let approx = lin.matmul(&xs, m, false);
            // Relative to the output's spread: int8 on both sides keeps ~2 decimal digits.
            let spread = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = exact
                .iter()
                .zip(&approx)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 0.02 * spread, "{m}x{k}x{n}: {worst} vs {spread}");
        }
    }

    #[test]
    fn wrong_input_width_is_an_error() {
        let lin =
            Int8Linear::new(&random((8, 16), 1), &random((1, 8), 2).squeeze(0).unwrap()).unwrap();
        assert!(lin.forward(&random((2, 15), 3)).is_err());
        assert_eq!(lin.forward(&random((2, 16), 3)).unwrap().dims(), &[2, 8]);
    }
}
