//! Ticket embeddings as incidents keep them: L2-normalised vectors stored as 8-bit integers with
//! one scale (384 bytes for the default encoder instead of 1,536), their cosine, and centroids. Pure; knows no intents or time.

use serde::{Deserialize, Serialize};

/// An L2-normalised embedding quantised to `i8` with one scale per vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// `value ≈ q × scale`.
    pub scale: f32,
    /// The quantised components.
    pub q: Vec<i8>,
}

impl Embedding {
    /// Normalises `v` and quantises it; a zero vector, or one with a value that is not a
    /// finite number, becomes zero (close to nothing).
    pub fn new(v: &[f32]) -> Self {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        if !norm.is_finite() || norm == 0.0 || max == 0.0 {
            return Self {
                scale: 0.0,
                q: vec![0; v.len()],
            };
        }
        let scale = max / norm / 127.0;
        let q = v
            .iter()
            .map(|x| (x / norm / scale).round().clamp(-127.0, 127.0) as i8)
            .collect();
        Self { scale, q }
    }

    /// Whether it has no components (a ticket kept without its embedding): close to nothing.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// The components as `f32`.
    pub fn values(&self) -> Vec<f32> {
        self.q.iter().map(|&x| x as f32 * self.scale).collect()
    }

    /// Cosine similarity (both are unit vectors up to quantisation); 0 when dimensions differ.
    pub fn cosine(&self, other: &Self) -> f32 {
        if self.q.len() != other.q.len() {
            return 0.0;
        }
        let dot: i32 = self
            .q
            .iter()
            .zip(&other.q)
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum();
        dot as f32 * self.scale * other.scale
    }

    /// The bytes stored: the scale (little-endian `f32`) then the components.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.q.len());
        out.extend_from_slice(&self.scale.to_le_bytes());
        out.extend(self.q.iter().map(|&x| x as u8));
        out
    }

    /// Reads [`Embedding::to_bytes`]; `None` when too short or the scale is not a finite
    /// number.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let scale = f32::from_le_bytes(b.get(..4)?.try_into().ok()?);
        if !scale.is_finite() {
            return None;
        }
        Some(Self {
            scale,
            q: b[4..].iter().map(|&x| x as i8).collect(),
        })
    }
}

/// The normalised mean of embeddings (their centroid; empty when theirs are); `None` for no
/// members.
pub fn centroid<'a>(members: impl IntoIterator<Item = &'a Embedding>) -> Option<Embedding> {
    let mut sum: Option<Vec<f32>> = None;
    for e in members {
        let sum = sum.get_or_insert_with(|| vec![0.0; e.q.len()]);
        for (s, v) in sum.iter_mut().zip(e.values()) {
            *s += v;
        }
    }
    sum.map(|s| Embedding::new(&s))
}

/// Each member's cosine to the centroid of the others (how close a new ticket like it would
/// come: its own share of the centroid left out, which lifts a small group's cosines a lot);
/// empty for fewer than two.
pub fn leave_one_out(members: &[&Embedding]) -> Vec<f32> {
    if members.len() < 2 {
        return Vec::new();
    }
    let values: Vec<Vec<f32>> = members.iter().map(|e| e.values()).collect();
    let mut sum = vec![0f32; values[0].len()];
    for v in &values {
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
    }
    values
        .iter()
        .map(|v| {
            let (mut dot, mut norm, mut own) = (0f32, 0f32, 0f32);
            for (s, x) in sum.iter().zip(v) {
                let rest = s - x;
                dot += x * rest;
                norm += rest * rest;
                own += x * x;
            }
            let den = (norm * own).sqrt();
            if den > 0.0 && den.is_finite() {
                dot / den
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantised_cosine_is_close_to_the_exact_one() {
        let a = [0.3f32, -0.2, 0.9, 0.05, -0.4];
        let b = [0.1f32, -0.3, 0.7, 0.2, -0.1];
        let exact = {
            let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / n(&a) / n(&b)
        };
        let (ea, eb) = (Embedding::new(&a), Embedding::new(&b));
        assert!((ea.cosine(&eb) - exact).abs() < 0.01);
        assert!((ea.cosine(&ea) - 1.0).abs() < 0.01);
        assert_eq!(Embedding::from_bytes(&ea.to_bytes()).as_ref(), Some(&ea));
        assert_eq!(Embedding::from_bytes(&[1, 2]), None);
        assert_eq!(Embedding::from_bytes(&f32::NAN.to_le_bytes()), None);
        let broken = Embedding::new(&[f32::NAN, 1.0, 2.0]);
        assert_eq!(broken.cosine(&ea), 0.0);
        assert_eq!(Embedding::new(&[f32::INFINITY, 1.0]).scale, 0.0);
        let c = centroid([&ea, &eb]).unwrap();
        assert!(c.cosine(&ea) > 0.9 && c.cosine(&eb) > 0.9);
    }

    #[test]
    fn leave_one_out_cosines_leave_each_member_out_of_its_centroid() {
        let e = |v: &[f32]| Embedding::new(v);
        let (a, b, c) = (
            e(&[1.0, 0.0, 0.0]),
            e(&[0.0, 1.0, 0.0]),
            e(&[1.0, 1.0, 0.0]),
        );
        // Two members: each one's cosine to the other.
        let two = leave_one_out(&[&a, &b]);
        assert!(two.iter().all(|x| x.abs() < 0.01), "{two:?}");
        // Three: a against the mean of b and c, which is closer than a against all three.
        let three = leave_one_out(&[&a, &b, &c]);
        let others = centroid([&b, &c]).unwrap();
        assert!((three[0] - a.cosine(&others)).abs() < 0.01, "{three:?}");
        assert!(three[0] < a.cosine(&centroid([&a, &b, &c]).unwrap()));
        assert!(leave_one_out(&[&a]).is_empty());
    }
}
