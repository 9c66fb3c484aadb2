//! Builds a SentencePiece `precompiled_charsmap` (the form a `tokenizer.json` `Precompiled`
//! normaliser stores) from a per-code-point normalisation map.
//!
//! Layout, as read by the `spm_precompiled` crate that `tokenizers` uses: a little-endian u32
//! byte size of the trie, the trie (a darts-clone double array of u32 units, built here with
//! `yada`, whose unit layout is darts-clone's), then the replacement strings, each
//! NUL-terminated; a trie value is the byte offset of its replacement.

use std::collections::{BTreeMap, HashMap};

/// Errors building the charsmap.
#[derive(Debug, thiserror::Error)]
pub enum CharsmapError {
    /// The map has no entries (a charsmap needs at least one).
    #[error("the normalisation map is empty")]
    Empty,
    /// The double-array builder refused the key set.
    #[error("building the double-array trie: {0}")]
    Trie(String),
}

/// Result of a build: the charsmap bytes and the code points that could not be represented.
#[derive(Debug, Clone)]
pub struct Charsmap {
    /// Bytes for `precompiled_charsmap`.
    pub bytes: Vec<u8>,
    /// Entries skipped because a code point is not a Unicode scalar (surrogates).
    pub skipped: Vec<u32>,
}

/// Builds the charsmap for `map` (code point -> replacement code points; empty = delete).
pub fn build(map: &BTreeMap<u32, Vec<u32>>) -> Result<Charsmap, CharsmapError> {
    let mut skipped = Vec::new();
    let mut blob: Vec<u8> = Vec::new();
    let mut offsets: HashMap<String, u32> = HashMap::new();
    let mut keys: Vec<(Vec<u8>, u32)> = Vec::with_capacity(map.len());
    for (&cp, out) in map {
        let (Some(key), Some(replacement)) = (char::from_u32(cp), to_string(out)) else {
            skipped.push(cp);
            continue;
        };
        let offset = *offsets.entry(replacement.clone()).or_insert_with(|| {
            let at = blob.len() as u32;
            blob.extend_from_slice(replacement.as_bytes());
            blob.push(0);
            at
        });
        keys.push((key.to_string().into_bytes(), offset));
    }
    if keys.is_empty() {
        return Err(CharsmapError::Empty);
    }
    keys.sort();
    let trie = yada::builder::DoubleArrayBuilder::build(&keys)
        .map_err(|e| CharsmapError::Trie(e.to_string()))?;
    let mut bytes = Vec::with_capacity(4 + trie.len() + blob.len());
    bytes.extend_from_slice(&(trie.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&trie);
    bytes.extend_from_slice(&blob);
    Ok(Charsmap { bytes, skipped })
}

fn to_string(cps: &[u32]) -> Option<String> {
    cps.iter().map(|&c| char::from_u32(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<u32, Vec<u32>> {
        BTreeMap::from([
            (0x09, vec![0x20]),
            (0xFF21, vec![0x41]),
            (0x200D, vec![0x20]),
            (0xFE0F, vec![]),
            (0x2163, vec![0x49, 0x56]),
            (0xD800, vec![0x20]),
        ])
    }

    #[test]
    fn round_trips_through_the_reader_tokenizers_uses() {
        let cm = build(&sample()).unwrap();
        assert_eq!(cm.skipped, vec![0xD800]);
        let pc = spm_precompiled::Precompiled::from(&cm.bytes).unwrap();
        assert_eq!(pc.transform("\t"), Some(" "));
        assert_eq!(pc.transform("Ａ"), Some("A"));
        assert_eq!(pc.transform("\u{200D}"), Some(" "));
        assert_eq!(pc.transform("\u{FE0F}"), Some(""));
        assert_eq!(pc.transform("Ⅳ"), Some("IV"));
        assert_eq!(pc.transform("a"), None);
        assert_eq!(pc.transform("й"), None);
    }

    #[test]
    fn empty_map_is_an_error() {
        assert_eq!(
            build(&BTreeMap::new()).unwrap_err().to_string(),
            "the normalisation map is empty"
        );
    }
}
