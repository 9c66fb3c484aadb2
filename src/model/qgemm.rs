//! Int8 linear layers for CPU inference, in blocks of [`QK`] = 32 input features as GGML's
//! Q4_0 × Q8_0 dot products: each block of a weight row has its own scale, and so has each
//! block of an activation row (quantised at run time, symmetric int8). A block's products are
//! summed exactly in i32 with AVX-512 VNNI (`vpdpbusd`), then scaled by the two blocks' scales
//! and accumulated in f32, the bias added at the end.
//!
//! Weight blocks that already lie on a grid of at most 127 steps either side of zero, as every
//! block of a Q4_0 or Q8_0 model does, are held exactly; others are rounded to 127 steps of
//! their largest magnitude. With the committed Q4_0 encoder the weights are therefore exact
//! and only the activations are rounded; the README measures what that costs.
//!
//! Only used where [`available`] (AVX-512 F/BW/VNNI at run time and the generic switch off);
//! elsewhere the encoder keeps its exact f32 linears. A scalar reference over the same packed
//! layout checks the vector kernel bit for bit.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::kernels::{kernel_path, with_f32, KernelPath};

/// Input features per quantisation block, for weights and activations (GGML's block size).
pub const QK: usize = 32;
/// Rows of the activation tile one micro-kernel call computes.
const MR: usize = 6;
/// Output columns of one micro-kernel call (two 16-lane vectors).
const NR: usize = 32;
/// `vpdpbusd` multiplies unsigned by signed bytes, so activations are stored as `q + 128`;
/// each block's accumulator starts at `-128 ×` its weight sum to take the offset back out.
const OFFSET: i32 = 128;

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
    /// `k` rounded up to a multiple of [`QK`] (zero weights in the padding).
    kp: usize,
    /// Weights as `[n / NR][kp / 4][NR][4]` i8, `n` padded with zero rows to a multiple of NR.
    packed: Vec<i8>,
    /// Per column panel, per k block, per column (`[n / NR][kp / QK][NR]`): the block's scale.
    scale: Vec<f32>,
    /// The same layout: `-OFFSET ×` the block's int8 weight sum, where its accumulator starts.
    start: Vec<i32>,
    /// Bias, zero-padded to the packed width.
    bias: Vec<f32>,
}

impl Int8Linear {
    /// Quantises a dense `[n, k]` weight and `[n]` bias.
    pub fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let w: Vec<f32> = weight.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = bias.to_vec1()?;
        let kp = k.div_ceil(QK) * QK;
        let (np, nb) = (n.div_ceil(NR) * NR, kp / QK);
        // Row by row, in parallel: trying the grids costs a few divisions per weight.
        let mut q = vec![0i8; np * kp];
        let mut row_scales = vec![0f32; np * nb];
        q.par_chunks_mut(kp)
            .zip(row_scales.par_chunks_mut(nb))
            .take(n)
            .enumerate()
            .for_each(|(row, (dst, scales))| {
                let src = &w[row * k..(row + 1) * k];
                for ((d, s), v) in dst.chunks_mut(QK).zip(scales).zip(src.chunks(QK)) {
                    *s = quantize_weight_block(v, d);
                }
            });
        // Packed panel by panel, in parallel.
        let mut packed = vec![0i8; np * kp];
        let (mut scale, mut start) = (vec![0f32; np * nb], vec![0i32; np * nb]);
        packed
            .par_chunks_mut(kp * NR)
            .zip(scale.par_chunks_mut(nb * NR))
            .zip(start.par_chunks_mut(nb * NR))
            .enumerate()
            .for_each(|(panel, ((packed, scale), start))| {
                for k4 in 0..kp / 4 {
                    for col in 0..NR {
                        for j in 0..4 {
                            packed[(k4 * NR + col) * 4 + j] =
                                q[(panel * NR + col) * kp + k4 * 4 + j];
                        }
                    }
                }
                for g in 0..nb {
                    for col in 0..NR {
                        let row = panel * NR + col;
                        let block = &q[row * kp + g * QK..row * kp + (g + 1) * QK];
                        let sum: i32 = block.iter().map(|&v| v as i32).sum();
                        scale[g * NR + col] = row_scales[row * nb + g];
                        start[g * NR + col] = -OFFSET * sum;
                    }
                }
            });
        let mut bias = b;
        bias.resize(np, 0.0);
        Ok(Self {
            n,
            k,
            kp,
            packed,
            scale,
            start,
            bias,
        })
    }

    /// `x [.., k]` (f32, CPU) -> `[.., n]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_quantized(&QuantizedInput::new(x)?)
    }

    /// The layer applied to an input quantised once for every layer that reads it.
    pub fn forward_quantized(&self, x: &QuantizedInput) -> Result<Tensor> {
        let shape = self.output_shape(x)?;
        Tensor::from_vec(self.matmul(x), shape, &x.device)
    }

    /// The layer applied to an input quantised in two steps (see [`RefinedInput`]): both
    /// products summed, the bias once.
    pub fn forward_refined(&self, x: &RefinedInput) -> Result<Tensor> {
        let shape = self.output_shape(&x.coarse)?;
        let mut y = self.matmul(&x.coarse);
        let rest = self.matmul(&x.residual);
        y.par_chunks_mut(self.n)
            .zip(rest.par_chunks(self.n))
            .for_each(|(y, rest)| {
                for ((y, r), b) in y.iter_mut().zip(rest).zip(&self.bias) {
                    *y += r - b;
                }
            });
        Tensor::from_vec(y, shape, &x.coarse.device)
    }

    /// The output's shape for input `x`, or an error when its width is not the layer's.
    fn output_shape(&self, x: &QuantizedInput) -> Result<Vec<usize>> {
        if x.k != self.k {
            candle_core::bail!(
                "int8 linear: input has {} features, expected {}",
                x.k,
                self.k
            );
        }
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("non-empty shape") = self.n;
        Ok(shape)
    }

    /// `[m, k]` quantised rows -> `[m, n]` row-major f32, with the VNNI kernel where the
    /// input was quantised for it (`x.simd`), the scalar one otherwise.
    fn matmul(&self, x: &QuantizedInput) -> Vec<f32> {
        let (m, rows, nb, simd) = (x.m, x.rows(), self.kp / QK, x.simd);
        let (xq, xs) = (&x.bytes, &x.scales);
        let np = self.bias.len();
        // Not zeroed: the tiles below write every element (see the SAFETY note at `set_len`).
        let mut out: Vec<f32> = Vec::with_capacity(m * self.n);
        // Tasks: row panels when there are enough rows to keep every thread busy, otherwise
        // row panels × column panels.
        let threads = rayon::current_num_threads().max(1);
        let row_tiles = rows / MR;
        let col_panels = np / NR;
        let col_split = if row_tiles >= 4 * threads {
            1
        } else {
            (2 * threads).min(col_panels)
        };
        let rows_per_task = if col_split == 1 {
            row_tiles.div_ceil(4 * threads).max(1) * MR
        } else {
            rows
        };
        let panels_per_task = col_panels.div_ceil(col_split);
        let tasks: Vec<(usize, usize)> = (0..rows.div_ceil(rows_per_task))
            .flat_map(|r| (0..col_split).map(move |c| (r * rows_per_task, c * panels_per_task)))
            .filter(|&(_, p)| p < col_panels)
            .collect();
        let out_ptr = SendPtr(out.as_mut_ptr());
        tasks.par_iter().for_each(|&(r0, p0)| {
            let r1 = (r0 + rows_per_task).min(rows);
            let p1 = (p0 + panels_per_task).min(col_panels);
            let out_ptr = &out_ptr;
            for r in (r0..r1).step_by(MR) {
                for p in p0..p1 {
                    let tile = Tile {
                        a: &xq[r * self.kp..(r + MR) * self.kp],
                        scale: &xs[r * nb..(r + MR) * nb],
                        rows: (m.saturating_sub(r)).min(MR),
                        panel: p,
                    };
                    // SAFETY: tasks cover disjoint (row, column) tiles of `out`'s capacity,
                    // which outlives the parallel loop; each tile writes only its own rows < m
                    // and columns < n.
                    unsafe { self.tile(&tile, out_ptr.0.add(r * self.n), simd) };
                }
            }
        });
        // SAFETY: the tiles cover every row < m (row panels step by MR up to `rows` ≥ m) and
        // every column < n (panels up to `np` ≥ n), and each tile stores all of its real rows
        // and columns, so all m × n elements are initialised.
        unsafe { out.set_len(m * self.n) };
        out
    }

    /// Computes one MR × NR tile into `out` (the tile's first row of the `[m, n]` output).
    ///
    /// # Safety
    /// `out` must be valid for `tile.rows` rows of `self.n` floats.
    unsafe fn tile(&self, tile: &Tile<'_>, out: *mut f32, simd: bool) {
        let (p, nb) = (tile.panel, self.kp / QK);
        let c0 = p * NR;
        let panel = Panel {
            weights: &self.packed[p * self.kp * NR..(p + 1) * self.kp * NR],
            scale: &self.scale[p * nb * NR..(p + 1) * nb * NR],
            start: &self.start[p * nb * NR..(p + 1) * nb * NR],
            bias: &self.bias[c0..c0 + NR],
            kp: self.kp,
            cols: self.n.saturating_sub(c0).min(NR),
            stride: self.n,
        };
        // SAFETY: c0 < n, inside the caller's output row.
        let out = unsafe { out.add(c0) };
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only set after detecting AVX-512 F/BW/VNNI; `out` as promised.
            return unsafe { tile_vnni(tile, &panel, out) };
        }
        let _ = simd;
        // SAFETY: as promised by the caller.
        unsafe { tile_scalar(tile, &panel, out) }
    }
}

/// Activations quantised for the int8 layers, block by block: one quantisation serves every
/// layer that reads the same input (the attention's query, key and value).
#[derive(Debug)]
pub struct QuantizedInput {
    /// Rows (every dimension but the last).
    m: usize,
    /// Features per row.
    k: usize,
    /// The input's shape.
    shape: Vec<usize>,
    /// Where the output goes.
    device: candle_core::Device,
    /// `[rows, kp]` bytes `q + OFFSET`, rows padded to a multiple of MR with quantised zeros.
    bytes: Vec<u8>,
    /// `[rows, kp / QK]` block scales.
    scales: Vec<f32>,
    /// Whether it was quantised by the AVX-512 code, and so goes to the VNNI kernel.
    simd: bool,
}

impl QuantizedInput {
    /// Quantises `x [.., k]` (f32, CPU).
    pub fn new(x: &Tensor) -> Result<Self> {
        let shape = x.dims().to_vec();
        let k = *shape.last().unwrap_or(&0);
        let m = x.elem_count() / k.max(1);
        with_f32(x, |data| Self::from_rows(data, m, k, available())).map(|q| Self {
            shape,
            device: x.device().clone(),
            ..q
        })
    }

    /// Quantises `m` rows of `k` floats; `simd` uses the AVX-512 code (same bytes).
    fn from_rows(x: &[f32], m: usize, k: usize, simd: bool) -> Self {
        let kp = k.div_ceil(QK) * QK;
        let (rows, nb) = (m.div_ceil(MR) * MR, kp / QK);
        // Filled in parallel (one thread writing megabytes would leave the other cores idle):
        // `OFFSET` is a quantised zero, which the padding rows keep.
        let mut bytes = Vec::with_capacity(rows * kp);
        bytes.par_extend(rayon::iter::repeat_n(OFFSET as u8, rows * kp));
        let mut scales = vec![0f32; rows * nb];
        // In chunks of rows (one parallel task each: rayon's cost per task is larger than a
        // row's work).
        const CHUNK: usize = 64;
        bytes
            .par_chunks_mut(kp * CHUNK)
            .zip(scales.par_chunks_mut(nb * CHUNK))
            .enumerate()
            .for_each(|(c, (dst, scales))| {
                for (i, (d, s)) in dst.chunks_mut(kp).zip(scales.chunks_mut(nb)).enumerate() {
                    let r = c * CHUNK + i;
                    if r < m {
                        quantize_row(&x[r * k..(r + 1) * k], d, s, simd);
                    }
                }
            });
        Self {
            m,
            k,
            shape: vec![m, k],
            device: candle_core::Device::Cpu,
            bytes,
            scales,
            simd,
        }
    }

    /// Rows including the padding to a multiple of MR.
    fn rows(&self) -> usize {
        self.m.div_ceil(MR) * MR
    }

    /// What quantising `x` (the `[m, k]` rows it was made from) rounded away, per value.
    fn residual(&self, x: &[f32]) -> Vec<f32> {
        let (k, kp, nb) = (self.k, self.k.div_ceil(QK) * QK, self.k.div_ceil(QK));
        let mut out = vec![0f32; self.m * k];
        out.par_chunks_mut(k).enumerate().for_each(|(r, out)| {
            let (x, q) = (&x[r * k..(r + 1) * k], &self.bytes[r * kp..r * kp + k]);
            let scales = &self.scales[r * nb..(r + 1) * nb];
            for (i, ((o, &v), &q)) in out.iter_mut().zip(x).zip(q).enumerate() {
                *o = v - (q as i32 - OFFSET) as f32 * scales[i / QK];
            }
        });
        out
    }
}

/// An input quantised in two steps, for inference that must match f32 closely (re-checking a
/// near tie): the value in int8 blocks, then what that rounded away in int8 blocks of its own.
/// The two products together are within about 1/127² of the block's largest magnitude per
/// value, at twice the int8 cost.
#[derive(Debug)]
pub struct RefinedInput {
    /// The value, as [`QuantizedInput::new`] quantises it.
    coarse: QuantizedInput,
    /// The first step's rounding error.
    residual: QuantizedInput,
}

impl RefinedInput {
    /// Quantises `x [.., k]` (f32, CPU) in two steps.
    pub fn new(x: &Tensor) -> Result<Self> {
        let coarse = QuantizedInput::new(x)?;
        let residual = with_f32(x, |data| {
            QuantizedInput::from_rows(&coarse.residual(data), coarse.m, coarse.k, coarse.simd)
        })?;
        Ok(Self { coarse, residual })
    }
}

/// Quantises one block of weights to int8 and returns its scale: exactly when the values lie
/// on a grid of at most 127 steps either side of zero (Q4_0 and Q8_0 blocks do), otherwise
/// rounded to 127 steps of the largest magnitude.
fn quantize_weight_block(v: &[f32], dst: &mut [i8]) -> f32 {
    let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if amax == 0.0 {
        dst.fill(0);
        return 0.0;
    }
    // |x / s| <= 127, so the integer conversion is exact when the quotient is an integer; the
    // quotients are written as they are checked, so a block on the grid is done.
    let fits = |s: f32, dst: &mut [i8]| {
        v.iter().zip(dst.iter_mut()).all(|(&x, d)| {
            let q = (x / s) as i32;
            *d = q as i8;
            q as f32 * s == x
        })
    };
    // Eight steps first, a Q4_0 block's grid (its largest magnitude is 8 steps), then the
    // smallest grid that fits. A block whose smallest grid is 1, 2 or 4 steps is held on 8
    // instead, with the same outputs: its scale and integers differ by a power of two, which
    // every product and sum carries exactly.
    let grids = std::iter::once(8).chain((1..=127).filter(|&steps| steps != 8));
    for steps in grids {
        let s = amax / steps as f32;
        if fits(s, dst) {
            return s;
        }
    }
    let s = amax / 127.0;
    for (d, &x) in dst.iter_mut().zip(v) {
        *d = (x / s).round().clamp(-127.0, 127.0) as i8;
    }
    s
}

/// One micro-kernel call's activations.
struct Tile<'a> {
    /// MR quantised activation rows of `kp` bytes (`q + OFFSET`).
    a: &'a [u8],
    /// Their block scales, `kp / QK` per row.
    scale: &'a [f32],
    /// Rows that are real (the rest is padding).
    rows: usize,
    /// Column panel (NR wide).
    panel: usize,
}

/// One NR-wide column panel's weights and constants, and the output geometry.
struct Panel<'a> {
    /// Packed int8 weights, `[kp / 4][NR][4]`.
    weights: &'a [i8],
    /// Block scales, `[kp / QK][NR]`.
    scale: &'a [f32],
    /// Block accumulator starts, `[kp / QK][NR]`.
    start: &'a [i32],
    /// Bias.
    bias: &'a [f32],
    /// Padded input features.
    kp: usize,
    /// Columns of the panel that are real (the rest is padding).
    cols: usize,
    /// Floats per output row.
    stride: usize,
}

struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint output tiles to rayon tasks (see `matmul`).
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Quantises one activation row, block by block, to `q + OFFSET` bytes (`q` symmetric int8 over
/// the block's largest magnitude) and writes the block scales; padding past `x` stays a
/// quantised zero. `simd` uses the AVX-512 version, which gives the same bytes.
fn quantize_row(x: &[f32], dst: &mut [u8], scales: &mut [f32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only set after detecting AVX-512 F/BW/VNNI.
        return unsafe { quantize_row_avx512(x, dst, scales) };
    }
    let _ = simd;
    for ((x, d), s) in x.chunks(QK).zip(dst.chunks_mut(QK)).zip(scales) {
        *s = quantize_block(x, d);
    }
}

/// [`quantize_row`] for one block (up to QK values); returns its scale.
fn quantize_block(x: &[f32], dst: &mut [u8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (scale, inv) = block_scale(amax);
    for (d, v) in dst.iter_mut().zip(x) {
        *d = quantize_one(*v, inv);
    }
    scale
}

/// A block's scale and its inverse from its largest magnitude (zero for an all-zero block).
fn block_scale(amax: f32) -> (f32, f32) {
    if amax > 0.0 {
        let scale = amax / 127.0;
        (scale, 1.0 / scale)
    } else {
        (0.0, 0.0)
    }
}

/// One value to a stored byte: scale, round to nearest even, clamp to ±127, add the offset.
#[inline(always)]
fn quantize_one(v: f32, inv: f32) -> u8 {
    (((v * inv).round_ties_even() as i32).clamp(-127, 127) + OFFSET) as u8
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row_avx512(x: &[f32], dst: &mut [u8], scales: &mut [f32]) {
    use std::arch::x86_64::*;
    let (lo, hi, offset) = (
        _mm512_set1_epi32(-127),
        _mm512_set1_epi32(127),
        _mm512_set1_epi32(OFFSET),
    );
    for ((x, dst), s) in x.chunks(QK).zip(dst.chunks_mut(QK)).zip(scales) {
        if x.len() < QK {
            *s = quantize_block(x, dst);
            continue;
        }
        // SAFETY: a full block holds QK = 32 floats.
        let v = unsafe {
            [
                _mm512_loadu_ps(x.as_ptr()),
                _mm512_loadu_ps(x.as_ptr().add(16)),
            ]
        };
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
        let (scale, inv) = block_scale(amax);
        let vinv = _mm512_set1_ps(inv);
        for (i, v) in v.into_iter().enumerate() {
            // Round to nearest even (the default rounding mode), as `round_ties_even`.
            let q = _mm512_cvtps_epi32(_mm512_mul_ps(v, vinv));
            let q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), offset);
            // SAFETY: 16 bytes at 16 * i < QK = dst.len().
            unsafe {
                _mm_storeu_si128(
                    dst.as_mut_ptr().add(16 * i) as *mut __m128i,
                    _mm512_cvtepi32_epi8(q),
                )
            };
        }
        *s = scale;
    }
}

/// Reference micro-kernel: the same arithmetic as `tile_vnni`, one product at a time.
///
/// # Safety
/// `out` must be valid for `tile.rows` rows of `panel.stride` floats, `panel.cols` from the start.
unsafe fn tile_scalar(tile: &Tile<'_>, panel: &Panel<'_>, out: *mut f32) {
    let (kp, nb) = (panel.kp, panel.kp / QK);
    for r in 0..tile.rows {
        let row = &tile.a[r * kp..(r + 1) * kp];
        for c in 0..panel.cols {
            let mut acc = 0f32;
            for g in 0..nb {
                let mut dot = panel.start[g * NR + c];
                for (k, &a) in row.iter().enumerate().skip(g * QK).take(QK) {
                    dot += a as i32 * panel.weights[(k / 4 * NR + c) * 4 + k % 4] as i32;
                }
                let s = panel.scale[g * NR + c] * tile.scale[r * nb + g];
                acc = (dot as f32).mul_add(s, acc);
            }
            // SAFETY: r < tile.rows, c < panel.cols, as promised.
            unsafe { *out.add(r * panel.stride + c) = acc + panel.bias[c] };
        }
    }
}

/// MR × NR tile with `vpdpbusd`: per step of 4 input features, two 64-byte weight vectors
/// (NR columns × 4) and one broadcast of 4 activation bytes per row; per block of QK features,
/// the exact i32 sums are scaled into f32 accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni(tile: &Tile<'_>, panel: &Panel<'_>, out: *mut f32) {
    use std::arch::x86_64::*;
    let (kp, nb) = (panel.kp, panel.kp / QK);
    debug_assert!(tile.a.len() >= MR * kp && panel.weights.len() >= kp * NR);
    let (ap, bp) = (tile.a.as_ptr(), panel.weights.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for g in 0..nb {
        // SAFETY: block g < nb of the panel's NR-wide constants.
        let start = unsafe {
            let p = panel.start.as_ptr().add(g * NR);
            [
                _mm512_loadu_si512(p as *const _),
                _mm512_loadu_si512(p.add(16) as *const _),
            ]
        };
        let mut dot = [start; MR];
        for k4 in g * QK / 4..(g + 1) * QK / 4 {
            // SAFETY: k4 * 4 < kp and the panel holds kp / 4 steps of NR × 4 bytes.
            let (b0, b1) = unsafe {
                let b = bp.add(k4 * NR * 4);
                (
                    _mm512_loadu_si512(b as *const _),
                    _mm512_loadu_si512(b.add(64) as *const _),
                )
            };
            for (r, d) in dot.iter_mut().enumerate() {
                // SAFETY: row r < MR of `a`, 4 bytes at k4 * 4 < kp.
                let x = unsafe { (ap.add(r * kp + k4 * 4) as *const i32).read_unaligned() };
                let x = _mm512_set1_epi32(x);
                d[0] = _mm512_dpbusd_epi32(d[0], x, b0);
                d[1] = _mm512_dpbusd_epi32(d[1], x, b1);
            }
        }
        // SAFETY: as for `start`.
        let ws = unsafe {
            let p = panel.scale.as_ptr().add(g * NR);
            [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))]
        };
        for (r, (a, d)) in acc.iter_mut().zip(&dot).enumerate() {
            let xs = _mm512_set1_ps(tile.scale[r * nb + g]);
            for h in 0..2 {
                let s = _mm512_mul_ps(ws[h], xs);
                a[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[h]), s, a[h]);
            }
        }
    }
    // Epilogue: the bias added, masked to the real columns.
    for (h, off) in [0usize, 16].into_iter().enumerate() {
        let live = panel.cols.saturating_sub(off).min(16);
        if live == 0 {
            continue;
        }
        let mask: __mmask16 = if live == 16 {
            0xFFFF
        } else {
            (1u16 << live) - 1
        };
        // SAFETY: the panel's bias holds NR = 32 entries.
        let bias = unsafe { _mm512_loadu_ps(panel.bias.as_ptr().add(off)) };
        for (r, a) in acc.iter().enumerate().take(tile.rows) {
            let y = _mm512_add_ps(a[h], bias);
            // SAFETY: row r < tile.rows, `live` columns from `off`, as promised by the caller.
            unsafe { _mm512_mask_storeu_ps(out.add(r * panel.stride + off), mask, y) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Module};

    fn random(shape: (usize, usize), seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// `[m, k]` rows through the layer, quantised and multiplied by the SIMD or scalar code.
    fn run(lin: &Int8Linear, x: &[f32], m: usize, simd: bool) -> Vec<f32> {
        lin.matmul(&QuantizedInput::from_rows(x, m, lin.k, simd))
    }

    impl Int8Linear {
        /// The weight the packed int8 values and block scales stand for, `[n, k]`.
        fn dequantized(&self) -> Vec<f32> {
            let nb = self.kp / QK;
            let mut w = Vec::with_capacity(self.n * self.k);
            for row in 0..self.n {
                let (p, col) = (row / NR, row % NR);
                for k in 0..self.k {
                    let q = self.packed[((p * (self.kp / 4) + k / 4) * NR + col) * 4 + k % 4];
                    w.push(q as f32 * self.scale[(p * nb + k / QK) * NR + col]);
                }
            }
            w
        }
    }

    #[test]
    fn vector_kernel_equals_scalar_reference_bit_for_bit() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU (or the generic switch is set)");
            return;
        }
        // Odd sizes exercise row, column and k padding (a partial last block).
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
                run(&lin, &x, m, true),
                run(&lin, &x, m, false),
                "{m}x{k}x{n}"
            );
        }
    }

    #[test]
    fn q4_0_and_q8_0_weights_are_held_exactly() {
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&random((40, 96), 7), dtype).unwrap();
            let w = q.dequantize(&Device::Cpu).unwrap();
            let lin = Int8Linear::new(
                &w,
                &Tensor::zeros(40, candle_core::DType::F32, &Device::Cpu).unwrap(),
            )
            .unwrap();
            let exact: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(lin.dequantized(), exact, "{dtype:?}");
        }
    }

    #[test]
    fn other_weights_are_rounded_to_127_steps_per_block() {
        let w = random((9, 61), 8);
        let lin = Int8Linear::new(&w, &random((1, 9), 2).squeeze(0).unwrap()).unwrap();
        let exact: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        for (row, (a, b)) in exact
            .chunks(61)
            .zip(lin.dequantized().chunks(61))
            .enumerate()
        {
            for (block, (a, b)) in a.chunks(QK).zip(b.chunks(QK)).enumerate() {
                let amax = a.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst <= amax / 254.0 * 1.001,
                    "row {row} block {block}: {worst}"
                );
            }
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
            let approx = run(&lin, &xs, m, false);
            // Relative to the output's spread: 127 steps per block on both sides.
            let spread = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = exact
                .iter()
                .zip(&approx)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 0.01 * spread, "{m}x{k}x{n}: {worst} vs {spread}");
        }
    }

    #[test]
    fn an_outlier_feature_costs_only_its_own_block() {
        // One input feature 100× the others (as LayerNorm outputs have): one scale per row
        // would round every other feature to a few steps; one per block only its neighbours.
        let (m, k, n) = (4, 256, 32);
        let w = random((n, k), 9);
        let b = Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut xs: Vec<f32> = random((m, k), 10).flatten_all().unwrap().to_vec1().unwrap();
        for r in 0..m {
            xs[r * k + 200] = 100.0;
        }
        let approx = run(&Int8Linear::new(&w, &b).unwrap(), &xs, m, false);
        let exact_w = |x: Vec<f32>| -> Vec<f32> {
            let x = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
            x.matmul(&w.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let per_row: Vec<f32> = xs
            .chunks(k)
            .flat_map(|row| {
                let s = row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                row.iter().map(move |v| (v / s).round() * s)
            })
            .collect();
        let exact = exact_w(xs);
        let worst = |y: &[f32]| {
            exact
                .iter()
                .zip(y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        let (blocks, rows) = (worst(&approx), worst(&exact_w(per_row)));
        assert!(blocks < rows / 2.0, "per block {blocks}, per row {rows}");
    }

    #[test]
    fn a_refined_input_matches_the_dense_layer_far_closer() {
        let (m, k, n) = (9, 384, 96);
        let w = QTensor::quantize(&random((n, k), 11), GgmlDType::Q4_0)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let b = random((1, n), 12).squeeze(0).unwrap();
        let mut xs: Vec<f32> = random((m, k), 13).flatten_all().unwrap().to_vec1().unwrap();
        xs[5] = 40.0; // an outlier, as LayerNorm outputs have
        let x = Tensor::from_vec(xs, (m, k), &Device::Cpu).unwrap();
        let exact: Vec<f32> = candle_nn::Linear::new(w.clone(), Some(b.clone()))
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let lin = Int8Linear::new(&w, &b).unwrap();
        let worst = |y: Tensor| {
            let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            exact
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        let coarse = worst(lin.forward(&x).unwrap());
        let refined = worst(
            lin.forward_refined(&RefinedInput::new(&x).unwrap())
                .unwrap(),
        );
        // Each step rounds to 1/254 of its block's magnitude: two steps, about 1/254².
        assert!(
            refined < coarse / 100.0,
            "refined {refined}, one step {coarse}"
        );

        // A batch of sequences, with a partial last block (k = 100), keeps its shape and is
        // as close to the weights the layer holds (random ones are rounded to 127 steps).
        let (k, n) = (100, 24);
        let b = random((1, n), 15).squeeze(0).unwrap();
        let lin = Int8Linear::new(&random((n, k), 14), &b).unwrap();
        let held = Tensor::from_vec(lin.dequantized(), (n, k), &Device::Cpu).unwrap();
        let x = random((6, k), 16).reshape((2, 3, k)).unwrap();
        let exact = candle_nn::Linear::new(held, Some(b)).forward(&x).unwrap();
        let got = lin
            .forward_refined(&RefinedInput::new(&x).unwrap())
            .unwrap();
        assert_eq!(got.dims(), &[2, 3, n]);
        let diff: f32 = (got - exact)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        // Outputs of magnitude about 3: one step alone is off by about 1e-2.
        assert!(diff < 1e-3, "{diff}");
    }

    #[test]
    fn wrong_input_width_is_an_error() {
        let lin =
            Int8Linear::new(&random((8, 16), 1), &random((1, 8), 2).squeeze(0).unwrap()).unwrap();
        assert!(lin.forward(&random((2, 15), 3)).is_err());
        assert_eq!(lin.forward(&random((2, 16), 3)).unwrap().dims(), &[2, 8]);
    }
}
