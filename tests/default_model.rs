//! The shipped default model (`models/helpdesk` on `models/base/e5-small-ruen`): real tickets get
//! the right intents, batching changes nothing, and the binary finds the model by itself.

use intent_router::engine::{Engine, EngineOptions};
use intent_router::model::classifier::Classifier;
use intent_router::model::encoder::EncoderOptions;
use intent_router::ticket::Ticket;

use crate::common;

fn engine() -> Engine {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/helpdesk");
    Engine::new(
        Classifier::load(&dir, &EncoderOptions::default()).unwrap(),
        EngineOptions::default(),
    )
}

const CASES: &[(&str, &str)] = &[
    (
        "Не могу войти в личный кабинет, код из СМС не приходит уже час",
        "account.access",
    ),
    (
        "I can't log in, the password reset link says it has expired",
        "account.access",
    ),
    (
        "Удалите мой аккаунт и все персональные данные, пожалуйста",
        "account.delete",
    ),
    (
        "Please close my account and erase all my personal data",
        "account.delete",
    ),
    (
        "Здравствуйте, с карты списали оплату дважды за один и тот же заказ",
        "billing.charge_dispute",
    ),
    (
        "You charged my card twice for the same subscription this month",
        "billing.charge_dispute",
    ),
    (
        "Пришлите, пожалуйста, счёт-фактуру и акт за сентябрь",
        "billing.invoice",
    ),
    (
        "Please send an invoice with our company VAT number",
        "billing.invoice",
    ),
    ("Где мой заказ? Трек-номер не обновляется", "orders.status"),
    (
        "Where is my order? The tracking page shows nothing yet",
        "orders.status",
    ),
    (
        "Отмените заказ, пожалуйста, он ещё не отправлен",
        "orders.cancel",
    ),
    (
        "Сайт лежит у всех, никто в компании не может зайти, ошибка 503",
        "tech.outage",
    ),
    (
        "How do I set up webhooks with your REST API?",
        "tech.integration",
    ),
    (
        "Огромное спасибо оператору Марии, всё решили за пять минут!",
        "feedback.praise",
    ),
    (
        "Сколько стоит тариф для команды из 30 человек? Можно демо?",
        "sales.pricing",
    ),
];

#[test]
fn clear_tickets_get_the_right_intent() {
    let engine = engine();
    let tickets: Vec<Ticket> = CASES.iter().map(|(t, _)| Ticket::from_text(t)).collect();
    let got = engine.classify(&tickets).unwrap();
    let wrong: Vec<String> = CASES
        .iter()
        .zip(&got)
        .filter(|((_, want), c)| c.resolution.top_k[0].intent != *want)
        .map(|((t, want), c)| format!("{t:?}: want {want}, got {:?}", c.resolution.top_k))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn batched_classifications_equal_single_ones() {
    let engine = engine();
    let tickets: Vec<Ticket> = CASES
        .iter()
        .take(8)
        .map(|(t, _)| Ticket::from_text(t))
        .collect();
    let batched = engine.classify(&tickets).unwrap();
    for (t, b) in tickets.iter().zip(&batched) {
        let single = engine.classify(std::slice::from_ref(t)).unwrap().remove(0);
        assert_eq!(single.resolution.intent, b.resolution.intent);
        for (x, y) in single.resolution.top_k.iter().zip(&b.resolution.top_k) {
            assert_eq!(x.intent, y.intent);
            assert!((x.p - y.p).abs() < 1e-4);
        }
    }
}

#[test]
fn binary_finds_the_default_model_by_itself() {
    let (ok, out, err) = common::run(&[
        "classify",
        "Верните деньги за возвращённый товар, прошло две недели",
    ]);
    assert!(ok, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["chain"][0]["intent"], "billing", "{out}");
    assert_eq!(line["language"], "ru");
}

#[test]
fn classify_with_rules_prints_each_decision() {
    let tickets = "{\"id\":\"1\",\"body\":\"Your whole platform is down for everyone in our company since 9am!\"}\n\
                   {\"id\":\"2\",\"body\":\"You charged my card twice for the same order\",\"customer\":{\"tier\":\"vip\"}}\n\
                   {\"id\":\"3\",\"body\":\"Hi Marta, I will be late for dinner tonight, keep the soup warm for me\",\"customer\":{\"tier\":\"vip\"}}\n";
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("t.jsonl");
    std::fs::write(&file, tickets).unwrap();
    let (ok, out, err) = common::run(&[
        "classify",
        "--rules",
        "default",
        "--file",
        &file.display().to_string(),
    ]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["team"], "oncall", "{out}");
    assert_eq!(lines[0]["priority"], "urgent");
    assert_eq!(lines[0]["ticket_id"], "1");
    assert_eq!(lines[0]["intent"]["intent"], "tech.outage");
    assert_eq!(lines[1]["team"], "billing");
    assert_eq!(
        lines[1]["priority"], "urgent",
        "charge dispute is high, VIP raises it"
    );
    assert_eq!(
        lines[1]["rule_ids"],
        serde_json::json!(["billing", "charge-dispute", "vip"])
    );
    assert_eq!(lines[1]["trace"].as_array().unwrap().len(), 16);
    assert_eq!(lines[1]["model_version"].as_str().unwrap().len(), 12);
    // No request to this business: triage, whoever sent it.
    assert_eq!(lines[2]["intent"]["intent"], "out_of_scope", "{out}");
    assert_eq!(lines[2]["rule_ids"], serde_json::json!(["out-of-scope"]));
    assert_eq!(lines[2]["team"], "triage");
    assert_eq!(lines[2]["tags"], serde_json::json!(["out-of-scope"]));
}

/// Messages that are no request to this business leave the taxonomy; real requests, in any
/// language, stay in it.
#[test]
fn the_detector_tells_requests_from_messages_that_are_none() {
    let engine = engine();
    let away = [
        "Hi Marta, I will be late for dinner tonight, keep the soup warm for me",
        "Здравствуйте! Направляю своё резюме на вакансию водителя погрузчика, опыт 6 лет",
        "what is the tallest mountain in africa",
        "ывапрол ывапрол ячсмит",
    ];
    let here = [
        "Ich habe vor zwei Wochen eine Rückerstattung beantragt, wann bekomme ich mein Geld?",
        "Мне дважды списали деньги за один заказ, верните, пожалуйста",
        "Where is my parcel? It was supposed to arrive yesterday",
        "I can't log in, the code never arrives",
    ];
    let tickets: Vec<Ticket> = away
        .iter()
        .chain(&here)
        .map(|t| Ticket::from_text(t))
        .collect();
    let got = engine.classify(&tickets).unwrap();
    for (c, text) in got.iter().zip(away.iter().chain(&here)) {
        let p = c
            .resolution
            .out_of_scope
            .expect("the shipped model has a detector");
        let expect_away = away.contains(text);
        assert_eq!(
            c.resolution.is_out_of_scope(),
            expect_away,
            "{text}: {p} {:?}",
            c.resolution.top_k
        );
    }
}

/// Tickets with two requests list both (the head's first); single requests list one.
#[test]
fn further_requests_are_found_beside_the_main_intent() {
    let engine = engine();
    let two = [
        (
            "My parcel arrived with the screen cracked and the box crushed. Also, I was charged \
             twice for this order, please fix the second charge.",
            ["billing.charge_dispute", "orders.delivery_issue"],
        ),
        (
            "Посылка пришла с разбитым экраном, коробка смята. И ещё: пришлите, пожалуйста, \
             счёт для бухгалтерии за мартовский заказ.",
            ["billing.invoice", "orders.delivery_issue"],
        ),
    ];
    let one = [
        "I can't log in to my account since yesterday, the reset code never arrives. I tried \
         three times already and checked the spam folder too.",
        "Where is my parcel with the blue lamp? It was supposed to arrive here yesterday \
         afternoon.",
    ];
    let tickets: Vec<Ticket> = two
        .iter()
        .map(|(t, _)| *t)
        .chain(one)
        .map(Ticket::from_text)
        .collect();
    let got = engine.classify(&tickets).unwrap();
    for (c, (text, want)) in got.iter().zip(&two) {
        let r = &c.resolution;
        let mut named: Vec<&str> = r.intents.iter().map(|s| s.intent.as_str()).collect();
        assert_eq!(named[0], r.intent, "{text}");
        named.sort();
        assert_eq!(named, want, "{text}: {:?}", r.intents);
        assert_eq!(r.also().len(), 1);
    }
    for (c, text) in got[two.len()..].iter().zip(one) {
        assert_eq!(
            c.resolution.intents.len(),
            1,
            "{text}: {:?}",
            c.resolution.intents
        );
        assert!(c.resolution.also().is_empty());
    }
}

#[test]
fn batching_worker_scores_like_single_requests() {
    use intent_router::batch::{Batcher, BatcherConfig};
    use intent_router::model::bert::Pass;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/helpdesk");
    let classifier = Classifier::load(&dir, &EncoderOptions::default()).unwrap();
    let text = classifier.encoder.text().clone();
    let batcher = Batcher::start(BatcherConfig::default(), move |items, pass| {
        let emb = classifier
            .encoder
            .embed_batch(items, pass)
            .map_err(|e| e.to_string())?;
        emb.to_vec2::<f32>().map_err(|e| e.to_string())
    });
    let tokens: Vec<_> = CASES
        .iter()
        .take(8)
        .map(|(t, _)| text.encode(t).unwrap())
        .collect();
    let together: Vec<_> = tokens
        .iter()
        .map(|t| batcher.submit(t.clone(), Pass::Infer).unwrap())
        .collect();
    let together: Vec<Vec<f32>> = together
        .into_iter()
        .map(|rx| rx.blocking_recv().unwrap().unwrap().values)
        .collect();
    for (t, batched) in tokens.iter().zip(&together) {
        let alone = batcher
            .submit(t.clone(), Pass::Infer)
            .unwrap()
            .blocking_recv()
            .unwrap()
            .unwrap()
            .values;
        let worst = alone
            .iter()
            .zip(batched)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "batched vs alone: {worst}");
    }
}

#[test]
fn near_ties_rechecked_are_scored_as_the_exact_model_scores_them() {
    use intent_router::batch::BatchLimits;
    use intent_router::model::bert::LinearMode;
    if !intent_router::model::qgemm::available() {
        eprintln!("skipped: no AVX-512 VNNI here, so the linears are exact and nothing re-checks");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/helpdesk");
    let load = |linear, recheck_margin| {
        let opts = EncoderOptions {
            linear,
            recheck_margin,
            ..Default::default()
        };
        Classifier::load(&dir, &opts).unwrap()
    };
    let texts: Vec<String> = CASES.iter().map(|(t, _)| t.to_string()).collect();
    let probs = |c: &Classifier| {
        c.classify_texts(&texts, BatchLimits::default())
            .unwrap()
            .probs
    };
    let exact = probs(&load(LinearMode::Dense, 1.0));
    let worst = |got: &[Vec<f32>]| {
        got.iter()
            .zip(&exact)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0f32, f32::max)
    };
    // A margin of 1 takes every ticket for a near tie; 0 none.
    let (all, none) = (load(LinearMode::Int8, 1.0), load(LinearMode::Int8, 0.0));
    let (refined, int8) = (worst(&probs(&all)), worst(&probs(&none)));
    assert_eq!((all.rechecked(), none.rechecked()), (texts.len() as u64, 0));
    eprintln!("largest probability difference to f32: int8 {int8}, re-checked {refined}");
    assert!(
        refined < 1e-4 && refined < int8 / 10.0,
        "int8 {int8}, re-checked {refined}"
    );
    // The out-of-scope detector reads the re-checked embedding too.
    let scope = |c: &Classifier| {
        let s = c.classify_texts(&texts, BatchLimits::default()).unwrap();
        s.out_of_scope.expect("the shipped model has a detector")
    };
    let exact_scope = scope(&load(LinearMode::Dense, 1.0));
    let worst_scope = scope(&all)
        .iter()
        .zip(&exact_scope)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst_scope < 1e-4, "out-of-scope difference {worst_scope}");
    // The default margin re-checks only the tickets whose decision is close.
    let default = load(LinearMode::Int8, EncoderOptions::default().recheck_margin);
    probs(&default);
    assert!(
        default.rechecked() < texts.len() as u64 / 2,
        "{}",
        default.rechecked()
    );
}
