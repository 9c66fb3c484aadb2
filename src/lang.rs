//! Language of a ticket: `ru`, `en` or `other`, with a confidence. Cyrillic script decides
//! Russian; Russian typed in Latin letters (transliteration, "ne mogu voiti") is recognised by a
//! lexicon of common transliterated words; the rest goes to `whatlang`.

use serde::{Deserialize, Serialize};

/// A detected (or given) language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Language {
    /// `ru`, `en` or `other` (or whatever code a ticket gave).
    pub code: String,
    /// 0..1; 1 when the ticket gave the language.
    pub confidence: f32,
    /// Whether the text is Russian written in Latin letters.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transliterated: bool,
}

impl Language {
    fn new(code: &str, confidence: f32) -> Self {
        Self {
            code: code.into(),
            confidence,
            transliterated: false,
        }
    }
}

/// Common Russian words as people type them in Latin letters.
const TRANSLIT: &[&str] = &[
    "privet",
    "zdravstvuite",
    "zdravstvuyte",
    "zdravstvujte",
    "dobryi",
    "dobryy",
    "dobriy",
    "den",
    "spasibo",
    "pozhaluysta",
    "pozhalujsta",
    "pojaluista",
    "pozhaluista",
    "ne",
    "mogu",
    "mne",
    "menya",
    "menja",
    "moi",
    "moy",
    "moj",
    "moya",
    "moja",
    "moego",
    "zakaz",
    "zakaza",
    "zakazal",
    "zakazala",
    "dengi",
    "deneg",
    "vernite",
    "vozvrat",
    "oplata",
    "oplatu",
    "oplatil",
    "oplatila",
    "schet",
    "schyot",
    "akkaunt",
    "akkaunta",
    "parol",
    "prishel",
    "prishlo",
    "prihodit",
    "prikhodit",
    "rabotaet",
    "pochemu",
    "kogda",
    "gde",
    "chto",
    "kak",
    "uzhe",
    "eshe",
    "eshche",
    "esche",
    "segodnya",
    "vchera",
    "dostavka",
    "dostavku",
    "kurer",
    "tovar",
    "spisali",
    "karta",
    "karty",
    "kartu",
    "pomogite",
    "srochno",
    "ochen",
    "nichego",
    "bylo",
    "byl",
    "byla",
    "mozhno",
    "nuzhno",
    "nado",
    "hochu",
    "khochu",
    "otmenit",
    "otmena",
    "podpiska",
    "podpisku",
    "sait",
    "sayt",
    "prilozhenie",
    "prilozhenii",
    "oshibka",
    "oshibku",
    "vhod",
    "voiti",
    "voyti",
    "zaiti",
    "zayti",
    "vy",
    "vas",
    "vam",
    "nas",
    "eto",
    "etot",
    "eta",
    "tak",
    "esli",
    "poka",
    "tolko",
    "vse",
    "vsyo",
    "vsem",
    "sdelat",
    "pochta",
    "pochtu",
    "nomer",
    "dolzhen",
    "dolzhny",
    "pishu",
    "napisal",
    "otvet",
    "otveta",
    "otvetili",
    "nikto",
    "sluzhba",
    "podderzhka",
    "podderzhki",
    "kompanii",
    "rublei",
    "rubley",
    "rub",
    "tovara",
    "posylka",
    "posylku",
    "poluchil",
    "poluchila",
    "prosto",
    "kakoi",
    "kakoy",
    "sposob",
    "nelzya",
    "nelzja",
];

/// Detects the language of `text`.
pub fn detect(text: &str) -> Language {
    let (mut cyr, mut lat) = (0usize, 0usize);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        match c {
            'а'..='я' | 'А'..='Я' | 'ё' | 'Ё' => cyr += 1,
            'a'..='z' | 'A'..='Z' => lat += 1,
            _ => {}
        }
    }
    let letters = cyr + lat;
    if letters == 0 {
        return Language::new("other", 0.0);
    }
    if cyr * 10 >= letters * 3 {
        return Language::new("ru", (0.5 + 0.5 * cyr as f32 / letters as f32).min(1.0));
    }
    if let Some(conf) = translit_confidence(text) {
        return Language {
            transliterated: true,
            ..Language::new("ru", conf)
        };
    }
    match whatlang::detect(text) {
        Some(info) if info.lang() == whatlang::Lang::Eng => {
            Language::new("en", info.confidence() as f32)
        }
        Some(info) if info.is_reliable() => Language::new("other", info.confidence() as f32),
        // Short or ambiguous Latin text (codes, product names): English is the likely reading.
        _ => Language::new("en", 0.3),
    }
}

/// Russian function words as they look in Latin letters.
const TRANSLIT_FUNCTION: &[&str] = &[
    "v", "vo", "na", "po", "za", "ot", "do", "iz", "k", "ko", "s", "so", "u", "o", "ob", "i",
    "ili", "no", "a", "ya", "on", "ona", "oni", "my", "mne", "nam", "vas", "dlya", "pri", "bez",
    "cherez", "pod", "nad", "uzhe", "tozhe", "esche", "eshche", "seichas", "seychas", "pozhe",
    "nichego", "kotoryi", "kotoryy", "budet", "est", "skolko", "stoit", "vash", "vashe", "vashi",
    "nash", "nashi", "nashe", "chelovek", "mozhet", "sdelali", "pochemu", "zachem", "teper",
    "vremya", "den", "dnya", "dnei", "nedelyu", "mesyats", "god",
];

/// Common English words, so that English text is never taken for transliteration.
const ENGLISH_COMMON: &[&str] = &[
    "the", "and", "to", "of", "is", "you", "your", "for", "with", "on", "in", "it", "this", "that",
    "please", "i", "me", "my", "we", "our", "us", "can", "can't", "cannot", "not", "have", "has",
    "was", "are", "be", "from", "at", "by", "an", "or", "but", "if", "do", "does", "did", "what",
    "when", "where", "how", "why", "hi", "hello", "thanks", "thank", "order", "account", "payment",
    "will", "would", "could", "there", "they", "been", "get", "got", "still", "just", "all", "no",
    "yes", "so", "a", "am", "as", "up", "out", "about",
];

/// Whether a Latin word looks like transliterated Russian by its letters and ending.
fn translit_shaped(word: &str) -> bool {
    const INNER: &[&str] = &[
        "zh", "kh", "shch", "sch", "yu", "ya", "yo", "iy", "yi", "yy",
    ];
    const ENDINGS: &[&str] = &[
        "ogo", "ego", "aya", "oye", "iye", "sya", "tsya", "nie", "niye", "ost", "ykh", "ikh",
        "ami", "ovat", "ivat", "ete", "ite", "aet", "yut", "yat", "ennyi", "nyi", "noe", "naya",
    ];
    word.len() >= 3
        && (INNER.iter().any(|p| word.contains(p)) || ENDINGS.iter().any(|e| word.ends_with(e)))
}

/// Confidence that Latin-letter text is transliterated Russian, if it looks like it: Russian
/// words (a lexicon of common transliterated words and function words, or Russian-shaped
/// spellings) clearly outnumber common English words.
fn translit_confidence(text: &str) -> Option<f32> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| w.chars().any(char::is_alphabetic))
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        return None;
    }
    let lexicon = words
        .iter()
        .filter(|w| TRANSLIT.contains(&w.as_str()))
        .count();
    let (mut ru, mut en) = (0usize, 0usize);
    for w in words.iter().map(String::as_str) {
        let english = ENGLISH_COMMON.contains(&w);
        let russian = TRANSLIT.contains(&w) || TRANSLIT_FUNCTION.contains(&w);
        match (english, russian) {
            (true, false) => en += 1,
            (false, true) if w.len() > 1 => ru += 1,
            (false, false) if translit_shaped(w) => ru += 1,
            // Words of both languages ("a", "i", "no", "do", "on", "my") decide nothing.
            _ => {}
        }
    }
    let share = ru as f32 / words.len() as f32;
    let enough =
        (ru >= 2 && ru > 2 * en && share >= 0.25) || (lexicon >= 1 && en == 0 && words.len() <= 3);
    enough.then(|| (0.5 + share / 2.0).min(0.99))
}

/// Latin-letter sequences of Russian transliteration and their Cyrillic letters, longest first.
const TO_CYRILLIC: &[(&str, &str)] = &[
    ("shch", "щ"),
    ("sch", "щ"),
    ("zh", "ж"),
    ("kh", "х"),
    ("ts", "ц"),
    ("ch", "ч"),
    ("sh", "ш"),
    ("yu", "ю"),
    ("ya", "я"),
    ("yo", "ё"),
    ("ju", "ю"),
    ("ja", "я"),
    ("jo", "ё"),
    ("'", "ь"),
    ("a", "а"),
    ("b", "б"),
    ("v", "в"),
    ("w", "в"),
    ("g", "г"),
    ("d", "д"),
    ("e", "е"),
    ("z", "з"),
    ("i", "и"),
    ("j", "й"),
    ("k", "к"),
    ("q", "к"),
    ("l", "л"),
    ("m", "м"),
    ("n", "н"),
    ("o", "о"),
    ("p", "п"),
    ("r", "р"),
    ("s", "с"),
    ("t", "т"),
    ("u", "у"),
    ("f", "ф"),
    ("h", "х"),
    ("c", "ц"),
    ("x", "кс"),
];

/// Writes transliterated Russian ("ne mogu voiti") back in Cyrillic ("не могу воити"), so the
/// encoder reads it as the Russian it is. Approximate by nature (Latin spellings are ambiguous);
/// `y` becomes `й` after a vowel and `ы` otherwise. Non-Latin characters pass through.
pub fn to_cyrillic(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !c.is_ascii_alphabetic() && c != '\'' {
            out.push(c);
            i += 1;
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 4)]
            .iter()
            .collect::<String>()
            .to_lowercase();
        let word_end_at = |n: usize| chars.get(i + n).is_none_or(|c| !c.is_ascii_alphabetic());
        let ending = [("yi", "ый"), ("yy", "ый"), ("iy", "ий"), ("ij", "ий")]
            .into_iter()
            .find(|(l, _)| rest.starts_with(l) && word_end_at(2));
        let (latin, cyr) = if let Some(e) = ending {
            e
        } else if rest.starts_with('y')
            && !rest.starts_with("yu")
            && !rest.starts_with("ya")
            && !rest.starts_with("yo")
        {
            let after_vowel = out
                .chars()
                .last()
                .is_some_and(|p| "аеёиоуыэюя".contains(p.to_lowercase().next().unwrap_or(p)));
            ("y", if after_vowel { "й" } else { "ы" })
        } else {
            TO_CYRILLIC
                .iter()
                .copied()
                .find(|(l, _)| rest.starts_with(l))
                .unwrap_or(("?", ""))
        };
        if latin == "?" {
            out.push(c);
            i += 1;
            continue;
        }
        if c.is_uppercase() {
            out.extend(cyr.chars().take(1).flat_map(char::to_uppercase));
            out.extend(cyr.chars().skip(1));
        } else {
            out.push_str(cyr);
        }
        i += latin.chars().count();
    }
    out
}

/// The text the model reads: transliterated Russian is written back in Cyrillic, anything else
/// is unchanged.
pub fn text_for_model(text: &str) -> std::borrow::Cow<'_, str> {
    if detect(text).transliterated {
        std::borrow::Cow::Owned(to_cyrillic(text))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The ticket's language: the given code wins (confidence 1), otherwise detection.
pub fn resolve(given: Option<&str>, text: &str) -> Language {
    prefer_given(given, detect(text))
}

/// The given language code (confidence 1) when there is one, else the detected language.
pub fn prefer_given(given: Option<&str>, detected: Language) -> Language {
    match given.map(str::trim).filter(|g| !g.is_empty()) {
        Some(code) => Language::new(&code.to_lowercase(), 1.0),
        None => detected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_ru_en_translit_and_other() {
        assert_eq!(detect("Не могу войти в личный кабинет").code, "ru");
        assert_eq!(
            detect("I cannot log in to my account since yesterday").code,
            "en"
        );
        let t = detect("zdravstvuite, ne mogu voiti v akkaunt, parol ne podhodit");
        assert_eq!((t.code.as_str(), t.transliterated), ("ru", true));
        assert_eq!(detect("vernite dengi").code, "ru");
        assert_eq!(
            detect("Ich kann mich seit gestern nicht mehr in mein Konto einloggen").code,
            "other"
        );
        assert_eq!(detect("12345 !!!").code, "other");
        assert!(!detect("S\nB").transliterated);
        assert_eq!(detect("не работает webhook после деплоя").code, "ru");
        for translit in [
            "montazhnik vse vremya sidel v telefone i otmahivalsya ot moih voprosov.",
            "skolko stoit vash korporativnyi tarif na 100 chelovek?",
            "bolshoe spasibo za gibkost s perenosom broni.",
            "otmenite zakaz 60021, kompaniya kupit cherez otdel zakupok.",
        ] {
            assert!(detect(translit).transliterated, "{translit}");
        }
        for english in [
            "Where is my package? Tracking hasn't updated in three days.",
            "How do I configure webhooks for order events through the REST API?",
            "Your agent was rude to me on the phone yesterday.",
            "Crypto investment opportunity, 300% returns monthly!!!",
            "Yoga classes in your area, join today",
        ] {
            assert_eq!(detect(english).code, "en", "{english}");
        }
    }

    #[test]
    fn transliteration_goes_back_to_cyrillic() {
        assert_eq!(
            to_cyrillic("ne mogu voiti v akkaunt"),
            "не могу воити в аккаунт"
        );
        assert_eq!(
            to_cyrillic("Zdravstvuyte, gde moy zakaz?"),
            "Здравствуйте, где мой заказ?"
        );
        assert_eq!(
            to_cyrillic("vy byli pravy, shchedryi zhest"),
            "вы были правы, щедрый жест"
        );
        assert_eq!(to_cyrillic("spasibo bolshoe"), "спасибо болшое");
        assert_eq!(
            text_for_model("vernite dengi za zakaz"),
            "верните денги за заказ"
        );
        assert_eq!(
            text_for_model("Refund my order please"),
            "Refund my order please"
        );
    }

    #[test]
    fn given_language_wins() {
        let l = resolve(Some("EN"), "Не могу войти");
        assert_eq!((l.code.as_str(), l.confidence), ("en", 1.0));
        assert_eq!(resolve(Some(" "), "Не могу войти").code, "ru");
    }
}
