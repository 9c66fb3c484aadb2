//! Hot CPU kernels with run-time dispatch. The build targets any x86-64 CPU; a kernel compiled
//! for AVX2+FMA (or AVX-512) is picked at run time when the CPU has it. Setting
//! `INTENT_ROUTER_GENERIC_KERNELS=1` forces the generic path, so tests cover both.
//! (Matrix multiplication is candle's `gemm`, which dispatches the same way by itself.)

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
