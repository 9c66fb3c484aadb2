//! Prometheus metrics of the service: requests and latency per endpoint, inference queue depth,
//! batch sizes and inference time, decisions per team and intent, the active rules version,
//! connectors' events and write-backs, NATS messages, and incidents (opened, live, linked,
//! alerts).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    team: String,
    intent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabels {
    connector: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn stage_histogram() -> Histogram {
    // 20 µs .. ~10 s: tokenising and the rules take microseconds.
    Histogram::new(exponential_buckets(0.00002, 2.5, 15))
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<EndpointLabels>,
    queue_depth: Gauge,
    batch_size: Histogram,
    inference_seconds: Histogram,
    rechecked: Counter,
    stages: HistogramFamily<StageLabels>,
    decisions: Family<DecisionLabels, Counter>,
    rules_version: Gauge,
    model: Family<ModelLabels, Gauge>,
    connector_events: Family<ConnectorLabels, Counter>,
    write_backs: Family<ConnectorLabels, Counter>,
    queue_messages: Family<OutcomeLabels, Counter>,
    incidents_opened: Counter,
    incidents_live: Gauge,
    incident_links: Family<OutcomeLabels, Counter>,
    incident_alerts: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("intent_router");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint, method and status",
            requests.clone(),
        );
        let latency: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by endpoint",
            latency.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "inference_queue_depth",
            "Texts waiting for the inference worker",
            queue_depth.clone(),
        );
        let batch_size = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        registry.register(
            "inference_batch_size",
            "Texts per encoder batch",
            batch_size.clone(),
        );
        let inference_seconds = latency_histogram();
        registry.register(
            "inference_duration_seconds",
            "Encoder + head time per batch",
            inference_seconds.clone(),
        );
        let rechecked = Counter::default();
        registry.register(
            "inference_rechecked_texts",
            "Texts encoded a second time, with refined int8 arithmetic, because their first \
             classification was a near tie",
            rechecked.clone(),
        );
        let stages: HistogramFamily<StageLabels> = Family::new_with_constructor(stage_histogram);
        registry.register(
            "stage_duration_seconds",
            "Routing time by stage (tokenize, queue, encoder, rules, store, total) per request",
            stages.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Routing decisions by team and intent",
            decisions.clone(),
        );
        let rules_version = Gauge::default();
        registry.register(
            "rules_version",
            "Version number of the active rules",
            rules_version.clone(),
        );
        let model = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_info",
            "The active model version (value 1)",
            model.clone(),
        );
        let connector_events = Family::<ConnectorLabels, Counter>::default();
        registry.register(
            "connector_events",
            "Helpdesk webhooks by connector and outcome (accepted, duplicate, refused)",
            connector_events.clone(),
        );
        let write_backs = Family::<ConnectorLabels, Counter>::default();
        registry.register(
            "connector_write_backs",
            "Write-back attempts by connector and outcome (delivered, retry, superseded, dead)",
            write_backs.clone(),
        );
        let queue_messages = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "nats_messages",
            "NATS queue messages by outcome (routed, replayed, retried, dead_lettered)",
            queue_messages.clone(),
        );
        let incidents_opened = Counter::default();
        registry.register(
            "incidents_opened",
            "Incidents the detector opened (on the replica that watches)",
            incidents_opened.clone(),
        );
        let incidents_live = Gauge::default();
        registry.register(
            "incidents_live",
            "Incidents this replica links tickets to (open or acknowledged, not quiet)",
            incidents_live.clone(),
        );
        let incident_links = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "incident_links",
            "Tickets linked to an incident while routed on this replica (outcome: routing)",
            incident_links.clone(),
        );
        let incident_alerts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "incident_alerts",
            "Incident alert attempts by outcome (delivered, retry, dead)",
            incident_alerts.clone(),
        );
        Self {
            incidents_opened,
            incidents_live,
            incident_links,
            incident_alerts,
            connector_events,
            write_backs,
            queue_messages,
            registry,
            requests,
            latency,
            queue_depth,
            batch_size,
            inference_seconds,
            rechecked,
            stages,
            decisions,
            rules_version,
            model,
        }
    }

    /// Records one routing stage's time.
    pub fn stage(&self, stage: &str, seconds: f64) {
        self.stages
            .get_or_create(&StageLabels {
                stage: stage.to_string(),
            })
            .observe(seconds);
    }

    /// Records one finished HTTP request.
    pub fn request(&self, endpoint: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(seconds);
    }

    /// Records one encoder batch.
    pub fn batch(&self, size: usize, seconds: f64) {
        self.batch_size.observe(size as f64);
        self.inference_seconds.observe(seconds);
    }

    /// Counts texts encoded again to re-check a near tie.
    pub fn rechecked(&self, texts: usize) {
        self.rechecked.inc_by(texts as u64);
    }

    /// Counts a decision.
    pub fn decision(&self, team: Option<&str>, intent: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                team: team.unwrap_or("(none)").to_string(),
                intent: intent.to_string(),
            })
            .inc();
    }

    /// Counts a helpdesk webhook received by a connector.
    pub fn connector_event(&self, connector: &str, outcome: &str) {
        self.connector_events
            .get_or_create(&ConnectorLabels {
                connector: connector.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts how the handling of a NATS queue message ended.
    pub fn queue_message(&self, outcome: &str) {
        self.queue_messages
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts how an attempt to write a decision back ended.
    pub fn write_back(&self, connector: &str, outcome: &str) {
        self.write_backs
            .get_or_create(&ConnectorLabels {
                connector: connector.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Sets the active rules version.
    pub fn set_rules_version(&self, version: i64) {
        self.rules_version.set(version);
    }

    /// Sets the active model version.
    pub fn set_model(&self, version: &str) {
        self.model.clear();
        self.model
            .get_or_create(&ModelLabels {
                version: version.to_string(),
            })
            .set(1);
    }

    /// Counts an incident opened.
    pub fn incident_opened(&self) {
        self.incidents_opened.inc();
    }

    /// Sets how many incidents this replica links tickets to.
    pub fn set_live_incidents(&self, n: usize) {
        self.incidents_live
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a ticket linked to an incident (`how`: routing).
    pub fn incident_link(&self, how: &str) {
        self.incident_links
            .get_or_create(&OutcomeLabels {
                outcome: how.to_string(),
            })
            .inc();
    }

    /// Counts an attempt at an incident alert by outcome.
    pub fn incident_alert(&self, outcome: &str) {
        self.incident_alerts
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition, with the queue depth read now.
    pub fn render(&self, queue_depth: usize) -> String {
        self.queue_depth.set(queue_depth as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing metrics to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.request("/v1/route", "POST", 200, 0.012);
        m.batch(8, 0.05);
        m.decision(Some("billing"), "billing.refund");
        m.set_rules_version(3);
        m.set_model("abc");
        m.connector_event("usedesk", "accepted");
        m.write_back("usedesk", "delivered");
        m.incident_opened();
        m.set_live_incidents(2);
        m.incident_link("routing");
        m.incident_alert("delivered");
        let text = m.render(5);
        for want in [
            "intent_router_http_requests_total{endpoint=\"/v1/route\",method=\"POST\",status=\"200\"} 1",
            "intent_router_inference_queue_depth 5",
            "intent_router_decisions_total{team=\"billing\",intent=\"billing.refund\"} 1",
            "intent_router_rules_version 3",
            "intent_router_model_info{version=\"abc\"} 1",
            "intent_router_inference_batch_size_count 1",
            "intent_router_connector_events_total{connector=\"usedesk\",outcome=\"accepted\"} 1",
            "intent_router_connector_write_backs_total{connector=\"usedesk\",outcome=\"delivered\"} 1",
            "intent_router_incidents_opened_total 1",
            "intent_router_incidents_live 2",
            "intent_router_incident_links_total{outcome=\"routing\"} 1",
            "intent_router_incident_alerts_total{outcome=\"delivered\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
