//! Vocabulary pruning for Russian and English: which SentencePiece pieces the shipped encoder
//! keeps. Owns the keep rule and the renumbering only.
//!
//! Rule: keep a piece when every code point in it is Latin, Cyrillic, Common or Inherited script,
//! or a number, punctuation, symbol, mark or separator by general category; keep every
//! single-code-point piece of any script; keep the control pieces and the lowest-scoring piece.
//! A piece holding a code point outside that set can only match text containing that code point,
//! so Russian and English text tokenises exactly as with the full vocabulary.

use unicode_general_category::{get_general_category, GeneralCategory as G};
use unicode_script::{Script, UnicodeScript};

/// Whether a code point belongs to the kept (ru/en) character set.
pub fn kept_char(c: char) -> bool {
    if matches!(
        c.script(),
        Script::Latin | Script::Cyrillic | Script::Common | Script::Inherited
    ) {
        return true;
    }
    matches!(
        get_general_category(c),
        G::DecimalNumber
            | G::LetterNumber
            | G::OtherNumber
            | G::ConnectorPunctuation
            | G::DashPunctuation
            | G::OpenPunctuation
            | G::ClosePunctuation
            | G::InitialPunctuation
            | G::FinalPunctuation
            | G::OtherPunctuation
            | G::MathSymbol
            | G::CurrencySymbol
            | G::ModifierSymbol
            | G::OtherSymbol
            | G::NonspacingMark
            | G::SpacingMark
            | G::EnclosingMark
            | G::SpaceSeparator
    )
}

/// Whether a piece (the string of one vocabulary entry) is kept by the rule above.
pub fn kept_piece(piece: &str) -> bool {
    let mut chars = piece.chars();
    match (chars.next(), chars.next()) {
        (Some(_), None) => true,
        _ => piece.chars().all(kept_char),
    }
}

/// Original ids to keep, in original order. `control` ids are always kept; the lowest-score
/// piece is kept so the unknown-token penalty (minimum score − 10) is unchanged.
pub fn kept_ids(pieces: &[(String, f32)], control: &[u32]) -> Vec<u32> {
    let lowest = pieces
        .iter()
        .enumerate()
        .filter(|(i, _)| !control.contains(&(*i as u32)))
        .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
        .map(|(i, _)| i as u32);
    let mut ids: Vec<u32> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u32, p))
        .filter(|(i, (p, _))| control.contains(i) || Some(*i) == lowest || kept_piece(p))
        .map(|(i, _)| i)
        .collect();
    // `<mask>` (the last control id) goes last, as in XLM-R.
    if let Some(&last) = control.iter().max() {
        ids.retain(|&i| i != last);
        ids.push(last);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ru_en_and_marks_drops_other_scripts() {
        assert!(kept_piece("▁привет"));
        assert!(kept_piece("▁hello"));
        assert!(kept_piece("ё"));
        assert!(kept_piece("а\u{301}")); // Russian stress mark (Inherited)
        assert!(kept_piece("2025"));
        assert!(kept_piece("€"));
        assert!(kept_piece("😀"));
        assert!(kept_piece("稣")); // single code point of any script
        assert!(!kept_piece("▁東京"));
        assert!(!kept_piece("مرحبا"));
    }

    #[test]
    fn control_and_lowest_kept_mask_last() {
        let p = |s: &str, x: f32| (s.to_string(), x);
        let pieces = vec![
            p("<s>", 0.0),
            p("<pad>", 0.0),
            p("</s>", 0.0),
            p("<unk>", 0.0),
            p("▁東京", -5.0),
            p("▁мир", -6.0),
            p("ἀγ", -30.0),
            p("<mask>", 0.0),
        ];
        assert_eq!(
            kept_ids(&pieces, &[0, 1, 2, 3, 7]),
            vec![0, 1, 2, 3, 5, 6, 7]
        );
    }
}
