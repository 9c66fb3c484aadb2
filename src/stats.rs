//! Traffic statistics over the decision log: tickets per day by intent domain and by team, the
//! share of `unknown` and the distribution of confidence (the console's overview,
//! `GET /v1/stats`). A pure function of the log's rows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// The share of `unknown` on one day.
#[derive(Serialize, ToSchema)]
pub struct UnknownShare {
    /// `YYYY-MM-DD` (UTC).
    day: String,
    /// Tickets that day.
    tickets: u64,
    /// Of which `unknown`.
    unknown: u64,
    /// unknown / tickets.
    share: f64,
}

/// Traffic over a period (`GET /v1/stats`).
#[derive(Serialize, ToSchema)]
pub struct Stats {
    /// The period, in days back from now.
    days: i64,
    /// Tickets in the period.
    tickets: usize,
    /// Per day (`YYYY-MM-DD`): tickets per intent domain.
    by_intent: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per day: tickets per team (`(none)` without one).
    by_team: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per day: the share of `unknown`.
    unknown: Vec<UnknownShare>,
    /// Tickets per tenth of top-1 probability (10 bins, 0-0.1 first).
    confidence_histogram: [u64; 10],
}

impl Stats {
    /// The statistics of the decisions of the last `days` days: `(decided_at, intent, team,
    /// confidence)` rows as the store gives them.
    pub fn of(days: i64, rows: &[(DateTime<Utc>, String, Option<String>, f64)]) -> Self {
        let mut by_intent: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut by_team: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut unknown_by_day: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut confidence = [0u64; 10];
        for (at, intent, team, conf) in rows {
            let day = at.format("%Y-%m-%d").to_string();
            let domain = intent.split('.').next().unwrap_or_default().to_string();
            *by_intent
                .entry(day.clone())
                .or_default()
                .entry(domain)
                .or_default() += 1;
            let team = team.clone().unwrap_or_else(|| "(none)".into());
            *by_team
                .entry(day.clone())
                .or_default()
                .entry(team)
                .or_default() += 1;
            let u = unknown_by_day.entry(day).or_default();
            u.0 += 1;
            u.1 += u64::from(intent == crate::intent::UNKNOWN);
            confidence[((conf * 10.0) as usize).min(9)] += 1;
        }
        let unknown = unknown_by_day
            .into_iter()
            .map(|(day, (tickets, unknown))| UnknownShare {
                day,
                tickets,
                unknown,
                share: unknown as f64 / tickets as f64,
            })
            .collect();
        Self {
            days,
            tickets: rows.len(),
            by_intent,
            by_team,
            unknown,
            confidence_histogram: confidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_day_domain_team_unknown_and_confidence() {
        let row = |at: &str, intent: &str, team: Option<&str>, c: f64| {
            (
                at.parse::<DateTime<Utc>>().unwrap(),
                intent.to_string(),
                team.map(str::to_string),
                c,
            )
        };
        let rows = [
            row(
                "2026-12-05T10:00:00Z",
                "billing.refund",
                Some("billing"),
                0.95,
            ),
            row(
                "2026-12-05T11:00:00Z",
                "billing.invoice",
                Some("billing"),
                0.55,
            ),
            row("2026-12-06T09:00:00Z", "unknown", None, 0.2),
            row("2026-12-06T09:30:00Z", "tech.outage", Some("tech"), 1.0),
        ];
        let s = Stats::of(14, &rows);
        assert_eq!(s.tickets, 4);
        assert_eq!(s.by_intent["2026-12-05"]["billing"], 2);
        assert_eq!(s.by_team["2026-12-06"]["(none)"], 1);
        assert_eq!(s.unknown[1].unknown, 1);
        assert_eq!(s.unknown[1].share, 0.5);
        assert_eq!(s.confidence_histogram, [0, 0, 1, 0, 0, 1, 0, 0, 0, 2]);
    }
}
