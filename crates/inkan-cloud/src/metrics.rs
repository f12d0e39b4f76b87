//! Prometheus metrics of the service (text exposition format 0.0.4),
//! served on a listener of their own (`inkan serve --metrics ADDR`, meant
//! for an internal interface: the figures are the whole service's, across
//! tenants). Counters live in memory per replica; the active sessions are
//! read from the store when scraped.

use crate::App;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Distinct refusal reasons counted (more are counted as "other").
const REASONS: usize = 32;

/// The counters.
#[derive(Default)]
pub struct Metrics {
    /// Authentications that made a session, by suite (0, 2).
    auth_ok: [AtomicU64; 2],
    /// Refused authentications and device requests, by kind and reason.
    refused: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Readings stored.
    readings: AtomicU64,
    /// message_1s answered with an Echo to repeat.
    echo_asked: AtomicU64,
    /// Datagrams shed before parsing.
    shed: AtomicU64,
}

impl Metrics {
    pub(crate) fn authenticated(&self, suite: inkan_proto::edhoc::Suite) {
        let i = usize::from(suite == inkan_proto::edhoc::Suite::P256Es256);
        self.auth_ok[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, kind: &'static str, reason: &'static str) {
        if let Ok(mut m) = self.refused.lock() {
            let key = if m.len() >= REASONS && !m.contains_key(&(kind, reason)) {
                (kind, "other")
            } else {
                (kind, reason)
            };
            *m.entry(key).or_default() += 1;
        }
    }

    pub(crate) fn readings(&self, n: u64) {
        self.readings.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn echo_asked(&self) {
        self.echo_asked.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn shed(&self, n: u64) {
        self.shed.fetch_add(n, Ordering::Relaxed);
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl App {
    /// The metrics in Prometheus text format.
    pub async fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let mut out = String::new();
        family(
            &mut out,
            "inkan_authentications_total",
            "counter",
            "EDHOC authentications that made a session, by cipher suite.",
        );
        for (i, suite) in ["0", "2"].into_iter().enumerate() {
            let _ = writeln!(
                out,
                "inkan_authentications_total{{suite=\"{suite}\"}} {}",
                m.auth_ok[i].load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "inkan_refusals_total",
            "counter",
            "Refused authentications and device requests, by kind and reason.",
        );
        if let Ok(r) = m.refused.lock() {
            for ((kind, reason), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "inkan_refusals_total{{kind=\"{kind}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        for (name, help, v) in [
            (
                "inkan_readings_ingested_total",
                "Readings stored (durable before acknowledged).",
                &m.readings,
            ),
            (
                "inkan_echo_challenges_total",
                "message_1s answered with a CoAP Echo to repeat (address not yet verified).",
                &m.echo_asked,
            ),
            (
                "inkan_datagrams_shed_total",
                "Datagrams dropped before parsing (source over its budget, or the endpoint at capacity).",
                &m.shed,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        family(
            &mut out,
            "inkan_active_sessions",
            "gauge",
            "Device sessions neither ended nor expired (all replicas; -1 when the store does not answer).",
        );
        let active = self.registry.store.active_sessions().await.unwrap_or(-1);
        let _ = writeln!(out, "inkan_active_sessions {active}");
        out
    }
}

/// Serves `GET /metrics` on `listener` until it fails.
pub async fn serve(listener: tokio::net::TcpListener, app: Arc<App>) -> std::io::Result<()> {
    use axum::routing::get;
    let router = axum::Router::new().route(
        "/metrics",
        get(
            |axum::extract::State(app): axum::extract::State<Arc<App>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    app.metrics_text().await,
                )
            },
        ),
    );
    axum::serve(listener, router.with_state(app)).await
}
