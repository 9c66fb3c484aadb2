//! Fused scaled dot-product attention for CPU inference in f32: no `[b, heads, s, s]` score
//! tensor, no head transposes, padding skipped. Owns this one kernel; the layer that calls it
//! is [`crate::model::bert`], the dispatch and the shared vector helpers are in
//! [`crate::model::kernels`].
//!
//! Work is split by (batch item, head). A task gathers its head's valid queries, keys and
//! values once into scratch laid out for the registers, then takes the queries a block of
//! `R` rows at a time: each key block loaded (16 keys) or value row feeds `R` independent
//! accumulators, so the multiply-adds run at the CPU's throughput, not one chain at its
//! latency, and a head's keys and values (32 KiB each at 256 tokens and 32-wide heads) stay in
//! the core's cache while all its rows read them. The kernels are in `attention/kernel.rs`.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

use crate::model::kernels::{kernel_path, with_f32, KernelPath};

#[cfg(target_arch = "x86_64")]
mod kernel;

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
        KernelPath::Avx512 => kernel::avx512::ROWS,
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2 => kernel::avx2::ROWS,
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
            KernelPath::Avx512 => return unsafe { kernel::avx512::head(w) },
            KernelPath::Avx2 => return unsafe { kernel::avx2::head(w) },
            KernelPath::Generic => {}
        }
    }
    let _ = w;
    unreachable!(
        "fused attention runs only on the AVX2 and AVX-512 paths ({path:?}). This is a bug."
    )
}

#[cfg(target_arch = "x86_64")]
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
        assert!(
            ok,
            "attention scratch of the wrong size for {n} tokens of {hd} and {rows} rows: q {}, kt {}, v {}, p {}, out {}. This is a bug.",
            self.q.len(),
            self.kt.len(),
            self.v.len(),
            self.p.len(),
            self.out.len()
        );
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

    /// Masks of `s` tokens whose first `lens[i]` are valid (the rest padding).
    fn prefixes(lens: &[usize], s: usize) -> Vec<Vec<bool>> {
        lens.iter()
            .map(|&l| (0..s).map(|j| j < l).collect())
            .collect()
    }

    /// Checks the fused kernel against the reference on every path, for items with the
    /// valid tokens of `masks`, heads `hd` wide: valid rows as the reference, others zero.
    fn check(masks: &[Vec<bool>], heads: usize, hd: usize) {
        assert!(
            !fast_paths().is_empty() || !cfg!(target_arch = "x86_64"),
            "every x86-64 machine this runs on has AVX2"
        );
        let dev = Device::Cpu;
        let (b, s) = (masks.len(), masks[0].len());
        let h = heads * hd;
        let q = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, s, h), &dev).unwrap();
        let mask: Vec<u32> = masks.iter().flatten().map(|&m| u32::from(m)).collect();
        let mask = Tensor::from_vec(mask, (b, s), &dev).unwrap();
        let bias = crate::model::bert::mask_bias(&mask, DType::F32).unwrap();
        let r: Vec<Vec<Vec<f32>>> = reference(&q, &k, &v, &bias, heads).to_vec3().unwrap();
        for path in fast_paths() {
            let fused = fused_attention_on(path, &q, &k, &v, &bias, heads, false)
                .unwrap()
                .unwrap();
            let f: Vec<Vec<Vec<f32>>> = fused.to_vec3().unwrap();
            for (bi, mask) in masks.iter().enumerate() {
                for (i, &valid) in mask.iter().enumerate() {
                    for c in 0..h {
                        let want = if valid { r[bi][i][c] } else { 0.0 };
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
        check(&prefixes(&[19, 16, 4, 1], 19), 3, 32);
        // Heads 64 wide; 41 tokens: several row blocks of 4 and 8 with a partial last one.
        check(&prefixes(&[41, 33, 8, 9], 41), 2, 64);
        // Full length: 16 key blocks, long items beside a short one.
        check(&prefixes(&[256, 200, 130], 256), 12, 32);
    }

    #[test]
    fn fused_attention_skips_masked_tokens_anywhere_and_empty_items() {
        // Holes in the middle (a token's place and its compact index differ), an item with
        // no valid token at all, and one whose only valid token is the last.
        let s = 37;
        let holes: Vec<bool> = (0..s).map(|j| j % 3 != 1 && j != 20).collect();
        let last: Vec<bool> = (0..s).map(|j| j == s - 1).collect();
        check(&[holes, vec![false; s], last], 3, 32);
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
