//! Personal data in ticket text: e-mail addresses, phone numbers, payment card numbers (checked
//! with Luhn), Russian passport numbers, INN and SNILS (checked with their check digits) are
//! replaced by placeholders such as `[EMAIL]` before text is stored. Pure string work.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::{Captures, Regex};

/// What one redaction removed, by kind.
pub type Removed = BTreeMap<&'static str, usize>;

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// Luhn check of a card number's digits.
pub fn luhn(d: &[u32]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    !d.is_empty() && sum.is_multiple_of(10)
}

/// Check digits of a Russian INN (10 digits for organisations, 12 for people).
pub fn inn_valid(d: &[u32]) -> bool {
    let check = |w: &[u32], n: usize| -> bool {
        (w.iter().zip(d).map(|(a, b)| a * b).sum::<u32>() % 11 % 10) == d[n]
    };
    match d.len() {
        10 => check(&[2, 4, 10, 3, 5, 9, 4, 6, 8], 9),
        12 => {
            check(&[7, 2, 4, 10, 3, 5, 9, 4, 6, 8], 10)
                && check(&[3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8], 11)
        }
        _ => false,
    }
}

/// Check number of a Russian SNILS (11 digits).
pub fn snils_valid(d: &[u32]) -> bool {
    if d.len() != 11 {
        return false;
    }
    let sum: u32 = d[..9]
        .iter()
        .enumerate()
        .map(|(i, x)| x * (9 - i as u32))
        .sum();
    let control = match sum {
        s if s < 100 => s,
        100 | 101 => 0,
        s => match s % 101 {
            100 => 0,
            r => r,
        },
    };
    control == d[9] * 10 + d[10]
}

struct Patterns {
    email: Regex,
    card: Regex,
    snils: Regex,
    passport: Regex,
    inn: Regex,
    phone: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        email: Regex::new(r"(?i)\b[a-z0-9._%+\-]+@[a-z0-9.\-]+\.[a-z]{2,}\b").expect("email pattern"),
        card: Regex::new(r"\b(?:\d[ \-]?){12,18}\d\b").expect("card pattern"),
        snils: Regex::new(r"\b\d{3}[ \-]?\d{3}[ \-]?\d{3}[ \-]?\d{2}\b").expect("snils pattern"),
        passport: Regex::new(r"(?i)(паспорт\w*|passport)(\D{0,20})(\d{2}\s?\d{2}\s?(?:№\s?)?\d{6})\b")
            .expect("passport pattern"),
        inn: Regex::new(r"\b\d{10}(?:\d{2})?\b").expect("inn pattern"),
        phone: Regex::new(r"(?:\+\d{1,3}[\s\-]?)?(?:\(\d{2,4}\)|\d{2,4})[\s\-]?\d{2,4}[\s\-]?\d{2,4}(?:[\s\-]?\d{2,4})?\b")
            .expect("phone pattern"),
    })
}

/// Replaces personal data in `text` by placeholders; returns the text and what was removed.
pub fn redact(text: &str) -> (String, Removed) {
    let p = patterns();
    let mut removed = Removed::new();
    let mut count = |kind: &'static str| *removed.entry(kind).or_default() += 1;
    let out = p.email.replace_all(text, |_: &Captures| {
        count("email");
        "[EMAIL]".to_string()
    });
    let out = p.card.replace_all(&out, |c: &Captures| {
        let d = digits(&c[0]);
        if (13..=19).contains(&d.len()) && luhn(&d) {
            count("card");
            "[CARD]".to_string()
        } else {
            c[0].to_string()
        }
    });
    let out = p.snils.replace_all(&out, |c: &Captures| {
        if snils_valid(&digits(&c[0])) {
            count("snils");
            "[SNILS]".to_string()
        } else {
            c[0].to_string()
        }
    });
    let out = p.passport.replace_all(&out, |c: &Captures| {
        count("passport");
        format!("{}{}[PASSPORT]", &c[1], &c[2])
    });
    let out = p.inn.replace_all(&out, |c: &Captures| {
        if inn_valid(&digits(&c[0])) {
            count("inn");
            "[INN]".to_string()
        } else {
            c[0].to_string()
        }
    });
    let out = p.phone.replace_all(&out, |c: &Captures| {
        let n = digits(&c[0]).len();
        if (10..=15).contains(&n) {
            count("phone");
            "[PHONE]".to_string()
        } else {
            c[0].to_string()
        }
    });
    (out.into_owned(), removed)
}

/// Replaces personal data in every string of a JSON value (and in numbers that are personal
/// data, such as a card or phone number sent as a number: they become the placeholder string);
/// object keys stay, since rules name them.
pub fn redact_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(redact(s).0),
        Value::Number(n) => {
            let (out, removed) = redact(&n.to_string());
            if removed.is_empty() {
                value.clone()
            } else {
                Value::String(out)
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(redact_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_json(v)))
                .collect(),
        ),
        Value::Null | Value::Bool(_) => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_are_redacted_to_the_leaves_and_keys_stay() {
        let v = serde_json::json!({
            "email": "ivan@example.com",
            "contacts": [{"phone": "+7 916 123-45-67"}, 79161234567_u64, 42],
            "card": 4111111111111111_u64,
            "vip": true,
            "note": null
        });
        assert_eq!(
            redact_json(&v),
            serde_json::json!({
                "email": "[EMAIL]",
                "contacts": [{"phone": "[PHONE]"}, "[PHONE]", 42],
                "card": "[CARD]",
                "vip": true,
                "note": null
            })
        );
    }

    #[test]
    fn check_digits() {
        assert!(luhn(&digits("4111 1111 1111 1111")));
        assert!(!luhn(&digits("4111 1111 1111 1112")));
        assert!(inn_valid(&digits("7707083893")), "Sberbank's INN");
        assert!(inn_valid(&digits("500100732259")));
        assert!(!inn_valid(&digits("7707083894")));
        assert!(snils_valid(&digits("112-233-445 95")));
        assert!(!snils_valid(&digits("112-233-445 96")));
    }

    #[test]
    fn personal_data_is_replaced_and_counted() {
        let text = "Пишите на ivan.petrov@mail.ru или звоните +7 (916) 123-45-67. \
                    Card 4111 1111 1111 1111, order 4111 1111 1111 1112. ИНН 7707083893, \
                    СНИЛС 112-233-445 95, паспорт серии 45 06 № 123456. Order #12345 for 3 items.";
        let (out, removed) = redact(text);
        assert_eq!(
            out,
            "Пишите на [EMAIL] или звоните [PHONE]. \
                    Card [CARD], order 4111 1111 1111 1112. ИНН [INN], \
                    СНИЛС [SNILS], паспорт серии [PASSPORT]. Order #12345 for 3 items."
        );
        assert_eq!(
            removed,
            [
                ("card", 1),
                ("email", 1),
                ("inn", 1),
                ("passport", 1),
                ("phone", 1),
                ("snils", 1)
            ]
            .into_iter()
            .collect()
        );
        let (same, none) = redact("Где мой заказ 5512? Прошло 3 дня.");
        assert_eq!(
            (same.as_str(), none.len()),
            ("Где мой заказ 5512? Прошло 3 дня.", 0)
        );
    }
}
