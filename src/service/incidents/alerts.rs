//! Incident alerts: queued with the change they tell of (a durable outbox), delivered by any
//! replica under a lease, signed like every webhook we send
//! (`X-Intent-Router-Signature: t=…,v1=…`), retried with backoff until accepted or given up.

use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;

use super::IncidentService;
use crate::connector::{sign, Secret};
use crate::service::connectors::{jittered_backoff, parse_retry_after};
use crate::store::{Alert, AlertOutcome, AlertState, StoreError};

/// Where incident alerts go.
#[derive(Debug, Clone)]
pub struct AlertTarget {
    /// The receiver's URL.
    pub url: String,
    /// Signing secrets (the first signs; two while rotating).
    pub secrets: Vec<Secret>,
    /// Attempts before an alert is given up.
    pub max_attempts: u32,
    /// One request's time limit.
    pub timeout: Duration,
}

/// Alerts claimed at a time.
const CLAIM: i64 = 16;

/// How often a replica looks for due alerts.
const POLL: Duration = Duration::from_secs(1);

impl IncidentService {
    /// Sends due alerts, now and every second, while the process runs.
    pub(super) fn spawn_alerts(&self) {
        let Some(target) = self.policy.alerts.clone() else {
            return;
        };
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                if service.alert_round(&target).await == 0 {
                    tokio::time::sleep(POLL).await;
                }
            }
        });
    }

    /// Claims due alerts and sends them side by side; returns how many were claimed.
    pub async fn alert_round(&self, target: &AlertTarget) -> usize {
        let lease = crate::store::now()
            + chrono::Duration::from_std(target.timeout * 4 + Duration::from_secs(30))
                .expect("a lease of minutes fits");
        let claimed = match self.store.claim_alerts(lease, CLAIM).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("claiming incident alerts: {e}");
                tokio::time::sleep(POLL).await;
                return 0;
            }
        };
        let n = claimed.len();
        let mut work = JoinSet::new();
        for a in claimed {
            let (me, target) = (self.clone(), target.clone());
            work.spawn(async move {
                let outcome = me.deliver(&target, &a).await;
                me.metrics.incident_alert(match &outcome {
                    AlertOutcome::Delivered(_) => "delivered",
                    AlertOutcome::Retry { .. } => "retry",
                    AlertOutcome::Dead { .. } => "dead",
                });
                if let AlertOutcome::Dead { error, .. } = &outcome {
                    tracing::error!(alert = %a.id, incident = %a.incident_id, "incident alert given up: {error}");
                }
                if let Err(e) = me.store.finish_alert(&a.id, a.next_at, &outcome).await {
                    tracing::error!(alert = %a.id, "recording an alert's delivery: {e}");
                }
            });
        }
        while work.join_next().await.is_some() {}
        n
    }

    /// One attempt at an alert.
    async fn deliver(&self, target: &AlertTarget, a: &Alert) -> AlertOutcome {
        let body = serde_json::to_vec(&a.body).expect("JSON serialises");
        let now = Utc::now();
        let mut req = self
            .http
            .post(&target.url)
            .timeout(target.timeout)
            .set("Content-Type", "application/json")
            .set("X-Intent-Router-Delivery", &a.id)
            .set("X-Intent-Router-Event", &a.event);
        if let Some(secret) = target.secrets.first() {
            let signature = sign::sign(secret.as_ref(), now.timestamp(), &body);
            req = req.set(sign::SIGNATURE_HEADER, &signature);
        }
        let sent = tokio::task::spawn_blocking(move || match req.send_bytes(&body) {
            // Redirects are not followed (see the client): a 3xx is an answer, not a delivery.
            Ok(r) if (200..300).contains(&r.status()) => Ok(r.status()),
            Ok(r) => {
                let to = r.header("Location").unwrap_or("nowhere");
                Err(Failed {
                    status: Some(r.status()),
                    retry_after: None,
                    error: format!(
                        "answered {} to {to}: set the URL the alerts end at",
                        r.status()
                    ),
                })
            }
            Err(ureq::Error::Status(status, r)) => {
                let retry_after = r.header("Retry-After").and_then(parse_retry_after);
                let text: String = r
                    .into_string()
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                Err(Failed {
                    status: Some(status),
                    retry_after,
                    error: format!("answered {status}: {}", text.trim()),
                })
            }
            Err(ureq::Error::Transport(t)) => Err(Failed {
                status: None,
                retry_after: None,
                error: t.to_string(),
            }),
        })
        .await
        .unwrap_or_else(|e| {
            Err(Failed {
                status: None,
                retry_after: None,
                error: format!("the request's task failed: {e}"),
            })
        });
        match sent {
            Ok(status) => AlertOutcome::Delivered(status.into()),
            Err(f) => settle(target, a, f),
        }
    }

    /// Alerts, newest first, optionally in one state.
    pub async fn alerts(
        &self,
        state: Option<AlertState>,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        self.store.alerts(state, limit).await
    }

    /// Sends a dead alert again.
    pub async fn retry_alert(&self, id: &str) -> Result<Alert, StoreError> {
        self.store.retry_alert(id).await
    }
}

/// A failed attempt.
struct Failed {
    /// The receiver's status, if it answered.
    status: Option<u16>,
    /// How long the receiver asked us to wait.
    retry_after: Option<Duration>,
    /// What happened.
    error: String,
}

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How a failed attempt ends: given up for an answer that will not change by itself (a
/// malformed or refused body, a receiver gone for good, a redirect) or once the attempts are
/// used up; else tried again after the backoff, or the receiver's `Retry-After` when longer (a
/// receiver down, restarting, being deployed, or refusing a signature while its secret is
/// rotated).
fn settle(target: &AlertTarget, a: &Alert, f: Failed) -> AlertOutcome {
    let error = format!("POST {}: {}", target.url, f.error);
    let permanent = f
        .status
        .is_some_and(|s| matches!(s, 300..=399 | 400 | 405 | 410 | 413 | 422));
    let status = f.status.map(i64::from);
    if permanent {
        return AlertOutcome::Dead { status, error };
    }
    if a.attempts >= i64::from(target.max_attempts) {
        return AlertOutcome::Dead {
            status,
            error: format!("gave up after {} attempts; the last: {error}", a.attempts),
        };
    }
    let backoff = jittered_backoff(a.attempts);
    let wait = f
        .retry_after
        .map_or(backoff, |d| d.min(MAX_RETRY_AFTER).max(backoff));
    AlertOutcome::Retry {
        at: crate::store::now()
            + chrono::Duration::from_std(wait).expect("a wait of an hour at most fits"),
        status,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(attempts: i64) -> Alert {
        Alert {
            id: "a".into(),
            incident_id: "i".into(),
            event: "incident.opened".into(),
            body: serde_json::json!({}),
            state: AlertState::Pending,
            attempts,
            next_at: Utc::now(),
            created_at: Utc::now(),
            finished_at: None,
            last_status: None,
            last_error: None,
        }
    }

    #[test]
    fn a_failed_alert_is_retried_unless_the_answer_is_final_or_the_attempts_are_used_up() {
        let target = AlertTarget {
            url: "https://ops.example/hook".into(),
            secrets: vec![],
            max_attempts: 3,
            timeout: Duration::from_secs(1),
        };
        let failed = |status: Option<u16>, retry_after: Option<u64>| Failed {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            error: "no".into(),
        };
        let dead = |o: &AlertOutcome| matches!(o, AlertOutcome::Dead { .. });
        for status in [302, 400, 410, 422] {
            assert!(
                dead(&settle(&target, &alert(1), failed(Some(status), None))),
                "{status}"
            );
        }
        for status in [None, Some(401), Some(404), Some(429), Some(503)] {
            let o = settle(&target, &alert(1), failed(status, None));
            assert!(matches!(o, AlertOutcome::Retry { .. }), "{status:?}: {o:?}");
        }
        let last = settle(&target, &alert(3), failed(Some(503), None));
        let AlertOutcome::Dead { error, status } = last else {
            panic!("{last:?}")
        };
        assert_eq!(status, Some(503));
        assert!(
            error.starts_with(
                "gave up after 3 attempts; the last: POST https://ops.example/hook: no"
            ),
            "{error}"
        );
        // The receiver's Retry-After when longer than the backoff, up to an hour.
        let wait =
            |retry_after| match settle(&target, &alert(1), failed(Some(429), Some(retry_after))) {
                AlertOutcome::Retry { at, .. } => (at - crate::store::now()).num_seconds(),
                o => panic!("{o:?}"),
            };
        assert!((595..=600).contains(&wait(600)));
        assert!((3595..=3600).contains(&wait(86_400)));
    }
}
