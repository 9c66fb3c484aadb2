//! Open incidents and the linking of tickets to them. A ticket belongs to an incident when the
//! odds say so: the prior odds are the incident's recent rate against the intent's usual rate
//! (during a wave most tickets of the intent are the wave's), times the likelihood ratio of the
//! ticket's cosine to the incident's centroid (how close its members come against how close
//! the intent's usual tickets come). A linking is explained by those numbers and can be undone.
//!
//! Pure: the caller gives the time, the ids and the detector's view of the history; storage
//! and alerts are the service's.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::detect::{chain_of, Alarm, Detector, Observation};
use super::vector::{centroid, leave_one_out, Embedding};

/// Where cosines to a centroid fall: mean and standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Spread {
    /// Mean cosine.
    pub mean: f32,
    /// Standard deviation (at least 0.01).
    pub sd: f32,
}

impl Spread {
    /// The spread of `values`; `None` for fewer than two.
    pub fn of(values: &[f32]) -> Option<Self> {
        if values.len() < 2 {
            return None;
        }
        let n = values.len() as f32;
        let mean = values.iter().sum::<f32>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / (n - 1.0);
        Some(Self {
            mean,
            sd: var.sqrt().max(0.01),
        })
    }

    fn log_density(&self, x: f32) -> f64 {
        let z = f64::from((x - self.mean) / self.sd);
        -0.5 * z * z - f64::from(self.sd).ln()
    }
}

/// How a ticket was linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkedBy {
    /// While it was routed.
    Routing,
    /// When the incident opened or grew (routed before).
    Detection,
    /// By a person (merge, split, or a manual link).
    Person,
}

/// A ticket's link to an incident, with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Link {
    /// The incident.
    pub incident: String,
    /// Cosine to the incident's centroid.
    pub similarity: f32,
    /// Probability that the ticket is the incident's.
    pub probability: f64,
    /// The incident's tickets per hour at the time.
    pub incident_rate: f64,
    /// The intent's usual tickets per hour at the time.
    pub usual_rate: f64,
}

impl Link {
    /// The reason in words, for a decision's trace.
    pub fn explain(&self, incident: &TrackedIncident) -> String {
        format!(
            "linked to incident {}: cosine {:.3} to its centroid (its tickets {:.3} ± {:.3}, usual {} tickets {:.3} ± {:.3}); {:.1} incident tickets/h, {:.1} usual: {:.0}% likely",
            self.incident,
            self.similarity,
            incident.members.mean,
            incident.members.sd,
            incident.intent,
            incident.usual.mean,
            incident.usual.sd,
            self.incident_rate,
            self.usual_rate,
            self.probability * 100.0
        )
    }
}

/// An open incident as linking needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedIncident {
    /// Id.
    pub id: String,
    /// The intent (leaf or parent) whose tickets it takes.
    pub intent: String,
    /// The language it is limited to, if the alarm was in one language.
    pub language: Option<String>,
    /// Centroid of its tickets.
    pub centroid: Embedding,
    /// Cosines of its tickets to the centroid of the others (each left out of it).
    pub members: Spread,
    /// Cosines of the intent's usual tickets to the centroid.
    pub usual: Spread,
    /// The intent's usual tickets per hour (refreshed by the detector).
    pub usual_rate: f64,
    /// When its latest tickets came (the past [`RATE_HOURS`]), oldest first.
    pub recent: VecDeque<DateTime<Utc>>,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// When its latest ticket came.
    pub last_at: DateTime<Utc>,
    /// How many times its tickets were counted again from its links (after people's
    /// corrections): a picture of an older revision counts tickets it may no longer hold.
    #[serde(default)]
    pub revision: u64,
}

/// How long an incident's tickets count towards its rate.
const RATE_HOURS: i64 = 6;

impl TrackedIncident {
    /// Its tickets per hour at `now`: each ticket counts `e^(-age / 1 h)` per hour, so the rate
    /// falls soon after the wave ends (then only tickets close to the centroid still link).
    pub fn rate(&self, now: DateTime<Utc>) -> f64 {
        self.recent
            .iter()
            .map(|t| (-((now - *t).num_seconds().max(0) as f64) / 3600.0).exp())
            .sum::<f64>()
            .max(0.01)
    }

    /// The link a ticket would get: probability from the rates and the similarity. The prior
    /// odds are the incident's rate beyond the intent's usual one against the usual one: an
    /// incident that only takes tickets at the usual rate has no excess, and stops taking
    /// middling ones (no incident feeds on the intent's ordinary tickets).
    pub fn score(&self, embedding: &Embedding, now: DateTime<Utc>) -> Link {
        let similarity = self.centroid.cosine(embedding);
        let incident_rate = self.rate(now);
        let usual_rate = self.usual_rate.max(0.05);
        let prior = log_odds(incident_rate, usual_rate);
        Link {
            incident: self.id.clone(),
            similarity,
            probability: posterior(prior, similarity, &self.members, &self.usual),
            incident_rate,
            usual_rate,
        }
    }

    /// The link a ticket of an alarm's window gets: the odds are the alarm's (its wave's
    /// tickets against the usual ones), or the incident's own rate when higher.
    fn score_in_alarm(&self, embedding: &Embedding, alarm: &Alarm) -> Link {
        let mut link = self.score(embedding, alarm.at);
        let log_prior = alarm_log_prior(alarm).max(log_odds(link.incident_rate, link.usual_rate));
        link.probability = posterior(log_prior, link.similarity, &self.members, &self.usual);
        link
    }

    /// Takes `other`'s picture of the incident (intent, language, centroid, spreads: what
    /// people's corrections change), keeping its own rate and times (what the watch changes).
    pub fn adopt_model(&mut self, other: &TrackedIncident) {
        self.intent.clone_from(&other.intent);
        self.language.clone_from(&other.language);
        self.centroid = other.centroid.clone();
        self.members = other.members;
        self.usual = other.usual;
    }

    /// Takes another picture's count of the same incident's tickets: as many tickets at each
    /// time as the picture that counted more there (several tickets of one batch share a time),
    /// and the later last ticket. Of a picture from before a recount (an older revision), only
    /// the tickets after its own newest count.
    pub fn absorb_rate(&mut self, other: &TrackedIncident) {
        if other.revision < self.revision {
            self.extend_rate(other);
            return;
        }
        let mut times: Vec<DateTime<Utc>> = other.recent.iter().copied().collect();
        times.dedup();
        for at in times {
            let theirs = other.recent.iter().filter(|t| **t == at).count();
            let mine = self.recent.iter().filter(|t| **t == at).count();
            for _ in mine..theirs {
                self.record(at);
            }
        }
        self.settle_rate(other.last_at);
    }

    /// Counts `other`'s tickets after its own newest (another replica's tickets linked since
    /// the stored picture was written, or an older revision's).
    pub fn extend_rate(&mut self, other: &TrackedIncident) {
        let newest = self.recent.back().copied();
        for at in other.recent.iter().filter(|at| Some(**at) > newest) {
            self.record(*at);
        }
        self.settle_rate(other.last_at);
    }

    /// Counts a merged incident's tickets too (they are other tickets: every one adds).
    pub fn add_rate(&mut self, other: &TrackedIncident) {
        for at in &other.recent {
            self.record(*at);
        }
        self.settle_rate(other.last_at);
    }

    fn settle_rate(&mut self, last_at: DateTime<Utc>) {
        if let Some(newest) = self.recent.back().copied() {
            self.forget_before(newest);
        }
        self.last_at = self.last_at.max(last_at);
    }

    /// Counts its tickets again from the times of those it holds now (after a correction),
    /// as a new revision.
    pub fn recount(&mut self, times: &[DateTime<Utc>]) {
        self.recent.clear();
        for at in times {
            self.record(*at);
        }
        self.revision += 1;
    }

    /// Computes its centroid and spreads again from its tickets' embeddings and some of the
    /// intent's usual tickets' (after tickets left or joined it). Without embeddings the
    /// centroid is empty and similarity says nothing (the rates decide).
    pub fn remodel(&mut self, members: &[Embedding], usual: &[Embedding]) {
        let members: Vec<&Embedding> = members.iter().filter(|e| !e.is_empty()).collect();
        let Some(c) = centroid(members.iter().copied()).filter(|c| !c.is_empty()) else {
            self.centroid = Embedding::new(&[]);
            self.members = Spread {
                mean: 0.0,
                sd: 0.01,
            };
            self.usual = self.members;
            return;
        };
        let spread = Spread::of(&leave_one_out(&members)).unwrap_or(Spread {
            mean: 1.0,
            sd: LONE_SD,
        });
        let usual: Vec<f32> = usual
            .iter()
            .filter(|e| !e.is_empty())
            .map(|e| c.cosine(e))
            .collect();
        self.usual = usual_spread_of(&usual, &spread);
        self.members = spread;
        self.centroid = c;
    }

    /// Counts a ticket at `at` (in time order: an alarm's tickets come after later ones).
    fn record(&mut self, at: DateTime<Utc>) {
        let k = self.recent.partition_point(|t| *t <= at);
        self.recent.insert(k, at);
        self.last_at = self.last_at.max(at);
        self.forget_before(at);
    }

    /// Drops the tickets that no longer count towards its rate at `at`.
    fn forget_before(&mut self, at: DateTime<Utc>) {
        let since = at - Duration::hours(RATE_HOURS);
        while self.recent.front().is_some_and(|t| *t <= since) {
            self.recent.pop_front();
        }
    }
}

/// The log odds that a ticket of the intent is the incident's: its rate beyond the usual one,
/// against the usual one.
fn log_odds(incident_rate: f64, usual_rate: f64) -> f64 {
    ((incident_rate - usual_rate).max(0.01) / usual_rate).ln()
}

/// The log prior odds an alarm gives its window's tickets: the wave's tickets against the
/// usual ones (the given ticket left out of both). The count the history expects is the
/// stream's share of the whole volume, the wave's tickets included, so the usual tickets are
/// that share of the volume without them: with a share `s`, `count = usual + wave` and
/// `expected = s × (volume - wave) + s × wave` (a wave that is most of the volume would
/// otherwise never look more than `(1 - s) / s` to 1).
fn alarm_log_prior(alarm: &Alarm) -> f64 {
    let (count, expected) = (alarm.count as f64 - 1.0, (alarm.expected - 1.0).max(0.0));
    let share = if alarm.volume > 1 {
        (expected / (alarm.volume - 1) as f64).min(0.99)
    } else {
        0.0
    };
    let wave = ((count - expected) / (1.0 - share)).max(0.5);
    let usual = (expected - share * wave).max(0.05);
    (wave / usual).ln()
}

/// Probability of belonging, from the log prior odds and the cosine's likelihood ratio. The
/// cosine is held between the usual tickets' mean and the members' mean, so the ratio only
/// grows with similarity; when the members are no closer than the usual tickets, similarity
/// says nothing and the prior decides.
fn posterior(log_prior: f64, similarity: f32, members: &Spread, usual: &Spread) -> f64 {
    let log_ratio = if members.mean > usual.mean && similarity.is_finite() {
        let s = similarity.clamp(usual.mean, members.mean);
        members.log_density(s) - usual.log_density(s)
    } else {
        0.0
    };
    1.0 / (1.0 + (-(log_prior + log_ratio)).exp())
}

/// Whether an incident takes tickets like `o` (its intent and language).
fn fits(incident: &TrackedIncident, o: &Observation) -> bool {
    o.chain.contains(&incident.intent)
        && incident.language.as_deref().is_none_or(|l| o.language == l)
}

/// The tickets of an alarm's window that an incident takes (its intent and language, likely
/// and close enough), recorded at their own times: first the alarm's own tickets, by the
/// alarm's odds; then `others`, the window's other tickets of its intent not linked yet (a
/// near-duplicate group's alarm holds only the closest of a wave's tickets), by the incident's
/// rate once it holds the alarm's.
fn take(
    incident: &mut TrackedIncident,
    window: &[&Observation],
    others: &[&Observation],
    alarm: &Alarm,
    bar: (f64, f32),
) -> Vec<(String, Link)> {
    let mut linked: Vec<(String, Link, DateTime<Utc>)> = window
        .iter()
        .filter(|o| fits(incident, o))
        .map(|o| {
            (
                o.id.clone(),
                incident.score_in_alarm(&o.embedding, alarm),
                o.at,
            )
        })
        .filter(|(_, l, _)| passes(l, bar))
        .collect();
    for (_, _, at) in &linked {
        incident.record(*at);
    }
    let more: Vec<(String, Link, DateTime<Utc>)> = others
        .iter()
        .filter(|o| fits(incident, o))
        .map(|o| (o.id.clone(), incident.score(&o.embedding, alarm.at), o.at))
        .filter(|(_, l, _)| passes(l, bar))
        .collect();
    for (_, _, at) in &more {
        incident.record(*at);
    }
    linked.extend(more);
    linked.into_iter().map(|(id, link, _)| (id, link)).collect()
}

/// What an alarm did.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new incident, with the tickets linked to it.
    Opened {
        /// Its id.
        incident: String,
        /// Decision ids linked and their links.
        linked: Vec<(String, Link)>,
    },
    /// An open incident took more tickets.
    Grew {
        /// Its id.
        incident: String,
        /// Decision ids newly linked.
        linked: Vec<(String, Link)>,
    },
    /// The alarm's tickets are too few once the usual ones are left out.
    Ignored,
}

/// The open incidents and how tickets join them.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Open incidents, oldest first.
    pub open: Vec<TrackedIncident>,
    /// Hours without a ticket after which an incident stops taking tickets.
    pub quiet_hours: i64,
    /// Probability from which a ticket is linked.
    pub min_probability: f64,
    /// Tickets an incident needs to open.
    pub min_tickets: usize,
    /// Cosine to an incident's centroid from which a ticket is linked (0: any; not applied
    /// without embeddings).
    pub min_similarity: f32,
}

/// Whether a link clears the (probability, cosine) bar; a cosine of exactly 0 is one without
/// embeddings, which the cosine bar does not apply to.
fn passes(l: &Link, (probability, similarity): (f64, f32)) -> bool {
    l.probability >= probability && (l.similarity >= similarity || l.similarity == 0.0)
}

impl Tracker {
    /// No open incidents.
    pub fn new(quiet_hours: i64, min_probability: f64, min_tickets: usize) -> Self {
        Self {
            open: Vec::new(),
            quiet_hours,
            min_probability,
            min_tickets,
            min_similarity: 0.0,
        }
    }

    fn bar(&self) -> (f64, f32) {
        (self.min_probability, self.min_similarity)
    }

    /// The open incident a routed ticket belongs to, if any (the most likely); the ticket
    /// counts towards its rate.
    pub fn link(
        &mut self,
        chain: &[String],
        language: &str,
        embedding: &Embedding,
        now: DateTime<Utc>,
    ) -> Option<Link> {
        let (k, best) = self.best(chain, language, embedding, now)?;
        self.open[k].record(now);
        Some(best)
    }

    /// The link [`Tracker::link`] would make, changing nothing (a dry run); with the incident.
    pub fn peek(
        &self,
        chain: &[String],
        language: &str,
        embedding: &Embedding,
        now: DateTime<Utc>,
    ) -> Option<(Link, &TrackedIncident)> {
        let (k, best) = self.best(chain, language, embedding, now)?;
        Some((best, &self.open[k]))
    }

    /// The open incident of that id.
    pub fn get(&self, id: &str) -> Option<&TrackedIncident> {
        self.open.iter().find(|i| i.id == id)
    }

    /// Puts `i` in place of the open incident of its id (no change when it is not open).
    pub fn replace(&mut self, i: TrackedIncident) {
        if let Some(mine) = self.open.iter_mut().find(|m| m.id == i.id) {
            *mine = i;
        }
    }

    /// Counts a ticket linked elsewhere (another replica, while routed) towards an open
    /// incident's rate; `false` when that incident is not open here.
    pub fn note(&mut self, incident: &str, at: DateTime<Utc>) -> bool {
        match self.open.iter_mut().find(|i| i.id == incident) {
            Some(i) => {
                i.record(at);
                true
            }
            None => false,
        }
    }

    fn best(
        &self,
        chain: &[String],
        language: &str,
        embedding: &Embedding,
        now: DateTime<Utc>,
    ) -> Option<(usize, Link)> {
        let quiet = Duration::hours(self.quiet_hours);
        self.open
            .iter()
            .enumerate()
            .filter(|(_, i)| now - i.last_at < quiet)
            .filter(|(_, i)| chain.contains(&i.intent))
            .filter(|(_, i)| i.language.as_deref().is_none_or(|l| l == language))
            .map(|(k, i)| (k, i.score(embedding, now)))
            .filter(|(_, l)| passes(l, self.bar()))
            .max_by(|a, b| a.1.probability.total_cmp(&b.1.probability))
    }

    /// Refreshes each open incident's usual rate from the detector; incidents quiet for
    /// `quiet_hours` stop taking tickets and leave: returns their ids.
    pub fn refresh(&mut self, detector: &Detector, now: DateTime<Utc>) -> Vec<String> {
        let quiet = Duration::hours(self.quiet_hours);
        let (gone, open): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|i| now - i.last_at >= quiet);
        self.open = open;
        for i in &mut self.open {
            i.usual_rate = detector.usual_rate(&i.intent, i.language.as_deref(), now);
        }
        gone.into_iter().map(|i| i.id).collect()
    }

    /// Turns an alarm into a new incident (id from `new_id`) or more tickets for an open one:
    /// the alarm's tickets whose odds say they are the wave's, not the intent's usual ones (and,
    /// for a new incident, the window's other tickets of its intent that are likely enough).
    pub fn on_alarm(
        &mut self,
        alarm: &Alarm,
        detector: &Detector,
        new_id: impl FnOnce() -> String,
    ) -> Change {
        let members: HashSet<&String> = alarm.members.iter().collect();
        let window: Vec<&Observation> = detector
            .recent()
            .filter(|o| members.contains(&o.id))
            .collect();
        // A new incident also weighs the window's other tickets (a growing one does not: it
        // took them while they were routed, and some may be tickets people unlinked from it).
        let since = alarm.at - Duration::minutes(alarm.window_minutes);
        let others: Vec<&Observation> = detector
            .recent()
            .filter(|o| o.at > since && o.at <= alarm.at && o.incident.is_none())
            .filter(|o| !members.contains(&o.id))
            .collect();
        // An open incident that would take the alarm's group grows: the most likely one.
        let grows = self
            .open
            .iter()
            .enumerate()
            .filter(|(_, i)| related(&i.intent, alarm.stream.intent()))
            .filter(|(_, i)| {
                i.language.is_none() || i.language.as_deref() == alarm.stream.language()
            })
            .map(|(k, i)| (k, i.score_in_alarm(&alarm.centroid, alarm).probability))
            .filter(|(_, p)| *p >= 0.5)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, _)| k);
        if let Some(k) = grows {
            let bar = self.bar();
            let i = &mut self.open[k];
            let linked = take(i, &window, &[], alarm, bar);
            let incident = i.id.clone();
            return Change::Grew { incident, linked };
        }
        let intent = narrowed(alarm.stream.intent(), &window);
        let tickets: Vec<&Observation> = window
            .iter()
            .copied()
            .filter(|o| o.chain.contains(&intent))
            .collect();
        let Some(model) = self.model(alarm, &intent, detector, &tickets) else {
            return Change::Ignored;
        };
        let mut tracked = TrackedIncident {
            id: new_id(),
            ..model
        };
        // It opens on a core of tickets that are surely the wave's: a rise that does not stand
        // out from the intent's usual tickets (a busier day for the intent, no common cause in
        // sight) links nothing, instead of half its intent's tickets.
        let core = window_core(&tracked, &tickets, alarm);
        if core < self.min_tickets {
            return Change::Ignored;
        }
        let linked = take(&mut tracked, &tickets, &others, alarm, self.bar());
        // The configured bar (a higher probability or a cosine) may take fewer than the core.
        if linked.len() < self.min_tickets {
            return Change::Ignored;
        }
        let incident = tracked.id.clone();
        self.open.push(tracked);
        Change::Opened { incident, linked }
    }

    /// The incident an alarm describes: the centroid of its likely tickets (the excess over
    /// what the history expects), how close they and the usual tickets come to it.
    fn model(
        &self,
        alarm: &Alarm,
        intent: &str,
        detector: &Detector,
        tickets: &[&Observation],
    ) -> Option<TrackedIncident> {
        let log_prior = alarm_log_prior(alarm);
        let mut members: Vec<&Embedding> = tickets.iter().map(|o| &o.embedding).collect();
        let mut c = centroid(members.iter().copied())?;
        let mut own = leave_one_out(&members);
        let mut spread = Spread::of(&own)?;
        let mut usual = usual_spread(detector, intent, alarm.stream.language(), &c, &spread);
        // Two rounds: keep the likely tickets, re-centre on them.
        for _ in 0..2 {
            let kept: Vec<&Embedding> = members
                .iter()
                .zip(&own)
                .filter(|(_, s)| posterior(log_prior, **s, &spread, &usual) >= 0.5)
                .map(|(e, _)| *e)
                .collect();
            if kept.len() < 4 {
                break;
            }
            c = centroid(kept.iter().copied())?;
            own = leave_one_out(&kept);
            spread = Spread::of(&own)?;
            usual = usual_spread(detector, intent, alarm.stream.language(), &c, &spread);
            members = kept;
        }
        Some(TrackedIncident {
            id: String::new(),
            intent: intent.to_string(),
            language: alarm.stream.language().map(str::to_string),
            centroid: c,
            members: spread,
            usual,
            usual_rate: detector.usual_rate(intent, alarm.stream.language(), alarm.at),
            recent: VecDeque::new(),
            opened_at: alarm.at,
            last_at: alarm.at,
            revision: 0,
        })
    }
}

/// The probability from which an alarm's ticket is surely its wave's (chosen on the
/// simulator: 0.8 let more false alarms open, 0.9 missed more incidents).
const CORE_PROBABILITY: f64 = 0.85;

/// How many of an alarm's tickets are surely the new incident's.
fn window_core(incident: &TrackedIncident, window: &[&Observation], alarm: &Alarm) -> usize {
    window
        .iter()
        .filter(|o| fits(incident, o))
        .filter(|o| incident.score_in_alarm(&o.embedding, alarm).probability >= CORE_PROBABILITY)
        .count()
}

/// The spread of an incident's only ticket around itself: tickets about as close as two
/// wordings of one message join it.
const LONE_SD: f32 = 0.05;

/// How close the intent's usual tickets (in the language, if one) come to `c`.
fn usual_spread(
    detector: &Detector,
    intent: &str,
    language: Option<&str>,
    c: &Embedding,
    members: &Spread,
) -> Spread {
    usual_spread_of(&detector.usual_similarities(intent, language, c), members)
}

/// The spread of the usual tickets' cosines; with too few of them, a spread just below the
/// members' (similarity then says little and the rates decide).
fn usual_spread_of(usual: &[f32], members: &Spread) -> Spread {
    if usual.len() >= 8 {
        if let Some(s) = Spread::of(usual) {
            return s;
        }
    }
    Spread {
        mean: members.mean - members.sd,
        sd: members.sd,
    }
}

/// The intent an alarm's incident takes: the alarm's, or the one intent under it that holds
/// two thirds of the window's tickets (a parent's alarm is usually one child's wave).
fn narrowed(intent: &str, window: &[&Observation]) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for o in window {
        if let Some(leaf) = o.leaf() {
            *counts.entry(leaf).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter(|(leaf, n)| *leaf != intent && 3 * n >= 2 * window.len())
        .map(|(leaf, _)| leaf.to_string())
        .next()
        .unwrap_or_else(|| intent.to_string())
}

pub use crate::intent::related;

/// The deepest intent both are or are under (`billing.refund` and `billing.invoice`:
/// `billing`); `None` when they share none.
pub fn common_intent(a: &str, b: &str) -> Option<String> {
    let (a, b) = (chain_of(a), chain_of(b));
    a.into_iter()
        .zip(b)
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::detect::tests::{obs, start, two_weeks, vector, Lcg, LEAVES};
    use crate::incident::detect::{DetectorSettings, Stream};

    fn spread(mean: f32, sd: f32) -> Spread {
        Spread { mean, sd }
    }

    #[test]
    fn probability_grows_with_similarity_and_with_the_incident_rate() {
        let (members, usual) = (spread(0.9, 0.02), spread(0.8, 0.04));
        let p = |prior: f64, s: f32| posterior(prior.ln(), s, &members, &usual);
        assert!(p(1.0, 0.95) > 0.95);
        assert!(p(1.0, 0.7) < 0.01);
        let mut last = 0.0;
        for s in [0.6, 0.75, 0.8, 0.85, 0.88, 0.9, 0.95, 1.0] {
            assert!(p(1.0, s) >= last, "not monotone at {s}");
            last = p(1.0, s);
        }
        // A middling ticket belongs during a wave (rate 20 against 1) and not after it.
        assert!(p(20.0, 0.86) > 0.5 && p(0.05, 0.86) < 0.5);
        // Members no closer than the usual tickets: similarity says nothing.
        let flat = |s: f32| posterior(0.0, s, &spread(0.8, 0.02), &usual);
        assert_eq!(flat(0.2), 0.5);
        assert_eq!(flat(0.99), 0.5);
        assert_eq!(p(1.0, f32::NAN), 0.5);
        assert_eq!(Spread::of(&[0.5]), None);
        assert_eq!(Spread::of(&[0.5, 0.5]).unwrap().sd, 0.01);
    }

    #[test]
    fn an_alarm_opens_an_incident_that_links_its_tickets_and_then_grows() {
        let mut rng = Lcg(5);
        let (mut d, _, mut id) = two_weeks(&mut rng);
        let mut tracker = Tracker::new(48, 0.5, 4);
        let centre: Vec<f32> = (0..16).map(|i| if i == 2 { 1.0 } else { 0.0 }).collect();
        let t = start() + Duration::days(14);
        let mut change = None;
        let mut k = 0;
        while change.is_none() && k < 12 {
            let e = vector(&mut rng, Some(&centre), 0.1);
            let at = t + Duration::minutes(3 * k);
            assert!(tracker
                .link(&["b".into(), "b.x".into()], "en", &e, at)
                .is_none());
            if let Some(alarm) = d.observe(obs(id, at, "b.x", e)) {
                change = Some(tracker.on_alarm(&alarm, &d, || "inc-1".into()));
            }
            id += 1;
            k += 1;
        }
        let Some(Change::Opened { incident, linked }) = change else {
            panic!("no incident opened: {change:?}");
        };
        assert_eq!(incident, "inc-1");
        assert!(linked.len() >= 4, "{linked:?}");
        let ids: Vec<String> = linked.iter().map(|(m, _)| m.clone()).collect();
        d.link(&ids, &incident);
        let inc = tracker.open[0].clone();
        assert!(inc.intent.starts_with('b'), "{}", inc.intent);
        // A close ticket of the intent links, with its reasons; a far one and one of another
        // intent do not.
        let at = t + Duration::minutes(40);
        let chain = vec!["b".to_string(), "b.x".to_string()];
        let close = vector(&mut rng, Some(&centre), 0.1);
        let link = tracker
            .link(&chain, "en", &close, at)
            .expect("a close ticket links");
        assert!(link.probability >= 0.5 && link.similarity > 0.8);
        assert!(link
            .explain(&inc)
            .starts_with("linked to incident inc-1: cosine 0."));
        let far = vector(&mut rng, None, 1.0);
        assert!(tracker.link(&chain, "en", &far, at).is_none());
        // A cosine bar above the ticket's refuses it, whatever the odds.
        tracker.min_similarity = link.similarity + 0.001;
        assert!(tracker.peek(&chain, "en", &close, at).is_none());
        tracker.min_similarity = link.similarity;
        assert!(tracker.peek(&chain, "en", &close, at).is_some());
        tracker.min_similarity = 0.0;
        let other = vec!["c".to_string(), "c.z".to_string()];
        assert!(tracker.link(&other, "en", &close, at).is_none());
        // An incident limited to a language takes no ticket in another.
        tracker.open[0].language = Some("ru".into());
        assert!(tracker.link(&chain, "en", &close, at).is_none());
        assert!(tracker.link(&chain, "ru", &close, at).is_some());
        // After two quiet days the incident takes no more tickets, and leaves.
        let later = at + Duration::hours(49);
        assert!(tracker.link(&chain, "ru", &close, later).is_none());
        assert_eq!(tracker.refresh(&d, later), vec!["inc-1".to_string()]);
        assert!(tracker.open.is_empty());
    }

    #[test]
    fn without_embeddings_a_wave_opens_an_incident_on_counts_and_links_by_rate() {
        let mut rng = Lcg(9);
        let leaves: Vec<String> = LEAVES.iter().map(|s| s.to_string()).collect();
        let mut d = Detector::new(DetectorSettings::default(), &leaves);
        let none = || Embedding::new(&[]);
        let mut id = 0;
        for minute in (0..14 * 24 * 60).step_by(15) {
            let leaf = LEAVES[(rng.next() * LEAVES.len() as f64) as usize];
            let alarm = d.observe(obs(id, start() + Duration::minutes(minute), leaf, none()));
            assert!(alarm.is_none(), "the background alone: {alarm:?}");
            id += 1;
        }
        let mut tracker = Tracker::new(48, 0.5, 4);
        let t = start() + Duration::days(14);
        // The first alarms may be too weak to open on counts alone (odds under 4 to 1 for
        // each ticket); the wave goes on until one is strong enough.
        let mut opened = None;
        for k in 0..20 {
            let at = t + Duration::minutes(3 * k);
            if let Some(alarm) = d.observe(obs(id, at, "b.x", none())) {
                assert!(!matches!(alarm.stream, Stream::Cluster { .. }), "{alarm:?}");
                let change = tracker.on_alarm(&alarm, &d, || "inc-1".into());
                if change != Change::Ignored {
                    opened = Some(change);
                    break;
                }
            }
            id += 1;
        }
        let Some(Change::Opened { linked, .. }) = opened else {
            panic!("no incident opened on counts: {opened:?}");
        };
        assert!(linked.len() >= 4, "{linked:?}");
        // During the wave a ticket of the intent links by the rates alone.
        let chain = vec!["b".to_string(), "b.x".to_string()];
        let link = tracker.link(&chain, "en", &none(), t + Duration::minutes(40));
        assert!(link.is_some_and(|l| l.probability >= 0.5 && l.similarity == 0.0));
    }

    #[test]
    fn a_parent_alarm_narrows_to_the_child_holding_the_wave() {
        let o = |id, leaf| obs(id, start(), leaf, vector(&mut Lcg(id as u64), None, 1.0));
        let mostly: Vec<Observation> = (0..6)
            .map(|i| o(i, if i < 4 { "b.x" } else { "b.y" }))
            .collect();
        let refs: Vec<&Observation> = mostly.iter().collect();
        assert_eq!(narrowed("b", &refs), "b.x");
        let even: Vec<Observation> = (0..6)
            .map(|i| o(i, if i < 3 { "b.x" } else { "b.y" }))
            .collect();
        let refs: Vec<&Observation> = even.iter().collect();
        assert_eq!(narrowed("b", &refs), "b");
    }

    #[test]
    fn remodelling_recentres_on_the_tickets_left_and_keeps_the_rate() {
        let mut rng = Lcg(3);
        let a: Vec<f32> = (0..16).map(|i| if i == 1 { 1.0 } else { 0.0 }).collect();
        let b: Vec<f32> = (0..16).map(|i| if i == 7 { 1.0 } else { 0.0 }).collect();
        let near = |rng: &mut Lcg, c: &[f32]| vector(rng, Some(c), 0.1);
        let mixed: Vec<Embedding> = (0..12)
            .map(|k| near(&mut rng, if k % 2 == 0 { &a } else { &b }))
            .collect();
        let usual: Vec<Embedding> = (0..20).map(|_| vector(&mut rng, None, 1.0)).collect();
        let mut i = TrackedIncident {
            recent: VecDeque::from([start()]),
            ..tracked_for_tests()
        };
        i.remodel(&mixed, &usual);
        let half = i.members.mean;
        // The tickets about `b` leave: the centroid moves to `a` and its tickets come closer.
        let only_a: Vec<Embedding> = mixed.iter().step_by(2).cloned().collect();
        i.remodel(&only_a, &usual);
        assert!(i.members.mean > half + 0.1, "{} vs {half}", i.members.mean);
        assert!(i.centroid.cosine(&Embedding::new(&a)) > 0.9);
        assert!(i.usual.mean < i.members.mean);
        assert_eq!((i.usual_rate, i.recent.len()), (1.5, 1));
        // One ticket left: a tight spread around it; none with an embedding: the rates decide.
        i.remodel(&only_a[..1], &usual);
        assert_eq!(i.members.sd, LONE_SD);
        i.remodel(&[Embedding::new(&[])], &usual);
        assert!(i.centroid.is_empty());
        assert_eq!(posterior(0.0, 0.0, &i.members, &i.usual), 0.5);
        // Another picture of it is adopted without its rate.
        let mut other = i.clone();
        other.intent = "b".into();
        other.usual_rate = 9.0;
        other.remodel(&only_a, &usual);
        i.adopt_model(&other);
        assert_eq!((i.intent.as_str(), i.usual_rate), ("b", 1.5));
        assert_eq!(i.centroid, other.centroid);
    }

    #[test]
    fn two_pictures_of_an_incident_count_a_batch_once_and_a_merge_adds() {
        let t = start();
        let at = |m: i64| t + Duration::minutes(m);
        let picture = |times: &[i64], revision: u64| TrackedIncident {
            recent: times.iter().map(|m| at(*m)).collect(),
            last_at: at(*times.last().unwrap()),
            revision,
            ..tracked_for_tests()
        };
        // Three tickets of one batch share a time: the larger count at each time stays.
        let mut stored = picture(&[0, 5, 5, 5], 0);
        stored.absorb_rate(&picture(&[0, 5, 5, 9], 0));
        let counted: Vec<DateTime<Utc>> = stored.recent.iter().copied().collect();
        assert_eq!(counted, [at(0), at(5), at(5), at(5), at(9)]);
        assert_eq!(stored.last_at, at(9));
        // A picture from before a recount adds only its tickets after the newest.
        let mut recounted = picture(&[0], 0);
        recounted.recount(&[at(1)]);
        recounted.absorb_rate(&picture(&[0, 5, 5], 0));
        let counted: Vec<DateTime<Utc>> = recounted.recent.iter().copied().collect();
        assert_eq!(
            (counted, recounted.revision),
            (vec![at(1), at(5), at(5)], 1)
        );
        // A merge adds the other incident's tickets, the same times included.
        let mut merged = picture(&[0, 5], 0);
        merged.add_rate(&picture(&[5, 7], 0));
        assert_eq!(merged.recent.len(), 4);
        // Tickets older than the rate's hours go.
        let mut old = picture(&[0], 0);
        old.add_rate(&picture(&[7 * 60], 0));
        assert_eq!(old.recent.len(), 1);
    }

    /// Two weeks of background, then `tickets` of `b.x` in the last `minutes` (their ids
    /// returned), and an alarm of `stream` over the first `members` of them with these counts.
    fn alarm_over(
        rng: &mut Lcg,
        tickets: &[Embedding],
        members: usize,
        stream: Stream,
        (count, volume, expected): (u64, u64, f64),
    ) -> (Detector, Alarm, Vec<String>) {
        let (mut d, _, mut id) = two_weeks(rng);
        let t = start() + Duration::days(14);
        let mut ids = Vec::new();
        for (k, e) in tickets.iter().enumerate() {
            d.observe(obs(id, t + Duration::minutes(k as i64), "b.x", e.clone()));
            ids.push(id.to_string());
            id += 1;
        }
        let window: Vec<&Observation> = d.recent().filter(|o| ids.contains(&o.id)).collect();
        let alarm = Alarm {
            stream,
            at: t + Duration::minutes(tickets.len() as i64),
            window_minutes: 60,
            count,
            volume,
            expected,
            p_value: 1e-9,
            threshold: 1e-6,
            members: ids[..members].to_vec(),
            centroid: centroid(window[..members].iter().map(|o| &o.embedding)).unwrap(),
        };
        (d, alarm, ids)
    }

    #[test]
    fn a_rise_opens_an_incident_only_when_its_tickets_share_a_cause() {
        // The same counts (20 where 10 were expected: each ticket is the wave's at odds of
        // about 1 to 1 by the counts alone), once with tickets like the intent's usual ones and
        // once with tickets close to one another.
        let counts = (20, 100, 10.0);
        let stream = Stream::Intent {
            intent: "b.x".into(),
        };
        let mut rng = Lcg(11);
        let diffuse: Vec<Embedding> = (0..20).map(|_| vector(&mut rng, None, 1.0)).collect();
        let (d, alarm, _) = alarm_over(&mut rng, &diffuse, 20, stream.clone(), counts);
        let mut tracker = Tracker::new(48, 0.5, 4);
        assert_eq!(
            tracker.on_alarm(&alarm, &d, || "inc".into()),
            Change::Ignored
        );
        assert!(tracker.open.is_empty());

        let centre: Vec<f32> = (0..16).map(|i| if i == 4 { 1.0 } else { 0.0 }).collect();
        let close: Vec<Embedding> = (0..20)
            .map(|_| vector(&mut rng, Some(&centre), 0.15))
            .collect();
        let (d, alarm, _) = alarm_over(&mut rng, &close, 20, stream, counts);
        let change = tracker.on_alarm(&alarm, &d, || "inc".into());
        let Change::Opened { linked, .. } = change else {
            panic!("tickets with a common cause: {change:?}");
        };
        assert!(linked.len() >= 15, "{}", linked.len());
    }

    #[test]
    fn an_incident_also_takes_its_windows_other_close_tickets() {
        // A near-duplicate group's alarm holds 5 of a wave's 8 tickets; the window also holds
        // 3 more of them and 3 usual tickets of the intent, none in the alarm.
        let mut rng = Lcg(13);
        let centre: Vec<f32> = (0..16).map(|i| if i == 9 { 1.0 } else { 0.0 }).collect();
        let mut tickets: Vec<Embedding> = (0..8)
            .map(|_| vector(&mut rng, Some(&centre), 0.15))
            .collect();
        tickets.extend((0..3).map(|_| vector(&mut rng, None, 1.0)));
        let stream = Stream::Cluster {
            intent: "b.x".into(),
        };
        let (d, alarm, ids) = alarm_over(&mut rng, &tickets, 5, stream, (5, 20, 1.0));
        let mut tracker = Tracker::new(48, 0.5, 4);
        let change = tracker.on_alarm(&alarm, &d, || "inc".into());
        let Change::Opened { linked, .. } = change else {
            panic!("no incident: {change:?}");
        };
        let mut got: Vec<&String> = linked.iter().map(|(m, _)| m).collect();
        got.sort();
        let mut want: Vec<&String> = ids[..8].iter().collect();
        want.sort();
        assert_eq!(got, want);
    }

    fn tracked_for_tests() -> TrackedIncident {
        TrackedIncident {
            id: "inc".into(),
            intent: "b.x".into(),
            language: None,
            centroid: Embedding::new(&[]),
            members: spread(0.0, 0.01),
            usual: spread(0.0, 0.01),
            usual_rate: 1.5,
            recent: VecDeque::new(),
            opened_at: start(),
            last_at: start(),
            revision: 0,
        }
    }

    #[test]
    fn common_intents() {
        let c = |a, b| common_intent(a, b);
        assert_eq!(
            c("billing.refund", "billing.invoice").as_deref(),
            Some("billing")
        );
        assert_eq!(c("billing.refund", "billing").as_deref(), Some("billing"));
        assert_eq!(
            c("billing.refund", "billing.refund").as_deref(),
            Some("billing.refund")
        );
        assert_eq!(c("billing.refund", "login.reset"), None);
    }
}
