//! Gateway metrics, exported in Prometheus text format by the admin API.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatementLabels {
    pub protocol: &'static str,
    pub classification: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    pub sessions_open: Family<ProtocolLabel, Gauge>,
    pub sessions_total: Family<ProtocolLabel, Counter>,
    pub statements_total: Family<StatementLabels, Counter>,
    pub auth_failures_total: Family<ProtocolLabel, Counter>,
    pub protocol_errors_total: Family<ProtocolLabel, Counter>,
    pub statement_duration_seconds: Histogram,
    pub audit_failures_total: Counter,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let sessions_open = Family::<ProtocolLabel, Gauge>::default();
        let sessions_total = Family::<ProtocolLabel, Counter>::default();
        let statements_total = Family::<StatementLabels, Counter>::default();
        let auth_failures_total = Family::<ProtocolLabel, Counter>::default();
        let protocol_errors_total = Family::<ProtocolLabel, Counter>::default();
        // 50 µs .. ~100 s
        let statement_duration_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 22),
        );
        let audit_failures_total = Counter::default();
        let mut registry = Registry::with_prefix("gatehouse");
        registry.register(
            "sessions_open",
            "Client sessions now open",
            sessions_open.clone(),
        );
        registry.register("sessions", "Client sessions opened", sessions_total.clone());
        registry.register("statements", "Statements relayed", statements_total.clone());
        registry.register(
            "auth_failures",
            "Rejected authentication attempts",
            auth_failures_total.clone(),
        );
        registry.register(
            "protocol_errors",
            "Connections closed for malformed protocol input",
            protocol_errors_total.clone(),
        );
        registry.register(
            "statement_duration_seconds",
            "Time from a statement becoming the server's current one to its completion",
            statement_duration_seconds.clone(),
        );
        registry.register(
            "audit_failures",
            "Audit records that could not be written (each refused its action)",
            audit_failures_total.clone(),
        );
        Metrics {
            sessions_open,
            sessions_total,
            statements_total,
            auth_failures_total,
            protocol_errors_total,
            statement_duration_seconds,
            audit_failures_total,
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn protocol(protocol: &str) -> ProtocolLabel {
        ProtocolLabel {
            protocol: protocol.to_owned(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
