//! End-to-end CLI: train a tiny model on a tiny data set with a tiny encoder, evaluate it,
//! classify with it, and check the error messages users see.

use crate::common::{self, Format};

/// Trains on the tiny data set in `dir` into `dir/out`.
fn train_tiny(dir: &std::path::Path, out: &str) -> (bool, String, String) {
    let p = |s: &str| dir.join(s).display().to_string();
    common::run(&[
        "train",
        "--data",
        &p("train.jsonl"),
        "--dev",
        &p("dev.jsonl"),
        "--taxonomy",
        &p("tax.toml"),
        "--base",
        &p("base"),
        "--out",
        &p(out),
        "--head",
        "mlp",
        "--epochs",
        "40",
        "--no-cache",
    ])
}

#[test]
fn train_eval_classify_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    common::tiny_encoder(&d.path().join("base"), Format::Gguf);
    common::tiny_dataset(&d.path().join("train.jsonl"), 12, 0);
    common::tiny_dataset(&d.path().join("dev.jsonl"), 3, 100);
    common::tiny_taxonomy(&d.path().join("tax.toml"));
    let (ok, out, err) = train_tiny(d.path(), "model");
    assert!(ok, "{err}");
    assert!(out.contains("macro_f1"), "{out}");
    for f in [
        "classifier.json",
        "head.safetensors",
        "taxonomy.toml",
        "eval.json",
        "eval.md",
    ] {
        assert!(d.path().join("model").join(f).exists(), "{f}");
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("model/classifier.json")).unwrap())
            .unwrap();
    assert_eq!(meta["base"]["path"], "../base");

    let (ok, out, err) = common::run(&[
        "eval",
        "--model",
        &p("model"),
        "--data",
        &p("dev.jsonl"),
        "--json",
    ]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "accuracy",
        "macro_f1",
        "domain_accuracy",
        "ece",
        "n",
        "per_language",
        "per_intent",
        "confusion",
        "calibration",
    ] {
        assert!(report.get(key).is_some(), "missing {key}");
    }
    assert_eq!(report["n"], 18);
    assert!(report["accuracy"].as_f64().unwrap() >= 0.9, "{out}");
    assert_eq!(report["calibration"]["bins"].as_array().unwrap().len(), 10);
    assert!(report["per_language"]["ru"]["macro_f1"].is_number());

    // Examples whose intent the model does not know are scored as errors and listed.
    let mut unseen = std::fs::read_to_string(d.path().join("dev.jsonl")).unwrap();
    unseen.push_str("{\"id\":\"new-1\",\"text\":\"the app crashes on start\",\"intent\":\"tech.bug\",\"lang\":\"en\"}\n");
    std::fs::write(d.path().join("unseen.jsonl"), &unseen).unwrap();
    let (ok, out, err) = common::run(&[
        "eval",
        "--model",
        &p("model"),
        "--data",
        &p("unseen.jsonl"),
        "--json",
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("1 of 19 examples carry an intent the model does not know")
            && err.contains("unseen.jsonl:19: new-1: intent \"tech.bug\""),
        "{err}"
    );
    let with_unseen: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(with_unseen["n"], 19);
    assert_eq!(with_unseen["unseen_intents"]["tech.bug"], 1);
    assert_eq!(with_unseen["per_intent"]["tech.bug"]["recall"], 0.0);
    let (before, after) = (
        report["accuracy"].as_f64().unwrap(),
        with_unseen["accuracy"].as_f64().unwrap(),
    );
    assert!(
        (after - before * 18.0 / 19.0).abs() < 1e-9,
        "{before} {after}"
    );

    // A labelled file classifies as it is: its intent comes back as `expected_intent`, and its
    // `lang` is the language hint.
    let (ok, out, err) = common::run(&[
        "classify",
        "--model",
        &p("model"),
        "--file",
        &p("unseen.jsonl"),
    ]);
    assert!(ok, "{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["id"], &last["expected_intent"], &last["language"]),
        (
            &serde_json::json!("new-1"),
            &serde_json::json!("tech.bug"),
            &serde_json::json!("en")
        )
    );

    std::fs::write(d.path().join("t.jsonl"), "{\"id\":\"a1\",\"text\":\"where is my order parcel\"}\n{\"id\":\"b2\",\"subject\":\"пароль\",\"body\":\"не могу войти\"}\n").unwrap();
    let (ok, out, err) =
        common::run(&["classify", "--model", &p("model"), "--file", &p("t.jsonl")]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["id"].as_str(), lines[0]["intent"].as_str()),
        (Some("a1"), Some("orders.status"))
    );
    assert_eq!(lines[0]["chain"][0]["intent"], "orders");
    assert_eq!(lines[0]["language"], "en");
    assert_eq!(
        (lines[1]["id"].as_str(), lines[1]["intent"].as_str()),
        (Some("b2"), Some("account.access"))
    );
    assert_eq!(lines[1]["language"], "ru");
    assert!(lines[1]["top_k"].as_array().unwrap().len() == 3 && lines[1]["margin"].is_number());

    // The portable kernels give the same answers as the run-time dispatched ones: to 1e-4
    // with exact f32 linears; where the int8 linears run, within their own bound (and the
    // same intent wherever the exact answer is not a near tie).
    let (ok, generic, err) = common::run_with_env(
        &["classify", "--model", &p("model"), "--file", &p("t.jsonl")],
        &[("INTENT_ROUTER_GENERIC_KERNELS", "1")],
    );
    assert!(ok, "{err}");
    for (fast, slow) in out.lines().zip(generic.lines()) {
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(fast).unwrap(),
            serde_json::from_str(slow).unwrap(),
        );
        let int8 = intent_router::model::qgemm::available();
        if !int8 || b["margin"].as_f64().unwrap() > 0.1 {
            assert_eq!(a["intent"], b["intent"]);
        }
        let (pa, pb) = (
            a["top_k"][0]["p"].as_f64().unwrap(),
            b["top_k"][0]["p"].as_f64().unwrap(),
        );
        let bound = if int8 { 0.05 } else { 1e-4 };
        assert!((pa - pb).abs() < bound, "{pa} vs {pb}");
    }

    // Batches of one ticket (by count, and by a token budget smaller than any ticket) give the
    // same answers; --timings reports on stderr, leaving stdout to the results.
    let (model, tickets) = (p("model"), p("t.jsonl"));
    for limit in [["--batch-size", "1"], ["--max-batch-tokens", "1"]] {
        let mut args = vec!["classify", "--model", &model, "--file", &tickets];
        args.extend(limit);
        args.push("--timings");
        let (ok, single, err) = common::run(&args);
        assert!(ok, "{err}");
        assert_eq!(single.lines().count(), out.lines().count());
        for (a, b) in out.lines().zip(single.lines()) {
            let (a, b): (serde_json::Value, serde_json::Value) = (
                serde_json::from_str(a).unwrap(),
                serde_json::from_str(b).unwrap(),
            );
            assert_eq!(a["intent"], b["intent"], "{limit:?}");
        }
        assert!(
            err.contains("timings: model loaded in ") && err.contains(" 2 tickets classified in "),
            "{err}"
        );
    }

    // --show-text prints what the encoder reads: the e-mail without its greeting, signature
    // and quoted history, Russian in Latin letters transliterated; with --rules as well.
    let mail = "Hello,\n\nwhere is my order parcel?\n\nBest regards,\nJohn\n\nOn Mon, 3 Nov 2026 at 10:12, Support <s@x.com> wrote:\n> It ships today.";
    let lines = serde_json::json!({"id": "m", "body": mail}).to_string()
        + "\n"
        + &serde_json::json!({"id": "t", "text": "ne mogu voyti v akkaunt"}).to_string();
    std::fs::write(d.path().join("mail.jsonl"), lines + "\n").unwrap();
    std::fs::write(d.path().join("rules.toml"), common::app::TINY_RULES).unwrap();
    let rules = p("rules.toml");
    for extra in [None, Some(["--rules", rules.as_str()])] {
        let mut args = vec!["classify", "--model", &model, "--file"];
        let mail = p("mail.jsonl");
        args.extend([mail.as_str(), "--show-text"]);
        args.extend(extra.iter().flatten());
        let (ok, shown, err) = common::run(&args);
        assert!(ok, "{err}");
        let texts: Vec<String> = shown
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["model_text"].to_string()
            })
            .collect();
        assert_eq!(
            texts,
            [
                "\"where is my order parcel?\"",
                "\"не могу войти в аккаунт\""
            ],
            "{extra:?}"
        );
    }

    // Training is seeded: the same run gives the same head.
    let (ok, _, err) = train_tiny(d.path(), "model2");
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(d.path().join("model/head.safetensors")).unwrap(),
        std::fs::read(d.path().join("model2/head.safetensors")).unwrap()
    );

    // A changed base encoder is detected.
    std::fs::write(
        d.path().join("base/config.json"),
        std::fs::read_to_string(d.path().join("base/config.json")).unwrap() + " ",
    )
    .unwrap();
    let (ok, _, err) = common::run(&["classify", "--model", &p("model"), "hello"]);
    assert!(
        !ok && err.contains("has content hash")
            && err.contains("but the classifier was trained on"),
        "{err}"
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    common::tiny_encoder(&d.path().join("base"), Format::Safetensors);
    common::tiny_taxonomy(&d.path().join("tax.toml"));
    std::fs::write(
        d.path().join("bad.jsonl"),
        "{\"text\":\"x\",\"intent\":\"billing.refnd\"}\n",
    )
    .unwrap();
    let (ok, _, err) = common::run(&[
        "train",
        "--data",
        &p("bad.jsonl"),
        "--taxonomy",
        &p("tax.toml"),
        "--base",
        &p("base"),
        "--out",
        &p("m"),
        "--no-cache",
    ]);
    assert!(!ok);
    assert!(
        err.contains(
            "bad.jsonl:1: intent: unknown intent \"billing.refnd\"; known: billing.refund"
        ),
        "{err}"
    );

    std::fs::write(
        d.path().join("json.jsonl"),
        "{\"text\":\"x\",\"intent\":\"a\"}\nnot json\n",
    )
    .unwrap();
    let (ok, _, err) = common::run(&[
        "train",
        "--data",
        &p("json.jsonl"),
        "--base",
        &p("base"),
        "--out",
        &p("m"),
        "--no-cache",
    ]);
    assert!(!ok && err.contains("json.jsonl:2: invalid JSON"), "{err}");

    // A label that cannot name an intent stops training before any embedding is computed.
    std::fs::write(
        d.path().join("hass.jsonl"),
        "{\"text\":\"x\",\"intent\":\"a\"}\n{\"text\":\"lights on\",\"intent\":\"HassTurnOn\"}\n",
    )
    .unwrap();
    let (ok, _, err) = common::run(&[
        "train",
        "--data",
        &p("hass.jsonl"),
        "--base",
        &p("nowhere"),
        "--out",
        &p("m"),
        "--no-cache",
    ]);
    assert!(
        !ok && err.contains(
            "hass.jsonl:2: intent: invalid intent id \"HassTurnOn\": use lowercase letters"
        ),
        "{err}"
    );

    std::fs::write(d.path().join("empty.jsonl"), "\n").unwrap();
    let (ok, _, err) = common::run(&[
        "train",
        "--data",
        &p("empty.jsonl"),
        "--base",
        &p("base"),
        "--out",
        &p("m"),
        "--no-cache",
    ]);
    assert!(
        !ok && err.contains("empty.jsonl: the data set is empty"),
        "{err}"
    );

    std::fs::write(
        d.path().join("dup.toml"),
        "[[intent]]\nid = \"a\"\n\n[[intent]]\nid = \"a\"\n",
    )
    .unwrap();
    common::tiny_dataset(&d.path().join("ok.jsonl"), 2, 0);
    let (ok, _, err) = common::run(&[
        "train",
        "--data",
        &p("ok.jsonl"),
        "--taxonomy",
        &p("dup.toml"),
        "--base",
        &p("base"),
        "--out",
        &p("m"),
        "--no-cache",
    ]);
    assert!(
        !ok && err.contains("dup.toml:5: duplicate intent `a` (first defined on line 2)"),
        "{err}"
    );

    let (ok, _, err) = common::run(&["classify", "--model", &p("base"), "hello"]);
    assert!(!ok && err.contains("missing classifier.json"), "{err}");

    let (ok, _, err) = common::run(&["classify", "--model", &p("base"), "  "]);
    assert!(!ok && err.contains("the ticket text is empty"), "{err}");
    std::fs::write(
        d.path().join("empty-ticket.jsonl"),
        "{\"id\": 7, \"body\": \" \"}\n",
    )
    .unwrap();
    let (ok, _, err) = common::run(&[
        "classify",
        "--model",
        &p("base"),
        "--file",
        &p("empty-ticket.jsonl"),
    ]);
    assert!(
        !ok && err.contains("empty-ticket.jsonl:1: missing `body`"),
        "{err}"
    );
    std::fs::write(
        d.path().join("num.jsonl"),
        "{\"text\": \"hi\", \"intent\": 5}\n",
    )
    .unwrap();
    let (ok, _, err) = common::run(&["classify", "--model", &p("base"), "--file", &p("num.jsonl")]);
    assert!(
        !ok && err.contains("num.jsonl:1: invalid ticket JSON: `intent` must be a string, not 5"),
        "{err}"
    );

    let (ok, _, err) = common::run(&["classify", "--model", &p("nowhere"), "hello"]);
    assert!(!ok && err.contains("missing classifier.json"), "{err}");

    // A malformed file: the parser's message is said once, after the file and position.
    std::fs::create_dir_all(d.path().join("broken")).unwrap();
    std::fs::write(d.path().join("broken/classifier.json"), "{bad").unwrap();
    let (ok, _, err) = common::run(&["classify", "--model", &p("broken"), "hello"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("classifier.json: key must be a string at line 1 column 2"),
        "{err}"
    );
    assert_eq!(err.matches("key must be a string").count(), 1, "{err}");
}

/// Examples labelled `out_of_scope` train a detector beside the head: `classify` answers
/// `out_of_scope` for such tickets, `eval` reports its recall and in-scope rejection, and a
/// model directory whose detector and metadata disagree is refused with a clear message.
#[test]
fn out_of_scope_examples_train_a_detector() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    common::tiny_encoder(&d.path().join("base"), Format::Safetensors);
    common::tiny_taxonomy(&d.path().join("tax.toml"));
    common::tiny_dataset(&d.path().join("in.jsonl"), 12, 0);
    let topics = [
        "weather forecast sunny tomorrow",
        "резюме на вакансию бухгалтера",
        "capital city of australia quiz",
        "бабушка приедет в субботу вечером",
        "poem about the autumn forest",
    ];
    let oos = |n: usize, offset: usize| -> String {
        (0..n)
            .map(|i| {
                let t = topics[i % topics.len()];
                let text = format!("{t} {}", ["", "lol", "ok", "!!", "ну"][(i / 5 + offset) % 5]);
                serde_json::json!({"id": format!("oos-{}", i + offset), "text": text, "intent": "out_of_scope"})
                    .to_string()
                    + "\n"
            })
            .collect()
    };
    let train = std::fs::read_to_string(d.path().join("in.jsonl")).unwrap() + &oos(40, 0);
    std::fs::write(d.path().join("train.jsonl"), train).unwrap();
    let train = |data: &str, out: &str| {
        let (data, out, tax, base) = (p(data), p(out), p("tax.toml"), p("base"));
        common::run(&[
            "train",
            "--data",
            &data,
            "--taxonomy",
            &tax,
            "--base",
            &base,
            "--out",
            &out,
            "--no-cache",
        ])
    };
    let (ok, _, err) = train("train.jsonl", "m");
    assert!(ok, "{err}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("m/classifier.json")).unwrap())
            .unwrap();
    let threshold = meta["out_of_scope"]["threshold"].as_f64().unwrap();
    assert!(threshold > 0.0 && threshold <= 1.0, "{meta}");
    assert_eq!(
        meta["out_of_scope"]["rejection"].as_f64().unwrap() as f32,
        0.01
    );
    // A tenth of them (by id) went to the dev split without --dev, and are scored there.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("m/eval.json")).unwrap())
            .unwrap();
    let trained = meta["training"]["out_of_scope"]["examples"]
        .as_u64()
        .unwrap();
    let dev = report["out_of_scope"]["all"]["out_of_scope"]
        .as_u64()
        .unwrap();
    assert!(dev > 0 && trained + dev == 40, "{trained} + {dev}");
    assert!(d.path().join("m/scope.safetensors").exists());

    let classify = |text: &str| -> serde_json::Value {
        let (ok, out, err) = common::run(&["classify", "--model", &p("m"), text]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let away = classify("weather forecast sunny tomorrow");
    assert_eq!(away["intent"], "out_of_scope", "{away}");
    assert_eq!(away["chain"], serde_json::json!([]), "{away}");
    assert!(
        away["out_of_scope"].as_f64().unwrap() >= threshold,
        "{away}"
    );
    assert!(
        away["top_k"].as_array().is_some_and(|k| !k.is_empty()),
        "{away}"
    );
    let refund = classify("refund my money back please");
    assert_eq!(refund["intent"], "billing.refund", "{refund}");
    assert!(
        refund["out_of_scope"].as_f64().unwrap() < threshold,
        "{refund}"
    );

    // eval scores the detector on the examples labelled out_of_scope, apart from the intents.
    let test = std::fs::read_to_string(d.path().join("in.jsonl")).unwrap() + &oos(10, 3);
    std::fs::write(d.path().join("test.jsonl"), test).unwrap();
    let (ok, out, err) = common::run(&["eval", "--model", &p("m"), "--data", &p("test.jsonl")]);
    assert!(ok, "{err}");
    assert!(out.starts_with("n = 72\n"), "{out}");
    assert!(
        out.contains("the figures above leave out the 10 examples labelled out_of_scope"),
        "{out}"
    );
    assert!(out.contains("| all | 10 | 1.000 | 72 |"), "{out}");
    assert!(!err.contains("does not know"), "{err}");

    // Export carries the detector and its threshold.
    let (ok, _, err) = common::run(&["export-hf", "--model", &p("m"), "--out", &p("hf")]);
    assert!(ok, "{err}");
    assert!(d.path().join("hf/scope.safetensors").exists());
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("hf/head.json")).unwrap()).unwrap();
    assert_eq!(
        info["out_of_scope"]["threshold"].as_f64(),
        Some(threshold),
        "{info}"
    );

    // Too few examples for a detector.
    let few = std::fs::read_to_string(d.path().join("in.jsonl")).unwrap() + &oos(5, 0);
    std::fs::write(d.path().join("few.jsonl"), few).unwrap();
    let (ok, _, err) = train("few.jsonl", "m2");
    // (Without --dev a tenth of them went to the dev split.)
    assert!(
        !ok && err.contains("few.jsonl: 3 training examples are labelled out_of_scope; the out-of-scope detector needs at least 20"),
        "{err}"
    );

    // The detector's weights and the metadata must agree.
    let refused = |expected: &str| {
        let (ok, _, err) = common::run(&["classify", "--model", &p("m"), "hello"]);
        assert!(!ok && err.contains(expected), "{err}");
    };
    let (weights, aside) = (d.path().join("m/scope.safetensors"), d.path().join("aside"));
    std::fs::rename(&weights, &aside).unwrap();
    refused("missing scope.safetensors (the out-of-scope detector)");
    std::fs::rename(&aside, &weights).unwrap();
    let mut meta = meta;
    meta["out_of_scope"]["threshold"] = serde_json::json!(1.5);
    std::fs::write(d.path().join("m/classifier.json"), meta.to_string()).unwrap();
    refused("classifier.json: out_of_scope.threshold: must be in (0, 1], not 1.5");
    meta.as_object_mut().unwrap().remove("out_of_scope");
    std::fs::write(d.path().join("m/classifier.json"), meta.to_string()).unwrap();
    refused("an out-of-scope detector, but classifier.json names none");
}

/// A calibration set of tickets with two requests (`--multi-intent`) sets the further-request
/// detector's threshold: `classify` lists both requests, `eval` reports recall, exact sets and
/// false further requests, export carries the detector, and bad files are refused clearly.
#[test]
fn further_requests_are_detected_and_reported() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    common::tiny_encoder(&d.path().join("base"), Format::Safetensors);
    common::tiny_taxonomy(&d.path().join("tax.toml"));
    common::tiny_dataset(&d.path().join("train.jsonl"), 12, 0);
    let multi = |also: &str| -> String {
        [
            ("refund my money back please right now. where is my order parcel today", "billing.refund", "orders.status"),
            ("где мой заказ уже неделю жду. вернуть деньги пожалуйста за прошлый заказ", "orders.status", "billing.refund"),
            ("i forgot my password login code again. where is my order parcel today", "account.access", "orders.status"),
        ]
        .iter()
        .enumerate()
        .map(|(i, (text, intent, second))| {
            let second = if i == 0 { also } else { second };
            serde_json::json!({"id": format!("m-{i}"), "text": text, "intent": intent, "also": [second]})
                .to_string()
                + "\n"
        })
        .collect()
    };
    std::fs::write(d.path().join("multi.jsonl"), multi("orders.status")).unwrap();
    let train = |out: &str, extra: &[&str]| {
        let (data, out, tax, base) = (p("train.jsonl"), p(out), p("tax.toml"), p("base"));
        let mut args = vec![
            "train",
            "--data",
            &data,
            "--taxonomy",
            &tax,
            "--base",
            &base,
            "--out",
            &out,
            "--no-cache",
        ];
        args.extend_from_slice(extra);
        common::run(&args)
    };
    let calibration = p("multi.jsonl");
    let (ok, _, err) = train("m", &["--multi-intent", &calibration]);
    assert!(ok, "{err}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("m/classifier.json")).unwrap())
            .unwrap();
    let threshold = meta["also"]["threshold"].as_f64().unwrap();
    assert!(threshold > 0.0 && threshold <= 1.0, "{meta}");
    assert_eq!(meta["also"]["false_rate"].as_f64().unwrap() as f32, 0.02);
    assert_eq!(
        meta["training"]["also"]["calibration"]["tickets"], 3,
        "{meta}"
    );

    let (ok, out, err) = common::run(&[
        "classify",
        "--model",
        &p("m"),
        "refund my money back please right now. where is my order parcel today",
    ]);
    assert!(ok, "{err}");
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut named: Vec<&str> = c["intents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["intent"].as_str().unwrap())
        .collect();
    named.sort();
    assert_eq!(named, ["billing.refund", "orders.status"], "{c}");

    // eval: the further requests' figures, beside the intents'.
    let (ok, out, err) = common::run(&["eval", "--model", &p("m"), "--data", &calibration]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("Further requests (threshold {threshold:.2})")),
        "{out}"
    );
    assert!(out.contains("| all | 3 |"), "{out}");

    // Export carries the detector and its settings.
    let (ok, _, err) = common::run(&["export-hf", "--model", &p("m"), "--out", &p("hf")]);
    assert!(ok, "{err}");
    assert!(d.path().join("hf/also.safetensors").exists());
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("hf/head.json")).unwrap()).unwrap();
    assert_eq!(
        info["also"]["threshold"].as_f64(),
        Some(threshold),
        "{info}"
    );

    // Outputs other than the head's labels, a missing detector file, an unknown further
    // request, no n-gram view: each said clearly.
    let mut wrong = meta.clone();
    wrong["also"]["labels"] =
        serde_json::json!(["orders.status", "billing.refund", "account.access"]);
    std::fs::write(d.path().join("m/classifier.json"), wrong.to_string()).unwrap();
    let (ok, _, err) = common::run(&["classify", "--model", &p("m"), "hello"]);
    assert!(
        !ok && err.contains(
            "also.labels: the further-request detector's outputs must be the head's labels"
        ),
        "{err}"
    );
    std::fs::write(d.path().join("m/classifier.json"), meta.to_string()).unwrap();
    std::fs::remove_file(d.path().join("m/also.safetensors")).unwrap();
    let (ok, _, err) = common::run(&["classify", "--model", &p("m"), "hello"]);
    assert!(
        !ok && err.contains("missing also.safetensors (the further-request detector)"),
        "{err}"
    );
    std::fs::write(d.path().join("multi.jsonl"), multi("orders.lost")).unwrap();
    let (ok, _, err) = train("m2", &["--multi-intent", &calibration]);
    assert!(
        !ok && err.contains("multi.jsonl:1: also: unknown intent \"orders.lost\""),
        "{err}"
    );
    std::fs::write(d.path().join("multi.jsonl"), multi("orders.status")).unwrap();
    let (ok, _, err) = train("m3", &["--also-false-rate", "1.5"]);
    assert!(
        !ok && err.contains(
            "the further-request share (--also-false-rate) must be between 0 and 1, not 1.5"
        ),
        "{err}"
    );
    let (ok, _, err) = train("m3", &["--multi-intent", &calibration, "--no-ngrams"]);
    assert!(
        !ok && err.contains("the further-request detector reads the n-gram view"),
        "{err}"
    );
}

/// A CPU-only build asked for a GPU says so and how to get one, in one line.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_on_a_cpu_build_is_a_clear_error() {
    let (ok, _, err) = common::run(&["classify", "--device", "cuda", "hello"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("device `cuda:0`: this binary was built without CUDA support")
            && err.contains("--features cuda"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn fine_tune_settings_that_cannot_train_are_refused_before_work() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    common::tiny_encoder(&d.path().join("base"), Format::Gguf);
    common::tiny_dataset(&d.path().join("train.jsonl"), 4, 0);
    for (flag, value, says) in [
        ("--fine-tune-warmup", "1.5", "--fine-tune-warmup is 1.5"),
        (
            "--fine-tune-layer-decay",
            "0",
            "--fine-tune-layer-decay is 0",
        ),
        ("--fine-tune-balance", "2", "--fine-tune-balance is 2"),
        ("--fine-tune-epochs", "0", "--fine-tune-epochs is 0"),
    ] {
        let (ok, _, err) = common::run(&[
            "train",
            "--data",
            &p("train.jsonl"),
            "--base",
            &p("base"),
            "--out",
            &p("ft"),
            "--no-cache",
            "--fine-tune",
            flag,
            value,
        ]);
        assert!(!ok && err.contains(says), "{flag}: {err}");
        assert!(!d.path().join("ft").exists());
    }
    let (ok, _, err) = common::run(&[
        "train",
        "--data",
        &p("train.jsonl"),
        "--base",
        &p("base"),
        "--out",
        &p("ft"),
        "--fine-tune",
        "--fine-tune-blocks",
        "q5_1",
    ]);
    assert!(!ok && err.contains("q8_0") && err.contains("q4_0"), "{err}");
}

#[test]
fn fine_tune_of_a_safetensors_encoder_rewrites_its_file() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    let base = common::tiny_encoder(&d.path().join("base"), Format::Safetensors);
    common::tiny_dataset(&d.path().join("train.jsonl"), 8, 0);
    let (ok, _, err) = common::run(&[
        "train",
        "--data",
        &p("train.jsonl"),
        "--base",
        &p("base"),
        "--out",
        &p("ft"),
        "--no-ngrams",
        "--fine-tune",
        "--fine-tune-epochs",
        "1",
        "--fine-tune-layers",
        "1",
        "--no-cache",
    ]);
    assert!(ok, "{err}");
    assert!(!d.path().join("ft/encoder/overrides.safetensors").exists());
    let tuned = candle_core::safetensors::load(
        d.path().join("ft/encoder/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(tuned.len(), base.len());
    let frozen = "encoder.layer.0.output.dense.weight";
    assert_eq!(common::max_abs_diff(&tuned[frozen], &base[frozen]), 0.0);
    let moved = "encoder.layer.1.output.dense.weight";
    assert!(common::max_abs_diff(&tuned[moved], &base[moved]) > 0.0);
    let (ok, _, err) = common::run(&["classify", "--model", &p("ft"), "refund my money"]);
    assert!(ok, "{err}");
}

#[test]
fn fine_tune_scores_each_epoch_as_the_written_model_scores() {
    // A high rate moves the layer's LayerNorm far: an epoch's dev score must read the current
    // values, as the written model does (exact kernels, f32 weights, the co-trained head).
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    common::tiny_encoder(&d.path().join("base"), Format::Safetensors);
    common::tiny_dataset(&d.path().join("train.jsonl"), 8, 0);
    common::tiny_dataset(&d.path().join("dev.jsonl"), 6, 40);
    let (ok, _, err) = common::run(&[
        "train",
        "--data",
        &p("train.jsonl"),
        "--dev",
        &p("dev.jsonl"),
        "--base",
        &p("base"),
        "--out",
        &p("ft"),
        "--no-ngrams",
        "--no-cache",
        "--fine-tune",
        "--fine-tune-layers",
        "1",
        "--fine-tune-epochs",
        "2",
        "--fine-tune-lr",
        "0.05",
        "--fine-tune-warmup",
        "0",
    ]);
    assert!(ok, "{err}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("ft/classifier.json")).unwrap())
            .unwrap();
    let epochs = &meta["training"]["fine_tune_epochs"];
    let kept = epochs["kept"].as_u64().unwrap() as usize;
    let kept_accuracy = epochs["dev"][kept - 1]["accuracy"].as_f64().unwrap();
    let (ok, out, err) = common::run_with_env(
        &[
            "eval",
            "--model",
            &p("ft"),
            "--data",
            &p("dev.jsonl"),
            "--json",
        ],
        &[("INTENT_ROUTER_GENERIC_KERNELS", "1")],
    );
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - kept_accuracy).abs() < 1e-9,
        "{accuracy} vs {epochs}"
    );
}

#[test]
fn fine_tune_writes_its_own_encoder_and_classifies() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    let base = common::tiny_encoder(&d.path().join("base"), Format::Gguf);
    common::tiny_dataset(&d.path().join("train.jsonl"), 8, 0);
    let args: Vec<String> = [
        "train",
        "--data",
        &p("train.jsonl"),
        "--base",
        &p("base"),
        "--out",
        &p("ft"),
        "--epochs",
        "30",
        "--fine-tune",
        "--fine-tune-epochs",
        "2",
        "--fine-tune-layers",
        "1",
        "--no-cache",
    ]
    .map(String::from)
    .to_vec();
    let (ok, _, err) = common::run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    // The tuned tensors replace the base's in the model's own GGUF: no f32 copy beside it.
    assert!(!d.path().join("ft/encoder/overrides.safetensors").exists());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("ft/classifier.json")).unwrap())
            .unwrap();
    assert_eq!(meta["base"]["path"], "encoder");
    assert_eq!(meta["training"]["fine_tune"]["layers"], 1);
    assert_eq!(meta["training"]["fine_tune"]["blocks"], "q8_0");
    // Dev scores per epoch (the dev split is carved from the data here), and the epoch kept.
    let epochs = &meta["training"]["fine_tune_epochs"];
    assert!(!epochs["dev"].as_array().unwrap().is_empty(), "{epochs}");
    assert!(
        (1..=2).contains(&epochs["kept"].as_u64().unwrap()),
        "{epochs}"
    );
    assert!(err.contains("fine-tuning epoch 1: dev accuracy"), "{err}");
    // The linear head reads its n-gram view, fitted again on the tuned encoder.
    assert!(d.path().join("ft/ngrams.json").exists());
    let (tuned, dtypes) = common::read_gguf(&d.path().join("ft/encoder/model.gguf"));
    let (stored, base_dtypes) = common::read_gguf(&d.path().join("base/model.gguf"));
    // Tuned matrices in 8-bit blocks, tuned vectors in f32, the frozen layer as the base's.
    assert_eq!(dtypes["encoder.layer.1.output.dense.weight"], "Q8_0");
    assert_eq!(dtypes["encoder.layer.1.output.LayerNorm.bias"], "F32");
    for name in [
        "encoder.layer.0.output.dense.weight",
        "embeddings.word_embeddings.weight",
    ] {
        assert_eq!(dtypes[name], base_dtypes[name], "{name}");
        assert_eq!(
            common::max_abs_diff(&tuned[name], &stored[name]),
            0.0,
            "{name}"
        );
    }
    assert_eq!(dtypes.len(), base_dtypes.len());
    // The fine-tuned layers moved away from the base ones.
    let name = "encoder.layer.1.output.LayerNorm.bias";
    assert!(common::max_abs_diff(&tuned[name], &base[name]) > 0.0);
    // The same data and seed give the same encoder and head, byte for byte, on one thread too.
    let mut again = args.clone();
    let out2 = p("ft2");
    *again.iter_mut().find(|a| **a == p("ft")).unwrap() = out2.clone();
    let (ok, _, err) = common::run_with_env(
        &again.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("RAYON_NUM_THREADS", "1")],
    );
    assert!(ok, "{err}");
    for file in ["encoder/model.gguf", "head.safetensors"] {
        let read = |dir: &str| std::fs::read(d.path().join(dir).join(file)).unwrap();
        assert!(read("ft") == read("ft2"), "{file} differs");
    }
    let (ok, out, err) =
        common::run(&["classify", "--model", &p("ft"), "where is my order parcel"]);
    assert!(ok, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(line["top_k"][0]["p"].as_f64().unwrap() > 0.0);
}

#[test]
fn rules_check_reports_every_error_with_its_line() {
    let taxonomy = concat!(env!("CARGO_MANIFEST_DIR"), "/training-data/taxonomy.toml");
    let (ok, out, err) = common::run(&["rules-check", "--taxonomy", taxonomy]);
    assert!(ok, "{err}");
    assert!(out.contains("(built-in default rules): 16 rules"), "{out}");
    assert!(!err.contains("warning"), "{err}");
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[rules]]\nid = \"x\"\nwhen.intent = \"billing.refnd\"\nthen = { priority = \"hgih\" }\n",
    )
    .unwrap();
    let (ok, _, err) = common::run(&[
        "rules-check",
        "--taxonomy",
        taxonomy,
        "--rules",
        &bad.display().to_string(),
    ]);
    assert!(!ok);
    let b = bad.display();
    assert!(
        err.contains(&format!(
            "{b}:3: rules[0].when.intent: unknown intent \"billing.refnd\"; known: billing.refund,"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{b}:4: rules[0].then.priority: unknown priority \"hgih\""
        )),
        "{err}"
    );
}

/// The default linear head reads the n-gram view beside the embedding: trained reproducibly,
/// checked at load, exported with the encoder, and served with the same answers as offline.
#[tokio::test(flavor = "multi_thread")]
async fn the_linear_head_reads_an_ngram_view() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).display().to_string();
    common::tiny_encoder(&d.path().join("base"), Format::Safetensors);
    common::tiny_dataset(&d.path().join("train.jsonl"), 12, 0);
    common::tiny_dataset(&d.path().join("dev.jsonl"), 3, 100);
    common::tiny_taxonomy(&d.path().join("tax.toml"));
    let train = |out: &str, more: &[&str]| {
        let (train, dev, tax, base, out) = (
            p("train.jsonl"),
            p("dev.jsonl"),
            p("tax.toml"),
            p("base"),
            p(out),
        );
        let mut args = vec![
            "train",
            "--data",
            &train,
            "--dev",
            &dev,
            "--taxonomy",
            &tax,
            "--base",
            &base,
            "--out",
            &out,
            "--no-cache",
        ];
        args.extend(more);
        let (ok, out, err) = common::run(&args);
        assert!(ok, "{err}");
        out
    };
    let table = train("a", &[]);
    train("b", &[]);
    for f in ["head.safetensors", "ngrams.json", "classifier.json"] {
        let (a, b) = (
            std::fs::read(d.path().join("a").join(f)).unwrap(),
            std::fs::read(d.path().join("b").join(f)).unwrap(),
        );
        if f == "classifier.json" {
            // The training record carries the date; everything else is equal.
            let strip = |bytes: &[u8]| {
                let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                v["training"]["date"] = serde_json::Value::Null;
                v
            };
            assert_eq!(strip(&a), strip(&b));
        } else {
            assert!(a == b, "{f} differs between two runs");
        }
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("a/classifier.json")).unwrap())
            .unwrap();
    assert_eq!(meta["ngrams"]["c"], 10.0);
    assert!(meta["training"]["ngram_features"].as_u64().unwrap() > 10);
    // The random tiny encoder tells little; the words tell the intents apart.
    let accuracy: f64 = table
        .lines()
        .find_map(|l| l.strip_prefix("accuracy = "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(accuracy >= 0.99, "{table}");

    train("plain", &["--no-ngrams"]);
    assert!(!d.path().join("plain/ngrams.json").exists());
    for (flags, message) in [
        (
            &["--ngram-c", "0"][..],
            "--ngram-c: must be a positive number, not 0",
        ),
        (
            &["--ngram-min-df", "1000"][..],
            "no word or character n-gram occurs in 1000 training texts",
        ),
        (
            &["--head", "mlp", "--ngram-c", "5"][..],
            "--ngram-min-df, --ngram-c and --embedding-weight go with the linear head; --head mlp reads the embedding alone",
        ),
    ] {
        let (data, base, out) = (p("train.jsonl"), p("base"), p("m"));
        let mut args = vec!["train", "--data", &data, "--base", &base, "--out", &out];
        args.push("--no-cache");
        args.extend(flags);
        let (ok, _, err) = common::run(&args);
        assert!(!ok && err.contains(message), "{err}");
    }

    // Served answers equal offline ones.
    let tickets = [
        "where is my order parcel thanks",
        "не могу войти пароль",
        "refund my money back please",
    ];
    let input: String = tickets
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}\n", serde_json::json!({"id": i.to_string(), "text": t})))
        .collect();
    std::fs::write(d.path().join("t.jsonl"), input).unwrap();
    let (ok, offline, err) = common::run_with_env(
        &["classify", "--model", &p("a"), "--file", &p("t.jsonl")],
        &[("INTENT_ROUTER_RECHECK_MARGIN", "0")],
    );
    assert!(ok, "{err}");
    let served_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        served_dir.path().join("rules.toml"),
        crate::common::app::TINY_RULES,
    )
    .unwrap();
    let app = crate::common::app::App::in_dir(
        served_dir,
        &d.path().join("a"),
        "\n[batching]\nrecheck_margin = 0\n",
    )
    .await;
    for (line, text) in offline.lines().zip(tickets) {
        let offline: serde_json::Value = serde_json::from_str(line).unwrap();
        let served = app
            .post(
                "/v1/classify",
                crate::server::ROUTE_TOKEN,
                &serde_json::json!({ "body": text }),
            )
            .await;
        assert_eq!(served.status, 200, "{}", served.body);
        assert_eq!(served.body["intent"], offline["intent"], "{text}");
        let (a, b) = (
            served.body["top_k"][0]["p"].as_f64().unwrap(),
            offline["top_k"][0]["p"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-5, "{text}: {a} vs {b}");
    }

    // Export carries the view; a directory without it, or whose metadata does not name it,
    // is a clear error.
    let (ok, _, err) = common::run(&["export-hf", "--model", &p("a"), "--out", &p("hf")]);
    assert!(ok, "{err}");
    assert!(d.path().join("hf/ngrams.json").exists());
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("hf/head.json")).unwrap()).unwrap();
    assert_eq!(info["ngrams"]["c"], 10.0, "{info}");
    std::fs::remove_file(d.path().join("b/ngrams.json")).unwrap();
    let (ok, _, err) = common::run(&["classify", "--model", &p("b"), "hello"]);
    assert!(
        !ok && err.contains("missing ngrams.json (the head's n-gram view)"),
        "{err}"
    );
    let mut meta = meta;
    meta.as_object_mut().unwrap().remove("ngrams");
    std::fs::write(d.path().join("a/classifier.json"), meta.to_string()).unwrap();
    let (ok, _, err) = common::run(&["classify", "--model", &p("a"), "hello"]);
    assert!(
        !ok && err.contains("the head has n-gram weights but classifier.json names no n-gram view"),
        "{err}"
    );
}
