//! The host's Prometheus metrics, served at `GET /metrics` on the admin listener.
//!
//! One [`Metrics`] per process holds every series; the crates that observe something
//! (server: authorization; runtime: instances, phases, outcomes; egress: outbound requests and
//! token exchanges) get an `Arc<Metrics>` and call its typed `record_*` methods, so metric
//! names and labels are decided here and nowhere else.
//!
//! Labels are bounded by construction: plugin names come from the operator's config, versions
//! from deployments, outcome/limit/phase codes are fixed sets, and an egress `host` label is
//! the canonical host of an operator rule — a denied request is counted under `host="-"`, so
//! a hostile plugin cannot create series by requesting random hosts. No label ever holds a
//! token, a user or a URL path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A timed step of an invocation (`delegate_phase_duration_seconds{phase=...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Verifying the caller's token (server).
    Authorize,
    /// Creating the store and instance from the `InstancePre` (runtime).
    Instantiate,
    /// One model call, from the guest's import call to its answer (provider time included).
    ModelCall,
    /// One outbound request, from the policy decision to the end of the response body
    /// (token exchange and downstream time included).
    EgressCall,
    /// Guest CPU time of one invocation.
    GuestCpu,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Self::Authorize => "authorize",
            Self::Instantiate => "instantiate",
            Self::ModelCall => "model_call",
            Self::EgressCall => "egress_call",
            Self::GuestCpu => "guest_cpu",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    plugin: String,
    version: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    plugin: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    plugin: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    provider: String,
    outcome: String,
    cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressLabels {
    host: String,
    decision: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SharedCacheLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeployLabels {
    plugin: String,
    outcome: String,
}

/// Whether a delegated token came from the vault's cache or from an exchange with the IdP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Served from the cache.
    Cached,
    /// Obtained from the identity provider (On-Behalf-Of, token exchange...).
    Exchanged,
    /// The exchange failed.
    Failed,
}

/// What happened at the shared token cache (Redis) of the vault
/// (`delegate_vault_shared_cache_events_total{event=...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedCacheEvent {
    /// A fresh token was found in the shared store.
    Hit,
    /// Nothing (fresh) under the key.
    Miss,
    /// A store operation failed or timed out (treated as a miss).
    Error,
    /// A stored value did not open (wrong key, tampered, malformed): treated as a miss.
    Undecryptable,
    /// This replica took the cross-replica exchange lock for a key.
    LockWon,
    /// Another replica held the lock; this one waited for its token.
    LockWaited,
    /// The wait for another replica's token passed its bound.
    LockTimedOut,
    /// An exchange made without the cross-replica lock (store down, wait bound passed, or the
    /// lock holder gave up): the fail-safe path that costs an extra IdP call.
    FallbackExchange,
    /// The store was unavailable and the replica's own in-memory copy served the token.
    LocalHit,
}

impl SharedCacheEvent {
    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Error => "error",
            Self::Undecryptable => "undecryptable",
            Self::LockWon => "lock_won",
            Self::LockWaited => "lock_waited",
            Self::LockTimedOut => "lock_timed_out",
            Self::FallbackExchange => "fallback_exchange",
            Self::LocalHit => "local_hit",
        }
    }
}

/// Every series of the host.
pub struct Metrics {
    registry: Registry,
    invocations: Family<InvocationLabels, Counter>,
    invocation_seconds: Family<PluginLabels, Histogram>,
    phase_seconds: Family<PhaseLabels, Histogram>,
    in_flight: Gauge,
    instances_live: Gauge,
    authorizations: Family<AuthLabels, Counter>,
    token_exchanges: Family<ExchangeLabels, Counter>,
    egress_requests: Family<EgressLabels, Counter>,
    model_tokens: Family<TokenLabels, Counter>,
    limit_hits: Family<LimitLabels, Counter>,
    deploys: Family<DeployLabels, Counter>,
    shared_cache: Family<SharedCacheLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn phase_histogram() -> Histogram {
    // 10 µs … ≈ 42 s in ×4 steps: instantiation is microseconds, a model call seconds.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 12))
}

fn invocation_histogram() -> Histogram {
    // 1 ms … ≈ 150 s.
    Histogram::new(exponential_buckets(0.001, 2.5, 14))
}

/// The limit codes counted in `delegate_limit_hits_total` (invocation outcomes that are a
/// limit, as opposed to a plugin error or a credential problem).
const LIMIT_OUTCOMES: [&str; 7] =
    ["cpu_limit", "memory_limit", "timeout", "output_limit", "log_limit", "stack_overflow", "capacity"];

impl Metrics {
    /// A fresh set of series, registered under the `delegate_` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("delegate");
        let invocations = Family::<InvocationLabels, Counter>::default();
        registry.register(
            "invocations",
            "Invocations that ended, by plugin, version and outcome code",
            invocations.clone(),
        );
        let invocation_seconds = Family::<PluginLabels, Histogram>::new_with_constructor(
            invocation_histogram as fn() -> Histogram,
        );
        registry.register(
            "invocation_duration_seconds",
            "Wall-clock time of invocations, by plugin",
            invocation_seconds.clone(),
        );
        let phase_seconds =
            Family::<PhaseLabels, Histogram>::new_with_constructor(phase_histogram as fn() -> Histogram);
        registry.register(
            "phase_duration_seconds",
            "Time per invocation phase: authorize, instantiate, model_call, egress_call, guest_cpu",
            phase_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("invocations_in_flight", "Invocations running now", in_flight.clone());
        let instances_live = Gauge::default();
        registry.register(
            "instances_live",
            "Plugin instances alive now (each holds a pooling-allocator slot)",
            instances_live.clone(),
        );
        let authorizations = Family::<AuthLabels, Counter>::default();
        registry.register(
            "authorizations",
            "Bearer-token checks on /invocations, by outcome (ok, unauthenticated, forbidden, unavailable)",
            authorizations.clone(),
        );
        let token_exchanges = Family::<ExchangeLabels, Counter>::default();
        registry.register(
            "token_exchanges",
            "Delegated tokens obtained for outbound requests, by provider, outcome and cache",
            token_exchanges.clone(),
        );
        let egress_requests = Family::<EgressLabels, Counter>::default();
        registry.register(
            "egress_requests",
            "Outbound requests of plugins, by canonical host (\"-\" when denied), decision and status",
            egress_requests.clone(),
        );
        let model_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "model_tokens",
            "Model tokens used, by plugin and kind (input, output)",
            model_tokens.clone(),
        );
        let limit_hits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_hits",
            "Invocations ended by a limit, by plugin and limit",
            limit_hits.clone(),
        );
        let deploys = Family::<DeployLabels, Counter>::default();
        registry.register(
            "deploys",
            "Plugin deploys through the admin API, by plugin and outcome",
            deploys.clone(),
        );
        let shared_cache = Family::<SharedCacheLabels, Counter>::default();
        registry.register(
            "vault_shared_cache_events",
            "Shared token cache (Redis) events: hit, miss, error, undecryptable, lock_won, lock_waited, lock_timed_out, fallback_exchange, local_hit",
            shared_cache.clone(),
        );
        Arc::new(Self {
            registry,
            invocations,
            invocation_seconds,
            phase_seconds,
            in_flight,
            instances_live,
            authorizations,
            token_exchanges,
            egress_requests,
            model_tokens,
            limit_hits,
            deploys,
            shared_cache,
        })
    }

    /// The OpenMetrics text of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Records the duration of one phase.
    pub fn record_phase(&self, phase: Phase, took: Duration) {
        self.phase_seconds.get_or_create(&PhaseLabels { phase: phase.label() }).observe(took.as_secs_f64());
    }

    /// Records the outcome of an authorization (`ok` or the rejection class).
    pub fn record_authorization(&self, outcome: &'static str, took: Duration) {
        self.authorizations.get_or_create(&AuthLabels { outcome }).inc();
        self.record_phase(Phase::Authorize, took);
    }

    /// Records an ended invocation: its outcome code (`ok` or an error code), wall time,
    /// guest CPU and model tokens.
    pub fn record_invocation(&self, end: &InvocationEnd<'_>) {
        self.invocations
            .get_or_create(&InvocationLabels {
                plugin: end.plugin.to_owned(),
                version: end.version.to_owned(),
                outcome: end.outcome.to_owned(),
            })
            .inc();
        self.invocation_seconds
            .get_or_create(&PluginLabels { plugin: end.plugin.to_owned() })
            .observe(end.elapsed.as_secs_f64());
        if let Some(cpu) = end.guest_cpu {
            self.record_phase(Phase::GuestCpu, cpu);
        }
        for (kind, n) in [("input", end.input_tokens), ("output", end.output_tokens)] {
            if n > 0 {
                self.model_tokens
                    .get_or_create(&TokenLabels { plugin: end.plugin.to_owned(), kind })
                    .inc_by(n);
            }
        }
        if LIMIT_OUTCOMES.contains(&end.outcome) {
            self.limit_hits
                .get_or_create(&LimitLabels { plugin: end.plugin.to_owned(), limit: end.outcome.to_owned() })
                .inc();
        }
    }

    /// Records one outbound request: `host` is the canonical host for an allowed request (it
    /// is replaced by `-` when `allowed` is false), `status` the downstream status if any,
    /// `reason` the failure code if it failed.
    pub fn record_egress(
        &self,
        host: &str,
        allowed: bool,
        status: Option<u16>,
        reason: Option<&str>,
        took: Duration,
    ) {
        let status = match (status, reason) {
            (Some(s), _) => s.to_string(),
            (None, Some(r)) => r.to_owned(),
            (None, None) => "-".to_owned(),
        };
        let labels = EgressLabels {
            host: if allowed { host.to_owned() } else { "-".to_owned() },
            decision: if allowed { "allowed" } else { "denied" },
            status: if allowed { status } else { "-".to_owned() },
        };
        self.egress_requests.get_or_create(&labels).inc();
        if allowed {
            self.record_phase(Phase::EgressCall, took);
        }
    }

    /// Records where a delegated token came from (`outcome`: `ok` or the vault's error code).
    pub fn record_token(&self, provider: &str, source: TokenSource, outcome: &str) {
        let cache = match source {
            TokenSource::Cached => "hit",
            TokenSource::Exchanged => "miss",
            TokenSource::Failed => "-",
        };
        self.token_exchanges
            .get_or_create(&ExchangeLabels {
                provider: provider.to_owned(),
                outcome: outcome.to_owned(),
                cache,
            })
            .inc();
    }

    /// Records a deploy through the admin API (`outcome`: `ok`, `unchanged` or the refusal code).
    pub fn record_deploy(&self, plugin: &str, outcome: &str) {
        self.deploys
            .get_or_create(&DeployLabels { plugin: plugin.to_owned(), outcome: outcome.to_owned() })
            .inc();
    }

    /// Counts one event at the vault's shared token cache.
    pub fn record_shared_cache(&self, event: SharedCacheEvent) {
        self.shared_cache.get_or_create(&SharedCacheLabels { event: event.label() }).inc();
    }

    /// Counts an invocation as running until the returned guard is dropped.
    pub fn in_flight(self: &Arc<Self>) -> Tracked {
        self.in_flight.inc();
        Tracked { metrics: Arc::clone(self), gauge: GaugeKind::InFlight }
    }

    /// Counts a live plugin instance until the returned guard is dropped.
    pub fn instance(self: &Arc<Self>) -> Tracked {
        self.instances_live.inc();
        Tracked { metrics: Arc::clone(self), gauge: GaugeKind::Instances }
    }
}

/// What [`Metrics::record_invocation`] records.
#[derive(Debug, Clone)]
pub struct InvocationEnd<'a> {
    /// Plugin name.
    pub plugin: &'a str,
    /// Plugin version.
    pub version: &'a str,
    /// `ok` or the invocation's error code.
    pub outcome: &'a str,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Guest CPU time, when the invocation got as far as running guest code.
    pub guest_cpu: Option<Duration>,
    /// Model input tokens.
    pub input_tokens: u64,
    /// Model output tokens.
    pub output_tokens: u64,
}

#[derive(Debug)]
enum GaugeKind {
    InFlight,
    Instances,
}

/// Decrements its gauge when dropped.
#[derive(Debug)]
pub struct Tracked {
    metrics: Arc<Metrics>,
    gauge: GaugeKind,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        match self.gauge {
            GaugeKind::InFlight => self.metrics.in_flight.dec(),
            GaugeKind::Instances => self.metrics.instances_live.dec(),
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn series_are_encoded_with_their_labels_and_counts() {
        let m = Metrics::new();
        m.record_invocation(&InvocationEnd {
            plugin: "echo",
            version: "1.0.0",
            outcome: "ok",
            elapsed: Duration::from_millis(5),
            guest_cpu: Some(Duration::from_micros(300)),
            input_tokens: 10,
            output_tokens: 3,
        });
        m.record_invocation(&InvocationEnd {
            plugin: "echo",
            version: "1.0.0",
            outcome: "cpu_limit",
            elapsed: Duration::from_millis(5),
            guest_cpu: None,
            input_tokens: 0,
            output_tokens: 0,
        });
        m.record_egress("snow.example.com", true, Some(200), None, Duration::from_millis(2));
        m.record_egress("attacker-chosen-1.example", false, None, Some("no_matching_rule"), Duration::ZERO);
        m.record_egress("attacker-chosen-2.example", false, None, Some("no_matching_rule"), Duration::ZERO);
        m.record_token("servicenow", TokenSource::Exchanged, "ok");
        m.record_token("servicenow", TokenSource::Cached, "ok");
        m.record_token("servicenow", TokenSource::Cached, "ok");
        let guard = m.in_flight();
        let text = m.encode();
        assert!(
            line(&text, r#"delegate_invocations_total{plugin="echo",version="1.0.0",outcome="ok"} 1"#)
                .is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"delegate_limit_hits_total{plugin="echo",limit="cpu_limit"} 1"#).is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"delegate_model_tokens_total{plugin="echo",kind="input"} 10"#).is_some(),
            "{text}"
        );
        assert!(
            line(
                &text,
                r#"delegate_egress_requests_total{host="snow.example.com",decision="allowed",status="200"} 1"#
            )
            .is_some(),
            "{text}"
        );
        // Denied hosts collapse into one series: no cardinality for a hostile plugin to create.
        assert!(
            line(&text, r#"delegate_egress_requests_total{host="-",decision="denied",status="-"} 2"#)
                .is_some(),
            "{text}"
        );
        assert!(!text.contains("attacker-chosen"), "{text}");
        assert!(
            line(
                &text,
                r#"delegate_token_exchanges_total{provider="servicenow",outcome="ok",cache="hit"} 2"#
            )
            .is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"delegate_phase_duration_seconds_count{phase="guest_cpu"} 1"#).is_some(),
            "{text}"
        );
        assert!(
            line(&text, r#"delegate_phase_duration_seconds_count{phase="egress_call"} 1"#).is_some(),
            "{text}"
        );
        assert!(line(&text, "delegate_invocations_in_flight 1").is_some(), "{text}");
        drop(guard);
        assert!(line(&m.encode(), "delegate_invocations_in_flight 0").is_some());
        assert!(text.ends_with("# EOF\n"));
    }
}
