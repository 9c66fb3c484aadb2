//! Writes the self-contained `tokenizer.json` (for the `tokenizers` crate and its Python
//! binding) that reproduces the XLM-R SentencePiece tokenizer over the pruned vocabulary.

use base64::Engine as _;
use serde_json::{json, Value};

/// Control pieces (`<s>`, `<pad>`, `</s>`, `<unk>`, `<mask>`) are never matched against text
/// by SentencePiece. A `tokenizers` Unigram model matches every vocabulary entry, so these get
/// a score far below every real piece: a customer typing `<s>` gets the text pieces `▁<`, `s`,
/// `>`, never the special token. The unknown-token penalty (minimum score − 10) moves with it,
/// which cannot change a segmentation: a character without a single-character piece that occurs
/// in no multi-character piece is covered by the `<unk>` node on every path (the importer checks
/// that no kept multi-character piece holds such a character).
pub const CONTROL_SCORE: f64 = -1000.0;

/// What the tokenizer needs to know about the vocabulary.
pub struct TokenizerSpec<'a> {
    /// Pieces and scores in new-id order.
    pub pieces: &'a [(String, f32)],
    /// New ids of control pieces.
    pub control: &'a [u32],
    /// `precompiled_charsmap` bytes.
    pub charsmap: &'a [u8],
    /// Truncation length in tokens, specials included.
    pub max_tokens: usize,
}

/// Builds the `tokenizer.json` document.
pub fn build(spec: &TokenizerSpec) -> Value {
    let vocab: Vec<Value> = spec
        .pieces
        .iter()
        .enumerate()
        .map(|(i, (p, s))| {
            let score = if spec.control.contains(&(i as u32)) {
                CONTROL_SCORE
            } else {
                *s as f64
            };
            json!([p, score])
        })
        .collect();
    let metaspace =
        json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": spec.max_tokens, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 1, "pad_type_id": 0, "pad_token": "<pad>"},
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled",
             "precompiled_charsmap": base64::engine::general_purpose::STANDARD.encode(spec.charsmap)},
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            {"type": "Strip", "strip_left": true, "strip_right": true}
        ]},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}
            }
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": false}
    })
}
