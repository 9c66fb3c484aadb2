//! The incident detector: watches the stream of routed tickets and raises an [`Alarm`] when an
//! intent (leaf or parent), an intent in one language, or a group of near-duplicate tickets
//! within an intent takes a larger share of the recent volume than its history allows.
//!
//! Method (count-native, works from the first day): on each ticket, for each of its streams and
//! each scan window, the count of the stream's other tickets in the window is compared with the
//! volume of the window (all tickets, or those in the language) under a beta-binomial model: the
//! stream's share of the volume is uncertain, Beta-distributed, learnt from the history (decayed,
//! segmented by model version, tickets of incidents left out) on top of a prior. Watching the
//! share makes seasonal peaks that lift every intent harmless. The smallest p-value of a
//! stream's windows is compared with `false_alarms_per_week / tests_per_week`, one test per
//! stream and ticket over the past week (Bonferroni's correction, with the windows of a stream
//! counted once as they overlap and mostly agree: not a strict bound), so the sensitivity
//! reads as the expected false alarms per week; the simulator (`benches/incidents.rs`)
//! measures the real rate.
//!
//! Pure and single-threaded: the caller feeds observations in time order and links tickets to
//! incidents; no storage, no clock of its own.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::stats::beta_binomial_tail;
use super::vector::{centroid, Embedding};

/// The scan windows, shortest first (a burst shows in the short ones, a slow rise in the long).
pub const WINDOWS_MINUTES: [i64; 5] = [30, 60, 180, 720, 1440];

/// How sensitive the detector is and how it groups tickets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorSettings {
    /// Expected false alarms per week at most (the sensitivity).
    pub false_alarms_per_week: f64,
    /// Two tickets of one intent are near-duplicates (cluster streams) when closer than all
    /// but this share of the intent's usual pairs.
    pub near_duplicate_share: f64,
    /// The cosine that makes near-duplicates until an intent has a history of pairs.
    pub duplicate_similarity: f32,
    /// Tickets an alarm needs at least (the stream's count in the window).
    pub min_tickets: u32,
    /// Half-life of the history, in days.
    pub history_half_life_days: f64,
    /// Weight of the prior share, in tickets (a new intent's share is the prior's until its own
    /// history outweighs it).
    pub prior_tickets: f64,
    /// The most tickets the history may weigh: a stream's share drifts from day to day (the
    /// intent mix of a weekday, a campaign), so however long the history, it is never surer of
    /// a share than this many tickets would make it; less where the past days' shares moved
    /// more than chance explains (measured per stream).
    pub max_history_tickets: f64,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            false_alarms_per_week: 0.5,
            near_duplicate_share: 0.05,
            duplicate_similarity: 0.95,
            min_tickets: 4,
            history_half_life_days: 14.0,
            prior_tickets: 50.0,
            max_history_tickets: 1000.0,
        }
    }
}

impl DetectorSettings {
    /// Every setting out of its range, by name (empty when all are valid).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, name: &str, valid: &str| {
            if !ok {
                out.push(format!("{name}: must be {valid}"));
            }
        };
        let positive = |x: f64| x.is_finite() && x > 0.0;
        check(
            positive(self.false_alarms_per_week),
            "false_alarms_per_week",
            "a number above 0",
        );
        check(
            self.near_duplicate_share > 0.0 && self.near_duplicate_share < 0.5,
            "near_duplicate_share",
            "between 0 and 0.5",
        );
        check(
            self.duplicate_similarity > 0.0 && self.duplicate_similarity <= 1.0,
            "duplicate_similarity",
            "a cosine above 0, at most 1",
        );
        check(self.min_tickets >= 2, "min_tickets", "at least 2");
        check(
            positive(self.history_half_life_days),
            "history_half_life_days",
            "above 0",
        );
        check(positive(self.prior_tickets), "prior_tickets", "above 0");
        check(
            self.max_history_tickets.is_finite() && self.max_history_tickets >= self.prior_tickets,
            "max_history_tickets",
            "at least prior_tickets",
        );
        out
    }
}

/// One routed ticket as the detector sees it.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Decision id.
    pub id: String,
    /// When it was received.
    pub at: DateTime<Utc>,
    /// Its intent chain, root first (`["billing", "billing.refund"]`); empty when unknown.
    pub chain: Vec<String>,
    /// Its language.
    pub language: String,
    /// Its embedding.
    pub embedding: Embedding,
    /// The model that classified it.
    pub model_version: String,
    /// The incident it is linked to, if any.
    pub incident: Option<String>,
}

impl Observation {
    /// The most specific intent of the chain.
    pub fn leaf(&self) -> Option<&str> {
        self.chain.last().map(String::as_str)
    }
}

/// What the detector watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stream {
    /// An intent, leaf or parent.
    Intent {
        /// Intent id.
        intent: String,
    },
    /// An intent in one language.
    IntentLanguage {
        /// Intent id.
        intent: String,
        /// Language code.
        language: String,
    },
    /// Near-duplicates of one ticket within its (leaf) intent.
    Cluster {
        /// Intent id.
        intent: String,
    },
}

impl Stream {
    /// The intent the stream is about.
    pub fn intent(&self) -> &str {
        match self {
            Self::Intent { intent } | Self::IntentLanguage { intent, .. } => intent,
            Self::Cluster { intent } => intent,
        }
    }

    /// The language it is limited to.
    pub fn language(&self) -> Option<&str> {
        match self {
            Self::IntentLanguage { language, .. } => Some(language),
            _ => None,
        }
    }

    /// Its key in the history's counts (a near-duplicate group counts as its intent).
    fn key(&self) -> String {
        match self {
            Self::IntentLanguage { intent, language } => lang_key(intent, language),
            _ => self.intent().to_string(),
        }
    }
}

/// A stream that took more of the volume than its history allows.
#[derive(Debug, Clone)]
pub struct Alarm {
    /// The stream.
    pub stream: Stream,
    /// The ticket whose arrival raised it.
    pub at: DateTime<Utc>,
    /// Scan window, minutes.
    pub window_minutes: i64,
    /// The stream's tickets in the window (the new one included).
    pub count: u64,
    /// All tickets in the window it is compared with.
    pub volume: u64,
    /// The count the history expects for that volume, the new ticket included (it is given).
    pub expected: f64,
    /// Chance of a count this high or higher by the history alone.
    pub p_value: f64,
    /// The p-value below which an alarm is raised now.
    pub threshold: f64,
    /// Decision ids of the stream's tickets in the window, oldest first.
    pub members: Vec<String>,
    /// Their centroid.
    pub centroid: Embedding,
}

/// Which of a ticket's streams another ticket counts in, without comparing intents by name:
/// each stream's intent is one of the ticket's chain, and another ticket is in it when their
/// chains agree down to it (chains are the prefixes of a dotted id).
struct Membership {
    /// Only tickets in the ticket's language count, in the volume too.
    in_language: bool,
    /// How many intents of the chains must agree.
    depth: usize,
    /// Only near-duplicates of the ticket count.
    cluster: bool,
}

impl Membership {
    fn of(stream: &Stream, o: &Observation) -> Self {
        Self {
            in_language: stream.language().is_some(),
            depth: o
                .chain
                .iter()
                .position(|c| c == stream.intent())
                .map_or(usize::MAX, |p| p + 1),
            cluster: matches!(stream, Stream::Cluster { .. }),
        }
    }
}

/// A ticket of the history's reservoir: its language and embedding.
#[derive(Debug, Clone)]
struct Kept {
    language: String,
    embedding: Embedding,
    /// Its cosines to the tickets kept after it, in their order (each pair once, so the
    /// near-duplicate shares need no cosine again).
    later: Vec<f32>,
}

/// The decayed history of one model version.
#[derive(Debug, Default)]
struct History {
    /// The model version it is about.
    version: String,
    /// Tickets per stream key (`intent` or `intent\u{0}language`) and per volume key (see
    /// [`volume_key`]).
    counts: HashMap<String, f64>,
    /// Per leaf intent: cosines of the latest pairs of its tickets.
    pairs: HashMap<String, VecDeque<f32>>,
    /// Per leaf intent: the cosine from which two of its tickets are near-duplicates.
    near: HashMap<String, f32>,
    /// Per leaf intent: the Beta over one ticket's share of near-duplicates among the others
    /// (tickets differ: some are typical and near many, some near none).
    near_share: HashMap<String, (f64, f64)>,
    /// Per leaf intent: the latest embeddings that entered the history (ordered, so sums over
    /// them come out the same on every run).
    reservoir: BTreeMap<String, VecDeque<Kept>>,
    /// When the counts were last decayed.
    decayed_at: Option<DateTime<Utc>>,
    /// Tickets per day (day number since the epoch), by the keys of `counts`, the past
    /// [`DAYS`] days.
    daily: HashMap<String, BTreeMap<i64, f64>>,
    /// Per stream key: how many tickets the history may weigh, from how much its share moved
    /// from day to day beyond what chance explains (absent: no more than chance).
    steadiness: HashMap<String, f64>,
    /// The day of the newest ticket in the history.
    day: i64,
}

/// Days of daily counts kept to measure how much shares move from day to day.
const DAYS: i64 = 14;
/// The volume keys of the counts start with this.
const VOLUME: &str = "\u{1}";

/// The key of the volume in a language (all tickets: `None`) in the history's counts.
fn volume_key(language: Option<&str>) -> String {
    format!("{VOLUME}{}", language.unwrap_or_default())
}

impl History {
    /// Recomputes, for every stream key, the weight its history may have: the method of
    /// moments on its daily shares over the past closed days, less the binomial noise of each
    /// day's count.
    fn measure_steadiness(&mut self) {
        self.steadiness.clear();
        for (key, days) in &self.daily {
            if key.starts_with(VOLUME) {
                continue;
            }
            let language = key.split_once('\u{0}').map(|(_, l)| l);
            let Some(volume) = self.daily.get(&volume_key(language)) else {
                continue;
            };
            let closed: Vec<(f64, f64)> = volume
                .iter()
                .filter(|(d, v)| **d < self.day && **v >= 10.0)
                .map(|(d, v)| (days.get(d).copied().unwrap_or(0.0), *v))
                .collect();
            if let Some(weight) = steadiness(&closed) {
                self.steadiness.insert(key.clone(), weight);
            }
        }
    }
}

/// The weight (in tickets) of a Beta whose spread matches how much a share moved over days of
/// `(count, volume)` beyond the binomial noise; `None` with fewer than 3 days or no such move.
fn steadiness(days: &[(f64, f64)]) -> Option<f64> {
    if days.len() < 3 {
        return None;
    }
    let (count, volume) = days
        .iter()
        .fold((0.0, 0.0), |(c, v), (dc, dv)| (c + dc, v + dv));
    let m = count / volume;
    if m <= 0.0 || m >= 1.0 {
        return None;
    }
    let n = days.len() as f64;
    let observed = days.iter().map(|(c, v)| (c / v - m).powi(2)).sum::<f64>() / (n - 1.0);
    let noise = days.iter().map(|(_, v)| m * (1.0 - m) / v).sum::<f64>() / n;
    let extra = observed - noise;
    (extra > 0.0).then(|| (m * (1.0 - m) / extra - 1.0).max(1.0))
}

/// Minutes after a model change in which tickets of the previous model are late, not a
/// rollback.
const LATE_TICKETS: i64 = 10;

/// Embeddings per intent kept to compare new ones with.
const RESERVOIR: usize = 64;
/// Pair cosines per intent kept to place the near-duplicate cosine.
const PAIRS: usize = 2048;
/// Pairs an intent needs before its own near-duplicate cosine is used.
const MIN_PAIRS: usize = 100;

impl History {
    fn decay(&mut self, now: DateTime<Utc>, half_life_days: f64) {
        let Some(then) = self.decayed_at else {
            self.decayed_at = Some(now);
            return;
        };
        let hours = (now - then).num_seconds() as f64 / 3600.0;
        if hours < 1.0 {
            return;
        }
        let f = 0.5f64.powf(hours / 24.0 / half_life_days);
        for v in self.counts.values_mut() {
            *v *= f;
        }
        self.decayed_at = Some(now);
    }

    fn add(&mut self, o: &Observation, near_share: f64) {
        let day = o.at.timestamp().div_euclid(86_400);
        if day > self.day {
            self.day = day;
            self.measure_steadiness();
        }
        let mut keys = vec![volume_key(None), volume_key(Some(&o.language))];
        for intent in &o.chain {
            keys.push(intent.clone());
            keys.push(lang_key(intent, &o.language));
        }
        for key in keys {
            *self.counts.entry(key.clone()).or_default() += 1.0;
            let days = self.daily.entry(key).or_default();
            *days.entry(day).or_default() += 1.0;
            while days.first_key_value().is_some_and(|(d, _)| *d < day - DAYS) {
                days.pop_first();
            }
        }
        let Some(leaf) = o.leaf() else { return };
        if o.embedding.is_empty() {
            // Kept without its embedding: it counts, and says nothing about similarity.
            return;
        }
        let kept = self.reservoir.entry(leaf.to_string()).or_default();
        let pairs = self.pairs.entry(leaf.to_string()).or_default();
        let cosines: Vec<f32> = kept
            .iter()
            .map(|k| k.embedding.cosine(&o.embedding))
            .collect();
        pairs.extend(&cosines);
        while pairs.len() > PAIRS {
            pairs.pop_front();
        }
        if pairs.len() >= MIN_PAIRS {
            let mut sorted: Vec<f32> = pairs.iter().copied().collect();
            let at = ((1.0 - near_share) * (sorted.len() - 1) as f64).round() as usize;
            let (_, near, _) = sorted.select_nth_unstable_by(at, f32::total_cmp);
            let near = *near;
            self.near.insert(leaf.to_string(), near);
            if let Some(beta) = near_share_beta(kept, near) {
                self.near_share.insert(leaf.to_string(), beta);
            }
        }
        for (k, c) in kept.iter_mut().zip(cosines) {
            k.later.push(c);
        }
        kept.push_back(Kept {
            language: o.language.clone(),
            embedding: o.embedding.clone(),
            later: Vec::new(),
        });
        if kept.len() > RESERVOIR {
            kept.pop_front();
        }
    }
}

/// The Beta (method of moments) over the share of the others each kept ticket is at cosine
/// `>= near` to; `None` for fewer than 16 tickets.
fn near_share_beta(kept: &VecDeque<Kept>, near: f32) -> Option<(f64, f64)> {
    if kept.len() < 16 {
        return None;
    }
    let n = kept.len() as f64;
    let mut close = vec![0usize; kept.len()];
    for (i, a) in kept.iter().enumerate() {
        for (j, c) in (i + 1..).zip(&a.later) {
            if *c >= near {
                close[i] += 1;
                close[j] += 1;
            }
        }
    }
    let shares: Vec<f64> = close.iter().map(|c| *c as f64 / (n - 1.0)).collect();
    let m = (shares.iter().sum::<f64>() / n).clamp(1e-3, 0.5);
    let var = shares.iter().map(|s| (s - m).powi(2)).sum::<f64>() / (n - 1.0);
    let kappa = (m * (1.0 - m) / var.max(1e-9) - 1.0).clamp(1.0, n);
    Some((m * kappa, (1.0 - m) * kappa))
}

fn lang_key(intent: &str, language: &str) -> String {
    format!("{intent}\u{0}{language}")
}

/// Tests made per hour over the past week, to turn the weekly false-alarm budget into a
/// per-test threshold.
#[derive(Debug, Default)]
struct TestCounter {
    /// (hour index, tests in it), oldest first, at most a week.
    hours: VecDeque<(i64, u64)>,
    /// The first hour seen.
    first: Option<i64>,
}

impl TestCounter {
    fn add(&mut self, at: DateTime<Utc>, tests: u64) {
        let hour = at.timestamp().div_euclid(3600);
        self.first.get_or_insert(hour);
        match self.hours.back_mut() {
            Some((h, n)) if *h == hour => *n += tests,
            _ => self.hours.push_back((hour, tests)),
        }
        while self.hours.front().is_some_and(|(h, _)| *h <= hour - 168) {
            self.hours.pop_front();
        }
    }

    /// Tests per week: the past week's, extrapolated while less than a week has passed.
    fn per_week(&self, at: DateTime<Utc>) -> f64 {
        let hour = at.timestamp().div_euclid(3600);
        let covered = (hour - self.first.unwrap_or(hour) + 1).clamp(1, 168) as f64;
        let tests: u64 = self.hours.iter().map(|(_, n)| n).sum();
        tests as f64 * 168.0 / covered
    }
}

/// The detector's state: the recent tickets, the history and the test counter.
#[derive(Debug)]
pub struct Detector {
    settings: DetectorSettings,
    /// Prior share of the volume per intent node (leaves and parents).
    prior: HashMap<String, f64>,
    /// Tickets of the longest window, oldest first.
    recent: VecDeque<Observation>,
    /// The history of the current model version.
    history: History,
    /// The model version before the current one and when it was replaced: its tickets that
    /// arrive within [`LATE_TICKETS`] after are late (counted in the windows, not in the
    /// history); after that, the version is live again (a rollback) and starts a history.
    replaced: Option<(String, DateTime<Utc>)>,
    /// The newest time seen (an observation older than it is taken as of it).
    newest: Option<DateTime<Utc>>,
    tests: TestCounter,
}

impl Detector {
    /// A detector over a taxonomy's leaf intents (dotted ids; parents are their prefixes).
    pub fn new(settings: DetectorSettings, leaves: &[String]) -> Self {
        let mut prior: HashMap<String, f64> = HashMap::new();
        let share = 1.0 / leaves.len().max(1) as f64;
        for leaf in leaves {
            for node in chain_of(leaf) {
                *prior.entry(node).or_default() += share;
            }
        }
        Self {
            settings,
            prior,
            recent: VecDeque::new(),
            history: History::default(),
            replaced: None,
            newest: None,
            tests: TestCounter::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &DetectorSettings {
        &self.settings
    }

    /// Marks recent tickets as linked to `incident` (they leave the counts of later tests and
    /// never enter the history).
    pub fn link(&mut self, ids: &[String], incident: &str) {
        let ids: HashSet<&String> = ids.iter().collect();
        for o in self.recent.iter_mut().filter(|o| ids.contains(&o.id)) {
            o.incident = Some(incident.to_string());
        }
    }

    /// Unlinks recent tickets (an agent said they are not the incident's).
    pub fn unlink(&mut self, ids: &[String]) {
        let ids: HashSet<&String> = ids.iter().collect();
        for o in self.recent.iter_mut().filter(|o| ids.contains(&o.id)) {
            o.incident = None;
        }
    }

    /// The recent tickets (the longest window), oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &Observation> {
        self.recent.iter()
    }

    /// Takes one routed ticket; returns the most significant alarm it raises, if any.
    pub fn observe(&mut self, mut o: Observation) -> Option<Alarm> {
        // Tickets come in the order they were logged, which replicas may shuffle by moments:
        // a ticket older than the newest seen is taken as of the newest, so windows stay ordered.
        let newest = *self.newest.get_or_insert(o.at);
        o.at = o.at.max(newest);
        self.newest = Some(o.at);
        self.age(o.at, &o.model_version);
        let linked = o.incident.is_some();
        self.recent.push_back(o);
        if linked {
            return None;
        }
        let o = self.recent.back().expect("just pushed. This is a bug.");
        let (alarm, tests) = self.test(o);
        self.tests.add(o.at, tests);
        alarm
    }

    /// Moves tickets older than the longest window into the history; starts a new history when
    /// the model version changes.
    fn age(&mut self, now: DateTime<Utc>, version: &str) {
        let late = self
            .replaced
            .as_ref()
            .is_some_and(|(v, at)| v == version && now - *at < Duration::minutes(LATE_TICKETS));
        if self.history.version != version && !late {
            let old = std::mem::take(&mut self.history);
            self.replaced = (!old.version.is_empty()).then_some((old.version, now));
            self.history.version = version.to_string();
        }
        let longest = Duration::minutes(WINDOWS_MINUTES[WINDOWS_MINUTES.len() - 1]);
        self.history
            .decay(now, self.settings.history_half_life_days);
        while let Some(old) = self.recent.front().filter(|o| now - o.at > longest) {
            if old.incident.is_none() && old.model_version == self.history.version {
                self.history.add(old, self.settings.near_duplicate_share);
            }
            self.recent.pop_front();
        }
    }

    /// Runs every test the new ticket `o` (the newest of `recent`) takes part in; returns the
    /// most significant alarm and the number of tests made.
    fn test(&self, o: &Observation) -> (Option<Alarm>, u64) {
        let threshold = self.settings.false_alarms_per_week / self.tests.per_week(o.at).max(1.0);
        let mut best: Option<Alarm> = None;
        let streams = streams_of(o);
        // The windows of one stream overlap and mostly agree: one test per stream and ticket.
        let tests = streams.len() as u64;
        let counts = self.window_counts(o, &streams);
        for (minutes, counts) in WINDOWS_MINUTES.into_iter().zip(counts) {
            let mut window: Option<Vec<&Observation>> = None;
            for (stream, (count, volume)) in streams.iter().zip(counts) {
                if self
                    .p_value(stream, count, volume)
                    .is_none_or(|p| p >= threshold)
                {
                    continue;
                }
                // An alarm: its tickets are gathered (rarely; counting needs no list).
                let window = window.get_or_insert_with(|| {
                    let since = o.at - Duration::minutes(minutes);
                    self.recent
                        .iter()
                        .filter(|r| r.at > since && r.incident.is_none())
                        .collect()
                });
                let Some(candidate) = self.scan(o, stream, window, minutes, threshold) else {
                    continue;
                };
                if best.as_ref().is_none_or(|b| candidate.p_value < b.p_value) {
                    best = Some(candidate);
                }
            }
        }
        (best, tests)
    }

    /// For each window (shortest first) and stream: the stream's tickets and the volume it is
    /// compared with, in one pass over the recent tickets from the newest (each counted in the
    /// shortest window that holds it, then summed up into the longer ones).
    fn window_counts(&self, o: &Observation, streams: &[Stream]) -> Vec<Vec<(u64, u64)>> {
        let mut counts = vec![vec![(0u64, 0u64); streams.len()]; WINDOWS_MINUTES.len()];
        let near = o.leaf().map_or(f32::INFINITY, |l| self.near_similarity(l));
        let tests: Vec<Membership> = streams.iter().map(|s| Membership::of(s, o)).collect();
        let limits = WINDOWS_MINUTES.map(Duration::minutes);
        let mut k = 0;
        for r in self.recent.iter().rev() {
            let age = o.at - r.at;
            while k < limits.len() && age >= limits[k] {
                k += 1;
            }
            if k == limits.len() {
                break;
            }
            if r.incident.is_some() {
                continue;
            }
            let same_language = r.language == o.language;
            let shared = r
                .chain
                .iter()
                .zip(&o.chain)
                .take_while(|(a, b)| a == b)
                .count();
            let mut cosine = None;
            for (test, (count, volume)) in tests.iter().zip(counts[k].iter_mut()) {
                if test.in_language && !same_language {
                    continue;
                }
                *volume += 1;
                if shared < test.depth {
                    continue;
                }
                if test.cluster
                    && *cosine.get_or_insert_with(|| r.embedding.cosine(&o.embedding)) < near
                {
                    continue;
                }
                *count += 1;
            }
        }
        for k in 1..counts.len() {
            let (shorter, longer) = counts.split_at_mut(k);
            for (l, s) in longer[0].iter_mut().zip(&shorter[k - 1]) {
                l.0 += s.0;
                l.1 += s.1;
            }
        }
        counts
    }

    /// The chance of `count` or more of the stream's tickets among `volume` (the new one
    /// given); `None` when the count is under the minimum or not above the expected one.
    fn p_value(&self, stream: &Stream, count: u64, volume: u64) -> Option<f64> {
        if count < u64::from(self.settings.min_tickets) {
            return None;
        }
        let (a, b) = self.share(stream);
        let trials = volume - 1;
        let expected = trials as f64 * a / (a + b) + 1.0;
        if (count as f64) <= expected {
            return None;
        }
        Some(beta_binomial_tail(count - 1, trials, a, b))
    }

    /// One test: the stream's count in the window against its share of the volume.
    fn scan(
        &self,
        o: &Observation,
        stream: &Stream,
        window: &[&Observation],
        minutes: i64,
        threshold: f64,
    ) -> Option<Alarm> {
        let language = stream.language();
        let volume: Vec<&&Observation> = window
            .iter()
            .filter(|r| language.is_none_or(|l| r.language == l))
            .collect();
        let intent = stream.intent();
        let near = self.near_similarity(intent);
        let in_stream: Vec<&&Observation> = volume
            .iter()
            .copied()
            .filter(|r| r.chain.iter().any(|c| c == intent))
            .filter(|r| match stream {
                Stream::Cluster { .. } => r.embedding.cosine(&o.embedding) >= near,
                _ => true,
            })
            .collect();
        let count = in_stream.len() as u64;
        if count < u64::from(self.settings.min_tickets) {
            return None;
        }
        let (a, b) = self.share(stream);
        // The new ticket is given; the others of the window are the trials.
        let trials = volume.len() as u64 - 1;
        let expected = trials as f64 * a / (a + b) + 1.0;
        if (count as f64) <= expected {
            return None;
        }
        let p_value = beta_binomial_tail(count - 1, trials, a, b);
        if p_value >= threshold {
            return None;
        }
        let centroid = centroid(in_stream.iter().map(|r| &r.embedding))?;
        let members = in_stream.iter().map(|r| r.id.clone()).collect();
        Some(Alarm {
            stream: stream.clone(),
            at: o.at,
            window_minutes: minutes,
            count,
            volume: volume.len() as u64,
            expected,
            p_value,
            threshold,
            members,
            centroid,
        })
    }

    /// Cosine from `centroid` to the intent's tickets in the history (the latest per leaf
    /// under it; in `language` only, if given): how close its usual tickets come.
    pub fn usual_similarities(
        &self,
        intent: &str,
        language: Option<&str>,
        centroid: &Embedding,
    ) -> Vec<f32> {
        self.history
            .reservoir
            .iter()
            .filter(|(leaf, _)| chain_of(leaf).iter().any(|c| c == intent))
            .flat_map(|(_, kept)| kept.iter())
            .filter(|k| language.is_none_or(|l| k.language == l))
            .map(|k| k.embedding.cosine(centroid))
            .collect()
    }

    /// Tickets per hour the history expects of an intent (in a language, if given) now: its
    /// share times the volume of the past three hours (incident tickets left out).
    pub fn usual_rate(&self, intent: &str, language: Option<&str>, now: DateTime<Utc>) -> f64 {
        let since = now - Duration::hours(3);
        let volume = self
            .recent
            .iter()
            .filter(|r| r.at > since && r.incident.is_none())
            .filter(|r| language.is_none_or(|l| r.language == l))
            .count() as f64;
        let intent = intent.to_string();
        let (a, b) = self.share(&match language {
            Some(l) => Stream::IntentLanguage {
                intent,
                language: l.to_string(),
            },
            None => Stream::Intent { intent },
        });
        volume * a / (a + b) / 3.0
    }

    /// The cosine from which two tickets of `intent` are near-duplicates.
    fn near_similarity(&self, intent: &str) -> f32 {
        self.history
            .near
            .get(intent)
            .copied()
            .unwrap_or(self.settings.duplicate_similarity)
    }

    /// The Beta(a, b) over a stream's share of the volume: prior plus history.
    fn share(&self, stream: &Stream) -> (f64, f64) {
        let h = &self.history;
        let w = self.settings.prior_tickets;
        let intent = stream.intent();
        let prior = self
            .prior
            .get(intent)
            .copied()
            .unwrap_or(0.0)
            .clamp(1e-3, 0.999);
        let key = stream.key();
        let counted = |k: &str| h.counts.get(k).copied().unwrap_or(0.0);
        let mut count = counted(&key);
        let mut volume = counted(&volume_key(stream.language()));
        let steady = h.steadiness.get(&key).copied().unwrap_or(f64::INFINITY);
        let cap = (self.settings.max_history_tickets - w).min(steady);
        if volume > cap {
            count *= cap / volume;
            volume = cap;
        }
        let a = w * prior + count;
        let b = w * (1.0 - prior) + (volume - count).max(0.0);
        let Stream::Cluster { .. } = stream else {
            return (a, b);
        };
        // Near-duplicates of one ticket: the intent's share times the near-duplicate rate, as
        // sure as the less known of the two.
        let (m, kappa) = match h.near_share.get(intent) {
            Some(&(a, b)) => (a / (a + b), a + b),
            None => (self.settings.near_duplicate_share, w),
        };
        let mean = a / (a + b) * m;
        // At least one ticket's weight on the near-duplicate side: below it the Beta piles up at
        // zero and at one, and no count could ever be surprising.
        let weight = (a + b).min(kappa).max(1.0 / mean);
        (mean * weight, (1.0 - mean) * weight)
    }
}

/// The streams a ticket belongs to: each intent of its chain, its leaf in its language, and the
/// near-duplicates of it within its leaf.
fn streams_of(o: &Observation) -> Vec<Stream> {
    let mut out: Vec<Stream> = o
        .chain
        .iter()
        .map(|i| Stream::Intent { intent: i.clone() })
        .collect();
    if let Some(leaf) = o.leaf() {
        out.push(Stream::IntentLanguage {
            intent: leaf.to_string(),
            language: o.language.clone(),
        });
        if !o.embedding.is_empty() {
            out.push(Stream::Cluster {
                intent: leaf.to_string(),
            });
        }
    }
    out
}

/// The chain of a dotted intent id, root first: `a.b.c` → `a`, `a.b`, `a.b.c`; none for
/// `unknown` and `out_of_scope`.
pub fn chain_of(intent: &str) -> Vec<String> {
    if intent == crate::intent::UNKNOWN || intent == crate::intent::OUT_OF_SCOPE {
        return Vec::new();
    }
    intent
        .match_indices('.')
        .map(|(i, _)| intent[..i].to_string())
        .chain(std::iter::once(intent.to_string()))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic stream of pseudo-random numbers in [0, 1).
    pub(crate) struct Lcg(pub u64);

    impl Lcg {
        pub(crate) fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A unit vector: `centre` (if any) plus noise.
    pub(crate) fn vector(rng: &mut Lcg, centre: Option<&[f32]>, noise: f32) -> Embedding {
        let v: Vec<f32> = (0..16)
            .map(|i| {
                let n = (rng.next() as f32 - 0.5) * 2.0 * noise;
                centre.map_or(0.0, |c| c[i]) + n
            })
            .collect();
        Embedding::new(&v)
    }

    pub(crate) const LEAVES: [&str; 5] = ["a.x", "a.y", "b.x", "b.y", "c.z"];

    pub(crate) fn obs(id: usize, at: DateTime<Utc>, leaf: &str, e: Embedding) -> Observation {
        Observation {
            id: id.to_string(),
            at,
            chain: chain_of(leaf),
            language: if id.is_multiple_of(3) { "ru" } else { "en" }.into(),
            embedding: e,
            model_version: "m1".into(),
            incident: None,
        }
    }

    pub(crate) fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Two weeks of background, 4 tickets an hour, intents at random; returns the detector,
    /// the alarms raised and the next id.
    pub(crate) fn two_weeks(rng: &mut Lcg) -> (Detector, Vec<Alarm>, usize) {
        let leaves: Vec<String> = LEAVES.iter().map(|s| s.to_string()).collect();
        let mut d = Detector::new(DetectorSettings::default(), &leaves);
        let mut alarms = Vec::new();
        let mut id = 0;
        for minute in (0..14 * 24 * 60).step_by(15) {
            let at = start() + Duration::minutes(minute);
            let leaf = LEAVES[(rng.next() * LEAVES.len() as f64) as usize];
            let e = vector(rng, None, 1.0);
            alarms.extend(d.observe(obs(id, at, leaf, e)));
            id += 1;
        }
        (d, alarms, id)
    }

    #[test]
    fn a_burst_of_one_intent_alarms_and_a_peak_of_every_intent_does_not() {
        let mut rng = Lcg(7);
        let (mut d, alarms, mut id) = two_weeks(&mut rng);
        assert!(
            alarms.len() <= 1,
            "{} false alarms in two weeks",
            alarms.len()
        );
        let t0 = start() + Duration::days(14);
        // Three hours at five times the volume, every intent alike: no alarm.
        for minute in (0..180).step_by(3) {
            let leaf = LEAVES[(rng.next() * LEAVES.len() as f64) as usize];
            let e = vector(&mut rng, None, 1.0);
            let a = d.observe(obs(id, t0 + Duration::minutes(minute), leaf, e));
            assert!(a.is_none(), "a peak of every intent alarmed: {a:?}");
            id += 1;
        }
        // Ten near-identical tickets of one intent in 30 minutes: an alarm on it.
        let t1 = t0 + Duration::hours(6);
        let centre: Vec<f32> = (0..16).map(|i| if i == 3 { 1.0 } else { 0.0 }).collect();
        let first = id;
        let mut raised = None;
        for k in 0..10 {
            let e = vector(&mut rng, Some(&centre), 0.1);
            if let Some(a) = d.observe(obs(id, t1 + Duration::minutes(3 * k), "b.y", e)) {
                raised.get_or_insert(a);
            }
            id += 1;
        }
        let a = raised.expect("the burst raised no alarm");
        assert_eq!(a.stream.intent(), "b.y");
        assert!(a.count >= 4 && a.p_value < a.threshold, "{a:?}");
        assert!(a.expected < a.count as f64);
        assert!(a
            .members
            .iter()
            .all(|m| m.parse::<usize>().unwrap() >= first - 20));
        assert!(a.centroid.cosine(&Embedding::new(&centre)) > 0.8);
    }

    #[test]
    fn linked_tickets_leave_the_counts() {
        let mut rng = Lcg(11);
        let (mut d, _, mut id) = two_weeks(&mut rng);
        let t = start() + Duration::days(14);
        let centre: Vec<f32> = (0..16).map(|i| if i == 5 { 1.0 } else { 0.0 }).collect();
        let mut alarms = 0;
        for k in 0..12 {
            let e = vector(&mut rng, Some(&centre), 0.1);
            if let Some(a) = d.observe(obs(id, t + Duration::minutes(2 * k), "a.x", e)) {
                alarms += 1;
                // The service links the alarm's tickets to an incident.
                d.link(&a.members, "inc-1");
            }
            id += 1;
        }
        // Once linked, the wave's earlier tickets no longer count: each new alarm needs
        // enough new tickets again.
        assert!((1..=3).contains(&alarms), "{alarms} alarms");
        assert!(d.recent().filter(|o| o.incident.is_some()).count() >= 4);
        let ids: Vec<String> = d.recent().map(|o| o.id.clone()).collect();
        d.unlink(&ids);
        assert!(d.recent().all(|o| o.incident.is_none()));
    }

    #[test]
    fn a_new_model_version_starts_a_new_history() {
        let mut rng = Lcg(3);
        let (mut d, _, id) = two_weeks(&mut rng);
        let (a, b) = d.share(&Stream::Intent { intent: "a".into() });
        assert!(a + b > 200.0, "two weeks of history: {a} + {b}");
        let at = start() + Duration::days(15);
        let mut o = obs(id, at, "a.x", vector(&mut rng, None, 1.0));
        o.model_version = "m2".into();
        d.observe(o);
        let (a, b) = d.share(&Stream::Intent { intent: "a".into() });
        assert!((a + b - 50.0).abs() < 1e-9, "only the prior: {a} + {b}");
        assert!((a / (a + b) - 0.4).abs() < 1e-9, "a has 2 of 5 leaves");
        // A ticket of the old version still in flight does not reset the new history.
        let mut late = obs(id + 1, at, "a.x", vector(&mut rng, None, 1.0));
        late.model_version = "m1".into();
        d.observe(late);
        assert_eq!(d.history.version, "m2");
        // Rolled back to m1 an hour later: m1 starts a history again and learns.
        for k in 0..200 {
            let at = at + Duration::hours(1) + Duration::minutes(k * 15);
            let mut o = obs(id + 2 + k as usize, at, "a.x", vector(&mut rng, None, 1.0));
            o.model_version = "m1".into();
            d.observe(o);
        }
        assert_eq!(d.history.version, "m1");
        let (a, b) = d.share(&Stream::Intent { intent: "a".into() });
        assert!(a + b > 100.0, "m1 learns again: {a} + {b}");
    }

    #[test]
    fn a_ticket_older_than_the_newest_is_taken_as_of_the_newest() {
        let leaves: Vec<String> = LEAVES.iter().map(|s| s.to_string()).collect();
        let mut d = Detector::new(DetectorSettings::default(), &leaves);
        let mut rng = Lcg(2);
        d.observe(obs(
            0,
            start() + Duration::hours(5),
            "a.x",
            vector(&mut rng, None, 1.0),
        ));
        d.observe(obs(1, start(), "a.y", vector(&mut rng, None, 1.0)));
        let times: Vec<DateTime<Utc>> = d.recent().map(|o| o.at).collect();
        assert_eq!(times, vec![start() + Duration::hours(5); 2]);
    }

    #[test]
    fn settings_out_of_range_are_named() {
        assert!(DetectorSettings::default().problems().is_empty());
        let bad = DetectorSettings {
            false_alarms_per_week: 0.0,
            near_duplicate_share: f64::NAN,
            min_tickets: 1,
            max_history_tickets: 10.0,
            ..DetectorSettings::default()
        };
        assert_eq!(
            bad.problems(),
            vec![
                "false_alarms_per_week: must be a number above 0",
                "near_duplicate_share: must be between 0 and 0.5",
                "min_tickets: must be at least 2",
                "max_history_tickets: must be at least prior_tickets",
            ]
        );
    }

    #[test]
    fn a_share_that_moves_from_day_to_day_weighs_less() {
        // Exactly the same share each day: nothing beyond chance.
        assert_eq!(steadiness(&[(100.0, 1000.0); 5]), None);
        assert_eq!(steadiness(&[(50.0, 1000.0), (150.0, 1000.0)]), None);
        // 5% and 15% on alternate days of 1,000 tickets: the share's spread is about 0.05, so
        // the history weighs about m(1-m)/var = 0.09/0.0025 ≈ 35 tickets, whatever its length.
        let days: Vec<(f64, f64)> = (0..14)
            .map(|d| (if d % 2 == 0 { 50.0 } else { 150.0 }, 1000.0))
            .collect();
        let w = steadiness(&days).unwrap();
        assert!((25.0..45.0).contains(&w), "{w}");
    }

    #[test]
    fn one_pass_counts_what_each_window_and_stream_holds() {
        let mut rng = Lcg(17);
        let (mut d, _, mut id) = two_weeks(&mut rng);
        let t = start() + Duration::days(14);
        let centre: Vec<f32> = (0..16).map(|i| if i == 3 { 1.0 } else { 0.0 }).collect();
        for minute in 0..600 {
            if minute % 2 == 0 {
                let leaf = LEAVES[(rng.next() * LEAVES.len() as f64) as usize];
                let e = vector(&mut rng, Some(&centre), 0.6);
                d.observe(obs(id, t + Duration::minutes(minute), leaf, e));
                id += 1;
            }
        }
        let o = d.recent().last().unwrap().clone();
        let streams = streams_of(&o);
        let near = d.near_similarity(o.leaf().unwrap());
        let counts = d.window_counts(&o, &streams);
        // Not trivial: the longest window's streams hold some of its tickets, each its own.
        let day = &counts[WINDOWS_MINUTES.len() - 1];
        assert!(day.iter().all(|(c, v)| *c > 0 && c < v), "{day:?}");
        for (minutes, counts) in WINDOWS_MINUTES.into_iter().zip(counts) {
            let since = o.at - Duration::minutes(minutes);
            let window: Vec<&Observation> = d.recent().filter(|r| r.at > since).collect();
            for (stream, (count, volume)) in streams.iter().zip(counts) {
                let volume_by_hand = window
                    .iter()
                    .filter(|r| stream.language().is_none_or(|l| r.language == l))
                    .count() as u64;
                let count_by_hand = window
                    .iter()
                    .filter(|r| stream.language().is_none_or(|l| r.language == l))
                    .filter(|r| r.chain.iter().any(|c| c == stream.intent()))
                    .filter(|r| {
                        !matches!(stream, Stream::Cluster { .. })
                            || r.embedding.cosine(&o.embedding) >= near
                    })
                    .count() as u64;
                assert_eq!(
                    (count, volume),
                    (count_by_hand, volume_by_hand),
                    "{stream:?} in {minutes} min"
                );
            }
        }
    }

    #[test]
    fn the_usual_tickets_of_a_language_are_those_in_it() {
        let mut rng = Lcg(21);
        let (d, _, _) = two_weeks(&mut rng);
        let c = vector(&mut rng, None, 1.0);
        let all = d.usual_similarities("b", None, &c).len();
        let ru = d.usual_similarities("b", Some("ru"), &c).len();
        let en = d.usual_similarities("b", Some("en"), &c).len();
        // A third of the test tickets are in Russian.
        assert!(ru > 0 && en > ru && ru + en == all, "{ru} + {en} of {all}");
        assert!(d.usual_similarities("b", Some("de"), &c).is_empty());
    }

    #[test]
    fn chains_of_dotted_ids() {
        assert_eq!(chain_of("a"), vec!["a"]);
        assert_eq!(chain_of("a.b.c"), vec!["a", "a.b", "a.b.c"]);
    }
}
