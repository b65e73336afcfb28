//! Prometheus metrics, served on the admin address at `/metrics`.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::upstream::Upstreams;

use super::RequestRecord;

// Label values are shared or static strings: recording a request allocates
// nothing but the one "-" placeholder for local answers.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub pool: Arc<str>,
    pub server: Arc<str>,
    pub status: u16,
    pub path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

/// The metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    latency: Family<ServerLabels, Histogram>,
    first_byte: Family<ServerLabels, Histogram>,
    in_flight: Family<ServerLabels, Gauge>,
    conns_open: Family<ServerLabels, Gauge>,
    conns_idle: Family<ServerLabels, Gauge>,
    conns_opened: Family<ServerLabels, Gauge>,
    conns_reused: Family<ServerLabels, Gauge>,
    pub client_connections: Gauge,
    pub access_log_dropped: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 17,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("distributor");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by pool, server, status and response path",
            requests.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "bytes",
            "Bytes from clients (in) and to clients (out)",
            bytes.clone(),
        );
        let latency = Family::<ServerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "First request byte to last response byte",
            latency.clone(),
        );
        let first_byte = Family::<ServerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "backend_first_byte_seconds",
            "Request sent to first response byte",
            first_byte.clone(),
        );
        let in_flight = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "in_flight",
            "Requests in flight per server",
            in_flight.clone(),
        );
        let conns_open = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "backend_connections_open",
            "Open backend connections (busy and idle)",
            conns_open.clone(),
        );
        let conns_idle = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "backend_connections_idle",
            "Idle pooled backend connections",
            conns_idle.clone(),
        );
        let conns_opened = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "backend_connections_opened",
            "Backend connections opened since start",
            conns_opened.clone(),
        );
        let conns_reused = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "backend_connections_reused",
            "Requests that reused an idle backend connection since start",
            conns_reused.clone(),
        );
        let client_connections = Gauge::default();
        registry.register(
            "client_connections",
            "Open client connections",
            client_connections.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log records dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        Self {
            registry,
            requests,
            bytes,
            latency,
            first_byte,
            in_flight,
            conns_open,
            conns_idle,
            conns_opened,
            conns_reused,
            client_connections,
            access_log_dropped,
        }
    }
}

impl Metrics {
    /// Folds one finished request in.
    pub fn record(&self, rec: &RequestRecord) {
        let none: Arc<str> = Arc::from("-");
        let server = rec.server.clone().unwrap_or_else(|| Arc::clone(&none));
        let path = match rec.path_taken {
            Some(super::ResponsePath::Relay) => "relay",
            Some(super::ResponsePath::Splice) => "splice",
            Some(super::ResponsePath::Local) | None => "local",
        };
        self.requests
            .get_or_create(&RequestLabels {
                pool: rec.pool.clone().unwrap_or(none),
                server: server.clone(),
                status: rec.status,
                path,
            })
            .inc();
        self.bytes
            .get_or_create(&DirectionLabels { direction: "in" })
            .inc_by(rec.bytes_in);
        self.bytes
            .get_or_create(&DirectionLabels { direction: "out" })
            .inc_by(rec.bytes_out);
        let labels = ServerLabels { server };
        if let Some(done) = rec.t_done_ms {
            self.latency.get_or_create(&labels).observe(done / 1000.0);
        }
        if let (Some(sent), Some(first)) = (rec.t_sent_ms, rec.t_first_byte_ms) {
            self.first_byte
                .get_or_create(&labels)
                .observe((first - sent).max(0.0) / 1000.0);
        }
    }

    /// The text exposition, with the per-server gauges read now.
    #[must_use]
    pub fn render(&self, upstreams: &Arc<Upstreams>) -> String {
        for s in upstreams.servers() {
            let labels = ServerLabels {
                server: Arc::clone(&s.id),
            };
            let set = |g: &Family<ServerLabels, Gauge>, v: u64| {
                g.get_or_create(&labels)
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            set(&self.in_flight, s.in_flight());
            set(&self.conns_open, s.conns.open_count() as u64);
            set(&self.conns_idle, s.conns.idle_count() as u64);
            set(&self.conns_opened, s.conns.opened_total());
            set(&self.conns_reused, s.conns.reused_total());
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
