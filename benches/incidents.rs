//! Incident simulator: replays weeks of synthetic ticket traffic through the real classifier
//! (the committed `models/helpdesk`) and the incident detector, with injected incidents, and
//! reports for each sensitivity: incident recall, detection delay, false alarms per week, and
//! linking precision and recall.
//!
//! Background: 200 tickets a day on average (standard profile), with a daily cycle (quiet
//! nights, busy office hours), quieter weekends and a Monday-morning peak that lifts every intent
//! (it must not alarm), texts drawn from `training-data/dev*.jsonl`. Injected incidents come from
//! `benches/data/incidents.jsonl` (paraphrase sets written for this bench, one systemic failure
//! each) in four shapes: a burst of 10 tickets within an hour, a larger wave (25 in 3 hours), a
//! slow rise (20 over a day, thickening) and a spike in one language only (12 in 2 hours).
//!
//! `cargo bench --bench incidents` (INCIDENT_WEEKS, default 4; INCIDENT_SEEDS, default 5;
//! INCIDENT_SENSITIVITIES, default "0.25,0.5,1,2,4" expected false alarms per week;
//! INCIDENT_SIMILARITIES=1 first prints how close each scenario's tickets come to each other and
//! to the usual tickets of their intent; INCIDENT_TRACE=1 prints, for the injected tickets, the
//! most significant test of a second detector that links nothing, the alarms that opened
//! nothing, each incident's opening alarm, and, for each missed incident, which incidents hold
//! some of its tickets). After each row it says where the wrong links went (to detections or
//! to false alarms; when an incident opened, grew, or while routed) and why tickets of
//! detected incidents were not linked (classified under another intent, or not likely enough).
//!
//! Background intents vary from day to day (each intent's weight by about 30%).
//!
//! `INCIDENT_SPEED=200,2000,10000` instead times the detector alone at those daily volumes
//! (INCIDENT_WEEKS of background, replayed as a rebuild replays the log).
//!
//! Scoring: an incident opened is a detection of the injected incident that holds more than half
//! of the tickets it opened with, otherwise a false alarm. The delay runs from the injected
//! incident's 5th ticket (negative: found before it). Linking precision: of the tickets linked to
//! any incident (false alarms included), the share linked to a detection of their own injected
//! incident; linking recall: of the tickets of detected incidents, the share linked to them.
//! Each text is classified and embedded once; the results are cached in
//! `target/incident-bench/` between runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use intent_router::batch::BatchLimits;
use intent_router::engine::{Engine, EngineOptions};
use intent_router::incident::detect::chain_of;
use intent_router::incident::{
    Change, Detector, DetectorSettings, Embedding, Observation, Tracker,
};
use intent_router::model::classifier::Classifier;
use intent_router::model::encoder::EncoderOptions;
use intent_router::ticket::Ticket;

/// Background tickets per day on average.
const PER_DAY: f64 = 200.0;

/// One text as the model read it.
#[derive(Clone, Serialize, Deserialize)]
struct Read {
    chain: Vec<String>,
    language: String,
    embedding: Embedding,
}

/// A text of the pool: what it is and how the model read it.
struct Text {
    read: Read,
    /// The scenario it was written for (`None`: background).
    scenario: Option<usize>,
    lang: String,
}

struct Pool {
    texts: Vec<Text>,
    background: Vec<usize>,
    /// Background texts by their labelled intent.
    by_intent: Vec<Vec<usize>>,
    /// Per scenario: its name and its texts.
    scenarios: Vec<(String, Vec<usize>)>,
    leaves: Vec<String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ticket_of(v: &serde_json::Value) -> Ticket {
    Ticket {
        subject: v["subject"].as_str().map(str::to_string),
        body: v
            .get("text")
            .or(v.get("body"))
            .and_then(|b| b.as_str())
            .unwrap_or_default()
            .to_string(),
        ..Ticket::default()
    }
}

/// Classifies and embeds every ticket once (cached by model and texts).
fn read_all(tickets: &[Ticket]) -> Vec<Read> {
    let model = root().join("models/helpdesk");
    let mut h = Sha256::new();
    for f in [
        "classifier.json",
        "head.safetensors",
        "ngrams.json",
        "scope.safetensors",
    ] {
        h.update(std::fs::read(model.join(f)).unwrap_or_default());
    }
    for t in tickets {
        h.update(t.clean_text().as_bytes());
        h.update([0]);
    }
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let dir: PathBuf = root().join("target/incident-bench");
    let file = dir.join(format!("{}.json", &key[..16]));
    if let Ok(bytes) = std::fs::read(&file) {
        if let Ok(reads) = serde_json::from_slice(&bytes) {
            return reads;
        }
    }
    eprintln!(
        "classifying {} texts once (cached in {})",
        tickets.len(),
        dir.display()
    );
    let classifier = Classifier::load(&model, &EncoderOptions::default()).expect("models/helpdesk");
    let engine = Engine::new(classifier, EngineOptions::default());
    let mut out = Vec::with_capacity(tickets.len());
    for chunk in tickets.chunks(64) {
        let prepared: Vec<_> = chunk.iter().map(|t| engine.prepare(t)).collect();
        let texts: Vec<String> = prepared.iter().map(|p| p.text.clone()).collect();
        let c = engine.classifier();
        let emb = c.encoder.embed(&texts, BatchLimits::default()).unwrap();
        let features = c.ngram_features(&texts);
        let probs = c.probabilities_with(&emb, features.as_deref()).unwrap();
        let scope = c.out_of_scope(&emb, features.as_deref()).unwrap();
        let rows: Vec<Vec<f32>> = emb.to_vec2().unwrap();
        let items = chunk.iter().zip(prepared).zip(probs.iter().zip(rows));
        for (i, ((t, p), (probs, row))) in items.enumerate() {
            let oos = scope.as_ref().map(|s| s[i]);
            let cl = engine.finish(t, p, probs, oos, &c.thresholds);
            out.push(Read {
                chain: chain_of(&cl.resolution.intent),
                language: cl.language,
                embedding: Embedding::new(&row),
            });
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&file, serde_json::to_vec(&out).unwrap()).unwrap();
    out
}

fn load_pool() -> Pool {
    let mut tickets = Vec::new();
    let mut meta: Vec<(Option<usize>, String)> = Vec::new();
    let mut by_label: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for f in [
        "dev.jsonl",
        "dev-independent-a.jsonl",
        "dev-independent-b.jsonl",
    ] {
        for v in read_jsonl(&root().join("training-data").join(f)) {
            by_label
                .entry(v["intent"].as_str().unwrap().to_string())
                .or_default()
                .push(tickets.len());
            tickets.push(ticket_of(&v));
            meta.push((None, v["lang"].as_str().unwrap().to_string()));
        }
    }

    let mut names: Vec<String> = Vec::new();
    for v in read_jsonl(&root().join("benches/data/incidents.jsonl")) {
        let name = v["scenario"].as_str().unwrap().to_string();
        let i = names.iter().position(|n| *n == name).unwrap_or_else(|| {
            names.push(name);
            names.len() - 1
        });
        tickets.push(ticket_of(&v));
        meta.push((Some(i), v["lang"].as_str().unwrap().to_string()));
    }
    let reads = read_all(&tickets);
    let texts: Vec<Text> = reads
        .into_iter()
        .zip(meta)
        .map(|(read, (scenario, lang))| Text {
            read,
            scenario,
            lang,
        })
        .collect();
    let background = (0..texts.len())
        .filter(|&i| texts[i].scenario.is_none())
        .collect();
    let scenarios = names
        .into_iter()
        .enumerate()
        .map(|(s, n)| {
            let ids = (0..texts.len())
                .filter(|&i| texts[i].scenario == Some(s))
                .collect();
            (n, ids)
        })
        .collect();
    let taxonomy = std::fs::read_to_string(root().join("models/helpdesk/taxonomy.toml")).unwrap();
    let ids: Vec<String> = taxonomy
        .lines()
        .filter_map(|l| l.strip_prefix("id = \""))
        .map(|l| l.trim_end_matches('"').to_string())
        .collect();
    let leaves = ids
        .iter()
        .filter(|i| !ids.iter().any(|j| j.starts_with(&format!("{i}."))))
        .cloned()
        .collect();
    Pool {
        texts,
        background,
        by_intent: by_label.into_values().collect(),
        scenarios,
        leaves,
    }
}

/// Relative traffic of an hour (daily and weekly cycle, Monday-morning peak).
fn hourly_weight(at: DateTime<Utc>) -> f64 {
    let h = at.hour();
    let day = match h {
        0..=6 => 0.15,
        7..=8 => 0.8,
        9..=17 => 1.8,
        18..=21 => 0.9,
        _ => 0.35,
    };
    let weekday = at.weekday().num_days_from_monday();
    let week = if weekday >= 5 { 0.45 } else { 1.0 };
    let monday_peak = if weekday == 0 && (9..=11).contains(&h) {
        2.5
    } else {
        1.0
    };
    day * week * monday_peak
}

/// A standard normal number (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// An index drawn in proportion to `weights`.
fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let mut x = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

fn poisson(rng: &mut StdRng, mean: f64) -> usize {
    let limit = (-mean).exp();
    let (mut k, mut p) = (0, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// One ticket of the simulated stream.
struct Arrival {
    at: DateTime<Utc>,
    text: usize,
    /// The injected incident it belongs to.
    injected: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Burst10,
    Wave25,
    SlowRise,
    OneLanguage,
}

const SHAPES: [Shape; 4] = [
    Shape::Burst10,
    Shape::Wave25,
    Shape::SlowRise,
    Shape::OneLanguage,
];

struct Injection {
    shape: Shape,
    scenario: usize,
    times: Vec<DateTime<Utc>>,
}

fn start() -> DateTime<Utc> {
    // A Monday.
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
}

fn background(rng: &mut StdRng, pool: &Pool, weeks: i64, per_day: f64) -> Vec<Arrival> {
    let hours = weeks * 7 * 24;
    let mean_weight: f64 = (0..168)
        .map(|h| hourly_weight(start() + Duration::hours(h)))
        .sum::<f64>()
        / 168.0;
    let mut out = Vec::new();
    let mut mix: Vec<f64> = Vec::new();
    for h in 0..hours {
        if h % 24 == 0 {
            // Each day its own intent mix: every intent's weight varies by about 30%.
            mix = pool
                .by_intent
                .iter()
                .map(|_| (0.3 * normal(rng)).exp())
                .collect();
        }
        let at = start() + Duration::hours(h);
        let n = poisson(rng, per_day / 24.0 * hourly_weight(at) / mean_weight);
        for _ in 0..n {
            let texts = &pool.by_intent[pick(rng, &mix)];
            out.push(Arrival {
                at: at + Duration::seconds(rng.random_range(0..3600)),
                text: texts[rng.random_range(0..texts.len())],
                injected: None,
            });
        }
    }
    out
}

fn inject(rng: &mut StdRng, pool: &Pool, weeks: i64, seed: u64) -> (Vec<Injection>, Vec<Arrival>) {
    let mut injections = Vec::new();
    let mut arrivals = Vec::new();
    let mut day = 1.5 + rng.random::<f64>();
    let mut k = seed as usize;
    while day < (weeks * 7) as f64 - 1.5 {
        let shape = SHAPES[k % SHAPES.len()];
        let scenario = (k * 5 + seed as usize) % pool.scenarios.len();
        k += 1;
        let begin = start() + Duration::seconds((day * 86400.0) as i64);
        let (n, span_h) = match shape {
            Shape::Burst10 => (10, 1.0),
            Shape::Wave25 => (25, 3.0),
            Shape::SlowRise => (20, 24.0),
            Shape::OneLanguage => (12, 2.0),
        };
        let mut texts: Vec<usize> = pool.scenarios[scenario].1.clone();
        if shape == Shape::OneLanguage {
            // The scenario's language with the most texts.
            let ru = texts
                .iter()
                .filter(|&&t| pool.texts[t].lang == "ru")
                .count();
            let lang = if 2 * ru >= texts.len() { "ru" } else { "en" };
            texts.retain(|&t| pool.texts[t].lang == lang);
        }
        let n = n.min(texts.len());
        let mut times: Vec<DateTime<Utc>> = (0..n)
            .map(|_| {
                let u: f64 = rng.random();
                let f = if shape == Shape::SlowRise {
                    u.sqrt()
                } else {
                    u
                };
                begin + Duration::seconds((f * span_h * 3600.0) as i64)
            })
            .collect();
        times.sort();
        let id = injections.len();
        for &at in &times {
            let t = texts.remove(rng.random_range(0..texts.len()));
            arrivals.push(Arrival {
                at,
                text: t,
                injected: Some(id),
            });
        }
        injections.push(Injection {
            shape,
            scenario,
            times,
        });
        day += 2.0 + rng.random::<f64>() * 1.5;
    }
    (injections, arrivals)
}

/// An incident the simulated service opened.
struct Incident {
    opened: DateTime<Utc>,
    /// Tickets linked when it opened (arrival indices).
    first: Vec<usize>,
    /// Every linked arrival.
    linked: Vec<usize>,
    /// How each was linked: 0 when it opened, 1 grew, 2 routed.
    phase: Vec<u8>,
    /// The intent it takes.
    intent: String,
    /// The alarm that opened it, in words.
    alarm: String,
}

/// The `i`th arrival as the detector sees it (not linked yet).
fn observation(pool: &Pool, i: usize, a: &Arrival) -> Observation {
    let read = &pool.texts[a.text].read;
    Observation {
        id: i.to_string(),
        at: a.at,
        chain: read.chain.clone(),
        language: read.language.clone(),
        embedding: read.embedding.clone(),
        model_version: "m1".into(),
        incident: None,
    }
}

/// Incidents stop linking after this long without a new ticket.
const QUIET_HOURS: i64 = 48;

/// Replays a stream through the detector and the tracker; returns the incidents opened.
fn replay(pool: &Pool, arrivals: &[Arrival], settings: &DetectorSettings) -> Vec<Incident> {
    let mut detector = Detector::new(settings.clone(), &pool.leaves);
    let mut tracker = Tracker::new(
        QUIET_HOURS,
        env("INCIDENT_LINK_PROBABILITY", 0.5),
        settings.min_tickets as usize,
    );
    let mut incidents: Vec<Incident> = Vec::new();
    let debug = std::env::var_os("INCIDENT_TRACE").is_some();
    let mut probe = Detector::new(
        DetectorSettings {
            false_alarms_per_week: 1e12,
            ..settings.clone()
        },
        &pool.leaves,
    );
    for (i, a) in arrivals.iter().enumerate() {
        let read = &pool.texts[a.text].read;
        let mut obs = observation(pool, i, a);
        if debug {
            let probed = probe.observe(obs.clone());
            if let (Some(k), Some(p)) = (a.injected, probed) {
                eprintln!(
                    "  injected {k} ({}) at {}: best p {:.2e} (threshold {:.2e}) on {:?} in {} min: {} of {} (expected {:.1})",
                    read.chain.last().map_or("unknown", String::as_str),
                    a.at, p.p_value, p.threshold * 1e-12 * settings.false_alarms_per_week, p.stream, p.window_minutes, p.count, p.volume, p.expected
                );
            }
        }
        // Incidents quiet for two days leave the tracker (the service marks them so).
        let _quiet = tracker.refresh(&detector, a.at);
        // Linking on the request path.
        let link = tracker.link(&read.chain, &read.language, &read.embedding, a.at);
        if let Some(l) = &link {
            let k: usize = l.incident.parse().unwrap();
            incidents[k].linked.push(i);
            incidents[k].phase.push(2);
        }
        obs.incident = link.map(|l| l.incident);
        let Some(alarm) = detector.observe(obs) else {
            continue;
        };
        let next = incidents.len().to_string();
        let (incident, linked) = match tracker.on_alarm(&alarm, &detector, || next) {
            Change::Opened { incident, linked } => {
                let ids: Vec<usize> = linked.iter().map(|(m, _)| m.parse().unwrap()).collect();
                incidents.push(Incident {
                    opened: a.at,
                    first: ids.clone(),
                    phase: vec![0; ids.len()],
                    linked: ids,
                    intent: tracker
                        .get(&incident)
                        .map(|i| i.intent.clone())
                        .unwrap_or_default(),
                    alarm: format!(
                        "{:?} {} min: {} of {} (expected {:.1}, p {:.1e}); spreads {:?}",
                        alarm.stream,
                        alarm.window_minutes,
                        alarm.count,
                        alarm.volume,
                        alarm.expected,
                        alarm.p_value,
                        tracker.get(&incident).map(|i| (i.members, i.usual))
                    ),
                });
                (incident, linked)
            }
            Change::Grew { incident, linked } => {
                let k: usize = incident.parse().unwrap();
                incidents[k]
                    .linked
                    .extend(linked.iter().map(|(m, _)| m.parse::<usize>().unwrap()));
                incidents[k].phase.extend(linked.iter().map(|_| 1));
                (incident, linked)
            }
            Change::Ignored => {
                if debug {
                    let ours = alarm
                        .members
                        .iter()
                        .filter(|m| arrivals[m.parse::<usize>().unwrap()].injected.is_some())
                        .count();
                    eprintln!(
                        "ignored at {}: {:?} {} min: {} of {} (expected {:.1}), {ours} injected",
                        alarm.at,
                        alarm.stream,
                        alarm.window_minutes,
                        alarm.count,
                        alarm.volume,
                        alarm.expected
                    );
                }
                continue;
            }
        };
        let ids: Vec<String> = linked.into_iter().map(|(m, _)| m).collect();
        detector.link(&ids, &incident);
    }
    incidents
}

#[derive(Default)]
struct Score {
    injected: usize,
    detected: usize,
    delays_min: Vec<f64>,
    bursts: usize,
    bursts_in_30: usize,
    false_week1: usize,
    false_later: usize,
    weeks_later: f64,
    linked_right: usize,
    linked_all: usize,
    /// Wrong links: (to a detection, background), (to a detection, another injection),
    /// (to a false alarm, background), (to a false alarm, injected).
    wrong: [usize; 4],
    /// Wrong links when an incident opened, grew, and while routed.
    wrong_by_phase: [usize; 3],
    /// Missed tickets of detected incidents: (another intent than the incident's),
    /// (its intent).
    missed: [usize; 2],
    detected_tickets: usize,
    detected_tickets_linked: usize,
    by_shape: HashMap<String, (usize, usize)>,
}

fn score(
    pool: &Pool,
    score: &mut Score,
    arrivals: &[Arrival],
    injections: &[Injection],
    incidents: &[Incident],
    weeks: i64,
) {
    let majority = |members: &[usize]| -> Option<usize> {
        let mut votes: HashMap<usize, usize> = HashMap::new();
        for &m in members {
            if let Some(k) = arrivals[m].injected {
                *votes.entry(k).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, v)| *v)
            .filter(|(_, v)| 2 * v > members.len())
            .map(|(k, _)| k)
    };
    let mut first_detection: HashMap<usize, DateTime<Utc>> = HashMap::new();
    let mut matched: HashMap<usize, Vec<usize>> = HashMap::new();
    for (n, inc) in incidents.iter().enumerate() {
        match majority(&inc.first) {
            Some(k) => {
                let e = first_detection.entry(k).or_insert(inc.opened);
                *e = (*e).min(inc.opened);
                matched.entry(k).or_default().push(n);
            }
            None => {
                if inc.opened < start() + Duration::days(7) {
                    score.false_week1 += 1;
                } else if inc.opened >= start() + Duration::days(14) {
                    score.false_later += 1;
                }
            }
        }
    }
    score.weeks_later += (weeks - 2).max(0) as f64;
    for (n, inc) in incidents.iter().enumerate() {
        let own = majority(&inc.first);
        for (&m, &phase) in inc.linked.iter().zip(&inc.phase) {
            let slot = match (own, arrivals[m].injected) {
                (Some(k), Some(j)) if k == j => continue,
                (Some(_), None) => 0,
                (Some(_), Some(_)) => 1,
                (None, None) => 2,
                (None, Some(_)) => 3,
            };
            score.wrong[slot] += 1;
            score.wrong_by_phase[usize::from(phase)] += 1;
        }
        if own.is_some() && std::env::var_os("INCIDENT_TRACE").is_some() {
            eprintln!(
                "detection {n} {}: {} first; {}",
                inc.intent,
                inc.first.len(),
                inc.alarm
            );
        }
        if own.is_none() && std::env::var_os("INCIDENT_TRACE").is_some() {
            eprintln!("  {}", inc.alarm);
            let later: Vec<f64> = inc.linked[inc.first.len()..]
                .iter()
                .map(|&m| (arrivals[m].at - inc.opened).num_minutes() as f64 / 60.0)
                .collect();
            eprintln!(
                "false alarm {n} {} at {}: {} first, {} later at hours {:?}",
                inc.intent,
                inc.opened,
                inc.first.len(),
                later.len(),
                later.iter().map(|h| format!("{h:.1}")).collect::<Vec<_>>()
            );
        }
    }
    // Every ticket linked to any incident, false alarms' included, counts against precision.
    score.linked_all += incidents.iter().map(|i| i.linked.len()).sum::<usize>();
    for (k, inj) in injections.iter().enumerate() {
        score.injected += 1;
        let shape = format!("{:?}", inj.shape);
        let e = score.by_shape.entry(shape).or_default();
        e.0 += 1;
        if inj.shape == Shape::Burst10 {
            score.bursts += 1;
        }
        let Some(&at) = first_detection.get(&k) else {
            if std::env::var_os("INCIDENT_TRACE").is_some() {
                let mine = arrivals
                    .iter()
                    .filter(|a| a.injected == Some(k))
                    .collect::<Vec<_>>();
                let near: Vec<String> = incidents
                    .iter()
                    .filter(|inc| inc.first.iter().any(|&m| arrivals[m].injected == Some(k)))
                    .map(|inc| {
                        let ours = inc
                            .first
                            .iter()
                            .filter(|&&m| arrivals[m].injected == Some(k))
                            .count();
                        format!("{ours}/{}", inc.first.len())
                    })
                    .collect();
                eprintln!(
                    "missed: {:?} of {} at {} ({} tickets); incidents holding some: {near:?}",
                    inj.shape,
                    inj.scenario,
                    inj.times[0],
                    mine.len()
                );
            }
            continue;
        };
        e.1 += 1;
        score.detected += 1;
        let delay = (at - inj.times[4]).num_seconds() as f64 / 60.0;
        score.delays_min.push(delay);
        if inj.shape == Shape::Burst10 && delay <= 30.0 {
            score.bursts_in_30 += 1;
        }
        let mut linked: Vec<usize> = matched[&k]
            .iter()
            .flat_map(|&n| incidents[n].linked.iter().copied())
            .collect();
        linked.sort();
        linked.dedup();
        let right = linked
            .iter()
            .filter(|&&m| arrivals[m].injected == Some(k))
            .count();
        let intents: Vec<&str> = matched[&k]
            .iter()
            .map(|&n| incidents[n].intent.as_str())
            .collect();
        for (m, a) in arrivals.iter().enumerate() {
            if a.injected == Some(k) && linked.binary_search(&m).is_err() {
                let chain = &pool.texts[a.text].read.chain;
                let same = intents.iter().any(|i| chain.iter().any(|c| c == i));
                score.missed[usize::from(same)] += 1;
            }
        }
        score.linked_right += right;
        score.detected_tickets += inj.times.len();
        score.detected_tickets_linked += right;
    }
}

/// Per scenario: cosine between two of its tickets, and from one of its tickets to background
/// tickets of the same intent (percentiles), to choose the similarity settings by.
fn similarities(pool: &Pool) {
    for mode in ["raw", "global", "intent"] {
        similarities_by(pool, mode);
    }
}

fn centred(pool: &Pool, mode: &str) -> Vec<Embedding> {
    let dim = pool.texts[0].read.embedding.q.len();
    let mut means: HashMap<String, (Vec<f32>, f32)> = HashMap::new();
    for &i in &pool.background {
        let r = &pool.texts[i].read;
        let key = if mode == "intent" {
            r.chain.last().cloned().unwrap_or_default()
        } else {
            String::new()
        };
        let e = means.entry(key).or_insert((vec![0.0; dim], 0.0));
        for (m, v) in e.0.iter_mut().zip(r.embedding.values()) {
            *m += v;
        }
        e.1 += 1.0;
    }
    pool.texts
        .iter()
        .map(|t| {
            let r = &t.read;
            if mode == "raw" {
                return r.embedding.clone();
            }
            let key = if mode == "intent" {
                r.chain.last().cloned().unwrap_or_default()
            } else {
                String::new()
            };
            let Some((m, n)) = means.get(&key) else {
                return r.embedding.clone();
            };
            let v: Vec<f32> = r
                .embedding
                .values()
                .iter()
                .zip(m)
                .map(|(v, m)| v - m / n)
                .collect();
            Embedding::new(&v)
        })
        .collect()
}

fn similarities_by(pool: &Pool, mode: &str) {
    let emb = centred(pool, mode);
    println!("centring: {mode}");
    println!("| scenario | within: p10 / p50 | to the intent's background: p50 / p90 / p99 | classified as the scenario's majority intent |");
    println!("|---|---|---|---|");
    for (name, ids) in &pool.scenarios {
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for &i in ids {
            let leaf = pool.texts[i]
                .read
                .chain
                .last()
                .map_or("unknown", String::as_str);
            *votes.entry(leaf).or_default() += 1;
        }
        let (intent, n) = votes.into_iter().max_by_key(|(_, v)| *v).unwrap();
        let mut within = pair_cosines(&emb, ids, |_, _| true);
        let mut across = Vec::new();
        for &i in ids {
            for &j in &pool.background {
                if pool.texts[j].read.chain.last().map(String::as_str) == Some(intent) {
                    across.push(emb[i].cosine(&emb[j]) as f64);
                }
            }
        }
        println!(
            "| {name} | {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {intent} {n}/{} |",
            quantile(&mut within, 0.1),
            quantile(&mut within, 0.5),
            quantile(&mut across, 0.5),
            quantile(&mut across, 0.9),
            quantile(&mut across, 0.99),
            ids.len()
        );
    }
    // Linking by centroid: the centroid of 6 of a scenario's tickets (those the model put in its
    // majority intent); the rest of its tickets against that intent's background.
    println!("| scenario | rest to centroid: p10 / p50 | background to centroid: p90 / p99 / max | AUC |");
    for (name, ids) in &pool.scenarios {
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for &i in ids {
            *votes
                .entry(
                    pool.texts[i]
                        .read
                        .chain
                        .last()
                        .map_or("unknown", String::as_str),
                )
                .or_default() += 1;
        }
        let intent = votes.into_iter().max_by_key(|(_, v)| *v).unwrap().0;
        let same: Vec<usize> = ids
            .iter()
            .copied()
            .filter(|&i| pool.texts[i].read.chain.last().map(String::as_str) == Some(intent))
            .collect();
        let c =
            intent_router::incident::vector::centroid(same[..6].iter().map(|&i| &emb[i])).unwrap();
        let mut rest: Vec<f64> = same[6..]
            .iter()
            .map(|&i| c.cosine(&emb[i]) as f64)
            .collect();
        let mut back: Vec<f64> = pool
            .background
            .iter()
            .filter(|&&j| pool.texts[j].read.chain.last().map(String::as_str) == Some(intent))
            .map(|&j| c.cosine(&emb[j]) as f64)
            .collect();
        let auc = rest
            .iter()
            .map(|r| back.iter().filter(|b| *b < r).count() as f64 / back.len() as f64)
            .sum::<f64>()
            / rest.len() as f64;
        println!(
            "| {name} | {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {auc:.3} |",
            quantile(&mut rest, 0.1),
            quantile(&mut rest, 0.5),
            quantile(&mut back, 0.9),
            quantile(&mut back, 0.99),
            quantile(&mut back, 1.0)
        );
    }
    let leaf = |i: usize| pool.texts[i].read.chain.last();
    let mut bg = pair_cosines(&emb, &pool.background, |i, j| leaf(i) == leaf(j));
    println!(
        "background pairs of one intent: p50 {:.3}, p90 {:.3}, p99 {:.3}, p99.9 {:.3}\n",
        quantile(&mut bg, 0.5),
        quantile(&mut bg, 0.9),
        quantile(&mut bg, 0.99),
        quantile(&mut bg, 0.999)
    );
}

/// Cosines of every pair of `ids` that `keep` accepts.
fn pair_cosines(emb: &[Embedding], ids: &[usize], keep: impl Fn(usize, usize) -> bool) -> Vec<f64> {
    let mut out = Vec::new();
    for (x, &i) in ids.iter().enumerate() {
        for &j in ids[x + 1..].iter().filter(|&&j| keep(i, j)) {
            out.push(f64::from(emb[i].cosine(&emb[j])));
        }
    }
    out
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// How fast the detector takes tickets at each daily volume (`INCIDENT_SPEED=200,2000,…`):
/// `weeks` of background through one detector, as a rebuild replays the log.
fn speed(pool: &Pool, weeks: i64, volumes: &str) {
    println!("| tickets/day | tickets | seconds | µs per ticket | a 28-day rebuild |");
    println!("|---|---|---|---|---|");
    for per_day in volumes.split(',') {
        let per_day: f64 = per_day.trim().parse().expect("INCIDENT_SPEED: numbers");
        let mut rng = StdRng::seed_from_u64(1);
        let mut arrivals = background(&mut rng, pool, weeks, per_day);
        arrivals.sort_by_key(|a| a.at);
        let observations: Vec<Observation> = arrivals
            .iter()
            .enumerate()
            .map(|(i, a)| observation(pool, i, a))
            .collect();
        let mut detector = Detector::new(DetectorSettings::default(), &pool.leaves);
        let n = observations.len();
        let started = std::time::Instant::now();
        let mut alarms = 0;
        for o in observations {
            alarms += usize::from(detector.observe(o).is_some());
        }
        let secs = started.elapsed().as_secs_f64();
        let per_ticket = secs / n as f64;
        println!(
            "| {per_day} | {n} | {secs:.2} | {:.1} | {:.0} s |",
            per_ticket * 1e6,
            per_ticket * per_day * 28.0
        );
        std::hint::black_box(alarms);
    }
}

fn main() {
    let weeks: i64 = env("INCIDENT_WEEKS", 4);
    let seeds: u64 = env("INCIDENT_SEEDS", 5);
    let sensitivities: Vec<f64> = env("INCIDENT_SENSITIVITIES", "0.25,0.5,1,2,4".to_string())
        .split(',')
        .map(|s| s.trim().parse().expect("INCIDENT_SENSITIVITIES: numbers"))
        .collect();
    let pool = load_pool();
    if std::env::var_os("INCIDENT_SIMILARITIES").is_some() {
        similarities(&pool);
    }
    if let Ok(volumes) = std::env::var("INCIDENT_SPEED") {
        speed(&pool, weeks, &volumes);
        return;
    }
    println!(
        "{} background texts, {} scenarios ({} texts), {} weeks × {} seeds, {} tickets/day",
        pool.background.len(),
        pool.scenarios.len(),
        pool.texts.len() - pool.background.len(),
        weeks,
        seeds,
        PER_DAY
    );
    println!("\n| false alarms/week (setting) | incident recall | burst of 10 within 30 min of its 5th | delay after the 5th ticket, median / p90 | false alarms, week 1 | false alarms/week from week 3 | linking precision | linking recall |");
    println!("|---|---|---|---|---|---|---|---|");
    for &fa in &sensitivities {
        let settings = DetectorSettings {
            false_alarms_per_week: fa,
            ..DetectorSettings::default()
        };
        let mut s = Score::default();
        for seed in 0..seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut arrivals = background(&mut rng, &pool, weeks, PER_DAY);
            let (injections, injected) = inject(&mut rng, &pool, weeks, seed);
            arrivals.extend(injected);
            arrivals.sort_by_key(|a| a.at);
            let incidents = replay(&pool, &arrivals, &settings);
            score(&pool, &mut s, &arrivals, &injections, &incidents, weeks);
        }
        let mut delays = s.delays_min.clone();
        println!(
            "| {fa} | {:.2} ({}/{}) | {}/{} | {:.0} / {:.0} min | {:.1} | {:.2} | {:.3} | {:.3} |",
            s.detected as f64 / s.injected as f64,
            s.detected,
            s.injected,
            s.bursts_in_30,
            s.bursts,
            quantile(&mut delays, 0.5),
            quantile(&mut delays, 0.9),
            s.false_week1 as f64 / seeds as f64,
            s.false_later as f64 / s.weeks_later.max(1.0),
            s.linked_right as f64 / s.linked_all.max(1) as f64,
            s.detected_tickets_linked as f64 / s.detected_tickets.max(1) as f64,
        );
        eprintln!(
            "  {fa}: wrong links: {} background and {} of other injections to detections, {} background and {} injected to false alarms; missed tickets of detections: {} in another intent, {} in its intent",
            s.wrong[0], s.wrong[1], s.wrong[2], s.wrong[3], s.missed[0], s.missed[1]
        );
        eprintln!(
            "  {fa}: wrong links by phase: {:?} (opened, grew, routed)",
            s.wrong_by_phase
        );
        let mut shapes: Vec<_> = s.by_shape.iter().collect();
        shapes.sort();
        for (shape, (n, d)) in shapes {
            eprintln!("  {fa}: {shape}: {d}/{n}");
        }
    }
}
