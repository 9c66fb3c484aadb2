//! What an incident's tickets say: the words that set them apart from the intent's usual
//! tickets, in Russian and in English. Pure: the caller gives the texts (as kept, so redacted
//! and within retention).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// Words shown per language.
const TOP: usize = 8;

/// A word that sets an incident's tickets apart.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Word {
    /// The word, lowercased.
    pub word: String,
    /// Share of the incident's tickets (with a kept text) that use it.
    pub share: f64,
    /// Share of the intent's usual tickets that use it.
    pub usual_share: f64,
}

/// The words that set an incident's tickets apart, by language.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TopWords {
    /// Russian words (Cyrillic).
    pub ru: Vec<Word>,
    /// English words (Latin letters).
    pub en: Vec<Word>,
}

/// A text and the language it was routed in (a number counts in that language).
pub struct Text<'a> {
    /// Language code.
    pub language: &'a str,
    /// Subject and body.
    pub text: &'a str,
}

/// The words used by at least a tenth of the incident's tickets (and two of them) that its
/// tickets use most more often than the intent's usual ones: by the log ratio of their shares
/// (each smoothed by half a ticket), the first [`TOP`] per language.
pub fn top_words(incident: &[Text], usual: &[Text]) -> TopWords {
    let inc = document_frequency(incident);
    let base = document_frequency(usual);
    let (n, m) = (incident.len() as f64, usual.len() as f64);
    let min = 2.max((incident.len() as f64 * 0.1).ceil() as usize);
    let mut scored: Vec<(f64, &(String, Lang), usize)> = inc
        .iter()
        .filter(|(_, df)| **df >= min)
        .map(|(w, df)| {
            let u = base.get(w).copied().unwrap_or(0) as f64;
            let score = ((*df as f64 + 0.5) / (n + 1.0)).ln() - ((u + 0.5) / (m + 1.0)).ln();
            (score, w, *df)
        })
        .filter(|(score, _, _)| *score > 0.0)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.2.cmp(&a.2)).then(a.1.cmp(b.1)));
    let mut top = TopWords::default();
    for (_, (word, lang), df) in scored {
        let list = match lang {
            Lang::Ru => &mut top.ru,
            Lang::En => &mut top.en,
        };
        if list.len() < TOP {
            list.push(Word {
                word: word.clone(),
                share: df as f64 / n,
                usual_share: base.get(&(word.clone(), *lang)).copied().unwrap_or(0) as f64
                    / m.max(1.0),
            });
        }
    }
    top
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Lang {
    Ru,
    En,
}

/// In how many texts each (word, language) occurs.
fn document_frequency(texts: &[Text]) -> HashMap<(String, Lang), usize> {
    let mut df = HashMap::new();
    for t in texts {
        let own = if t.language == "ru" {
            Lang::Ru
        } else {
            Lang::En
        };
        let words: HashSet<(String, Lang)> = words(t.text)
            .filter_map(|w| {
                let lang = if w.chars().any(is_cyrillic) {
                    Lang::Ru
                } else if w.chars().any(|c| c.is_ascii_alphabetic()) {
                    Lang::En
                } else {
                    own
                };
                let stop = match lang {
                    Lang::Ru => STOP_RU.contains(&w.as_str()),
                    Lang::En => STOP_EN.contains(&w.as_str()),
                };
                (!stop).then_some((w, lang))
            })
            .collect();
        for w in words {
            *df.entry(w).or_default() += 1;
        }
    }
    df
}

fn is_cyrillic(c: char) -> bool {
    matches!(c, '\u{0400}'..='\u{04FF}')
}

/// The words of a text, lowercased: letters and digits, three characters or more, with the
/// redaction placeholders (`[EMAIL]`, `[CARD]`…) left out.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '[' || c == ']'))
        .filter(|w| !(w.starts_with('[') && w.ends_with(']')))
        .flat_map(|w| w.split(['[', ']']))
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
}

const STOP_EN: &[&str] = &[
    "the", "and", "for", "you", "your", "are", "was", "were", "with", "this", "that", "have",
    "has", "had", "not", "but", "can", "could", "would", "should", "will", "from", "they", "them",
    "there", "their", "what", "when", "where", "which", "who", "how", "why", "all", "any", "our",
    "out", "get", "got", "just", "also", "been", "being", "does", "did", "doing", "into", "about",
    "after", "before", "again", "please", "thanks", "thank", "hello", "dear", "regards", "hi",
    "its", "it's", "than", "then", "too", "very", "one", "some", "more", "now", "still", "yet",
    "since", "while", "because", "here", "want", "need", "know",
];

const STOP_RU: &[&str] = &[
    "что",
    "как",
    "это",
    "так",
    "вот",
    "был",
    "была",
    "было",
    "были",
    "быть",
    "для",
    "мне",
    "меня",
    "мой",
    "моя",
    "моё",
    "мои",
    "моего",
    "моей",
    "вас",
    "вам",
    "ваш",
    "ваша",
    "ваше",
    "ваши",
    "вашего",
    "вашей",
    "они",
    "она",
    "оно",
    "его",
    "ему",
    "нам",
    "нас",
    "наш",
    "уже",
    "ещё",
    "еще",
    "или",
    "если",
    "чтобы",
    "когда",
    "где",
    "при",
    "без",
    "под",
    "над",
    "про",
    "после",
    "перед",
    "через",
    "тоже",
    "также",
    "только",
    "очень",
    "можно",
    "нужно",
    "надо",
    "пожалуйста",
    "спасибо",
    "здравствуйте",
    "добрый",
    "день",
    "все",
    "всё",
    "всех",
    "сейчас",
    "снова",
    "опять",
    "там",
    "тут",
    "здесь",
    "почему",
    "который",
    "которые",
    "которая",
    "чем",
    "не",
    "нет",
    "да",
    "уважением",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(items: &'a [(&'a str, &'a str)]) -> Vec<Text<'a>> {
        items
            .iter()
            .map(|(language, text)| Text { language, text })
            .collect()
    }

    #[test]
    fn the_words_of_the_wave_stand_out_from_the_usual_ones_in_each_language() {
        let wave = [
            (
                "en",
                "Payment failed at checkout with error 502 from the gateway",
            ),
            (
                "en",
                "My card payment fails, gateway error 502, contact me at [EMAIL]",
            ),
            ("en", "Checkout broken: gateway says 502 when I pay"),
            ("ru", "Оплата не проходит, шлюз отвечает ошибкой 502"),
            ("ru", "Ошибка 502 при оплате картой, шлюз недоступен"),
        ];
        let usual = [
            ("en", "My payment was charged twice, please refund"),
            ("en", "Card payment declined by my bank"),
            ("en", "Where can I change the payment card?"),
            ("ru", "Оплата прошла дважды, верните деньги"),
            ("ru", "Как поменять карту для оплаты?"),
        ];
        let top = top_words(&texts(&wave), &texts(&usual));
        let en: Vec<&str> = top.en.iter().map(|w| w.word.as_str()).collect();
        let ru: Vec<&str> = top.ru.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(&en[..4], ["502", "gateway", "checkout", "error"], "{top:?}");
        assert!(ru.contains(&"шлюз") && ru.contains(&"502"), "{top:?}");
        assert!(!en.contains(&"payment"), "used as often usually: {en:?}");
        assert!(!en.contains(&"email") && !en.contains(&"the"), "{en:?}");
        let gateway = &top.en[1];
        assert_eq!((gateway.share, gateway.usual_share), (0.6, 0.0));
        // No texts: no words.
        assert_eq!(top_words(&[], &texts(&usual)), TopWords::default());
    }

    #[test]
    fn words_are_lowercased_and_placeholders_dropped() {
        let w: Vec<String> = words("Call [PHONE] or mail [EMAIL]: ERROR-502, ok?").collect();
        assert_eq!(w, ["call", "mail", "error", "502"]);
    }
}
