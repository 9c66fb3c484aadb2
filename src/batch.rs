//! Batches: padded tensors for a group of tokenised texts, and the grouping of many texts into
//! batches under a size and token budget. No intents, rules or HTTP.

use candle_core::{Device, Result, Tensor};

use crate::text::Tokens;

/// Pad id of XLM-R style vocabularies.
pub const PAD_ID: u32 = 1;

/// A padded batch, as the encoder takes it: `(input_ids, attention_mask, token_type_ids)`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[b, s]` u32 token ids.
    pub input_ids: Tensor,
    /// `[b, s]` u32, 1 for tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// `[b, s]` u32 token-type ids.
    pub token_type_ids: Tensor,
}

impl Batch {
    /// Pads `items` to the longest and builds the tensors on `device`.
    pub fn new(items: &[&Tokens], device: &Device) -> Result<Self> {
        let len = items.iter().map(|t| t.ids.len()).max().unwrap_or(0).max(1);
        let b = items.len();
        let (mut ids, mut mask, mut types) = (
            vec![PAD_ID; b * len],
            vec![0u32; b * len],
            vec![0u32; b * len],
        );
        for (row, t) in items.iter().enumerate() {
            let at = row * len;
            ids[at..at + t.ids.len()].copy_from_slice(&t.ids);
            types[at..at + t.type_ids.len()].copy_from_slice(&t.type_ids);
            mask[at..at + t.ids.len()].fill(1);
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (b, len), device)?,
            attention_mask: Tensor::from_vec(mask, (b, len), device)?,
            token_type_ids: Tensor::from_vec(types, (b, len), device)?,
        })
    }
}

/// Limits for grouping texts into batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most texts in one batch.
    pub max_batch: usize,
    /// Most padded tokens (batch size × longest) in one batch.
    pub max_tokens: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_tokens: 8192,
        }
    }
}

/// Groups indices of `items` into batches of similar length (sorted by length, then cut by the
/// limits), so little compute goes to padding. Every index appears exactly once.
pub fn plan(items: &[Tokens], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].ids.len()));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = items[i].ids.len();
        let next_longest = longest.max(len);
        let full = current.len() >= limits.max_batch
            || (!current.is_empty() && next_longest * (current.len() + 1) > limits.max_tokens);
        if full {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(n: usize) -> Tokens {
        Tokens {
            ids: vec![5; n],
            type_ids: vec![0; n],
        }
    }

    #[test]
    fn pads_and_masks() {
        let (a, b) = (toks(3), toks(1));
        let batch = Batch::new(&[&a, &b], &Device::Cpu).unwrap();
        let ids: Vec<Vec<u32>> = batch.input_ids.to_vec2().unwrap();
        let mask: Vec<Vec<u32>> = batch.attention_mask.to_vec2().unwrap();
        assert_eq!(ids, vec![vec![5, 5, 5], vec![5, PAD_ID, PAD_ID]]);
        assert_eq!(mask, vec![vec![1, 1, 1], vec![1, 0, 0]]);
    }

    #[test]
    fn plan_respects_limits_and_covers_all() {
        let items: Vec<Tokens> = [10, 3, 50, 7, 7, 2].iter().map(|&n| toks(n)).collect();
        let limits = BatchLimits {
            max_batch: 2,
            max_tokens: 60,
        };
        let plan = plan(&items, limits);
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
        for b in &plan {
            let longest = b.iter().map(|&i| items[i].ids.len()).max().unwrap();
            assert!(b.len() <= 2 && (b.len() == 1 || longest * b.len() <= 60));
        }
    }
}
