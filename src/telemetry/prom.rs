//! The Prometheus recorder behind the `metrics` facade: installed once per process, rendered by `GET /metrics`.
//! Metric names and histogram buckets live here, so the code that emits, the docs and the tests agree.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Metric names, shared by the code that emits them, the docs and the tests.
pub mod names {
    /// Gauge: connected xDS streams, by `protocol` (`sotw`, `delta`).
    pub const XDS_CONNECTED: &str = "pilot_xds";
    /// Counter: responses sent, by `type`.
    pub const XDS_PUSHES: &str = "pilot_xds_pushes";
    /// Histogram (seconds): computing and sending one response, by `type`.
    pub const XDS_PUSH_TIME: &str = "pilot_xds_push_time";
    /// Histogram (seconds): a config change until a proxy holds it in full (every type ACKed).
    pub const PROXY_CONVERGENCE_TIME: &str = "pilot_proxy_convergence_time";
    /// Counter: NACKs, by `type`.
    pub const XDS_REJECTS: &str = "pilot_total_xds_rejects";
    /// Counter: generated resources that break a constraint of Envoy's API (its protoc-gen-validate annotations),
    /// by `type`; each is logged with where and which rule.
    pub const INVALID_RESOURCES: &str = "sluice_invalid_resources_total";
    /// Counter: injection webhook requests by `result` (`injected`, `skipped`, `refused`, `not-a-pod`, `invalid`,
    /// `empty`, `unsupported-media-type`).
    pub const INJECT_REQUESTS: &str = "sluice_inject_requests_total";
    /// Counter: parts of a proxy's config (a resource, or a virtual host) found to be what it refused, and held
    /// back for it (`xds::contain`), by `type`.
    pub const XDS_CONTAINED: &str = "sluice_xds_refused_total";
    /// Histogram (seconds): a config change until its snapshot build starts (coalescing delay).
    pub const DEBOUNCE_TIME: &str = "pilot_debounce_time";
    /// Histogram (bytes): resource bytes in one response, by `type`.
    pub const XDS_CONFIG_SIZE: &str = "pilot_xds_config_size_bytes";
    /// Gauge: 1 for a release's current phase, 0 for the others; `namespace`, `policy`, `phase`.
    pub const RELEASE_PHASE: &str = "sluice_release_phase";
    /// Gauge: a version's share of traffic in percent as routed now; `namespace`, `policy`, `version`.
    pub const RELEASE_WEIGHT: &str = "sluice_release_weight";
    /// Gauge, reserved for the stats sink: requests/s per `namespace`, `service`, `version`, across all proxies.
    pub const VERSION_RPS: &str = "sluice_version_requests_per_second";
    /// Gauge, reserved for the stats sink: share of non-5xx responses (0..1) per `namespace`, `service`, `version`.
    pub const VERSION_SUCCESS_RATE: &str = "sluice_version_success_rate";
    /// Counter: fields of VirtualService, DestinationRule or HTTPRoute objects Sluice does not translate (each
    /// reported with its object and path), by `kind`.
    pub const UNSUPPORTED_FIELDS: &str = "sluice_unsupported_fields_total";
    /// Gauge: routing objects that lose (part of) what they ask for to an older object for the same Service
    /// (a second VirtualService; a DestinationRule's policy or subset that a merge drops), by `kind`.
    pub const CONFIG_CONFLICTS: &str = "sluice_config_conflicts";
    /// Counter: Kubernetes objects skipped as invalid (each logged once with its namespace/name), by `kind`.
    pub const KUBE_INVALID_OBJECTS: &str = "sluice_kube_invalid_objects_total";
    /// Counter: ReleasePolicy status writes that failed (each logged and retried).
    pub const KUBE_STATUS_ERRORS: &str = "sluice_kube_status_write_errors_total";
    /// Counter: Deployment reads and writes that failed (each logged and retried).
    pub const KUBE_DEPLOYMENT_ERRORS: &str = "sluice_kube_deployment_errors_total";
    /// Counter: Kubernetes list/watch errors (each retried with backoff), by `kind`.
    pub const KUBE_WATCH_ERRORS: &str = "sluice_kube_watch_errors_total";
    /// Counter: this replica's report written to the cluster (`source::kube::replica`), by `cause` (`change`:
    /// its proxies' ACKs or traffic moved, at most once a second; `heartbeat`: unchanged, renewed) and `result`
    /// (`ok`, `error`).
    pub const REPLICA_REPORT_WRITES: &str = "sluice_replica_report_writes_total";
    /// Counter: workload certificates the CA signed (`ca::service`).
    pub const CA_ISSUED: &str = "sluice_ca_certificates_issued_total";
    /// Counter: certificate requests refused, by `reason` (`no-token`, `invalid-token`, `expired-token`,
    /// `wrong-audience`, `review-failed`, `impersonation`, `other-identity`, `bad-csr`, `signing-failed`).
    pub const CA_REFUSED: &str = "sluice_ca_requests_refused_total";
    /// Gauge: seconds until the mesh CA's root certificate expires (negative once it has).
    pub const CA_ROOT_EXPIRY: &str = "sluice_ca_root_expiry_seconds";
}

/// Histogram buckets for durations, in seconds: 1 ms to 30 s.
pub const TIME_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Histogram buckets for response sizes, in bytes: 1 KiB to 64 MiB.
pub const SIZE_BUCKETS: &[f64] =
    &[1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0];

/// The installed recorder's handle; `None` when another recorder was installed first.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, once; later calls return the same handle.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(build_and_install).as_ref()
}

fn build_and_install() -> Option<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for name in [names::XDS_PUSH_TIME, names::PROXY_CONVERGENCE_TIME, names::DEBOUNCE_TIME] {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), TIME_BUCKETS)
            .expect("TIME_BUCKETS is not empty");
    }
    builder = builder
        .set_buckets_for_metric(Matcher::Full(names::XDS_CONFIG_SIZE.into()), SIZE_BUCKETS)
        .expect("SIZE_BUCKETS is not empty");
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            describe();
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics shows release metrics only");
            None
        }
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(names::XDS_CONNECTED, "Connected xDS streams (one per proxy on ADS), by protocol.");
    describe_counter!(names::XDS_PUSHES, "xDS responses sent, by type (cds, eds, lds, rds).");
    describe_histogram!(names::XDS_PUSH_TIME, Unit::Seconds, "Time to compute and send one xDS response, by type.");
    describe_histogram!(
        names::PROXY_CONVERGENCE_TIME,
        Unit::Seconds,
        "Time from a config change until a connected proxy holds it in full (every type ACKed)."
    );
    describe_counter!(names::XDS_REJECTS, "xDS responses a proxy rejected (NACK), by type.");
    describe_counter!(
        names::XDS_CONTAINED,
        "Parts of a proxy config found to be what it refused and held back for it (the rest goes on), by type."
    );
    describe_histogram!(
        names::DEBOUNCE_TIME,
        Unit::Seconds,
        "Time from a config change until its snapshot build starts (changes within --min-push-interval coalesce)."
    );
    describe_histogram!(names::XDS_CONFIG_SIZE, Unit::Bytes, "Resource bytes in one xDS response, by type.");
    describe_gauge!(names::VERSION_RPS, "Requests per second to a service version, summed over every proxy.");
    describe_gauge!(names::VERSION_SUCCESS_RATE, "Share of non-5xx responses (0..1) of a service version.");
    describe_counter!(
        names::UNSUPPORTED_FIELDS,
        "Config fields Sluice does not translate (reported, ignored), by kind."
    );
    describe_counter!(names::INJECT_REQUESTS, "Sidecar injection webhook requests, by result.");
    describe_counter!(names::KUBE_INVALID_OBJECTS, "Kubernetes objects skipped as invalid, by kind.");
    describe_counter!(names::KUBE_STATUS_ERRORS, "ReleasePolicy status writes the API server refused or missed.");
    describe_counter!(names::KUBE_DEPLOYMENT_ERRORS, "Deployment reads and writes that failed (retried).");
    describe_counter!(names::KUBE_WATCH_ERRORS, "Kubernetes list/watch errors (retried with backoff), by kind.");
    describe_counter!(
        names::REPLICA_REPORT_WRITES,
        "Writes of this replica's report (its proxies and traffic) to the cluster, by cause and result."
    );
}

/// Renders every metric the recorder holds as Prometheus text (empty when another recorder is installed).
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

/// Drains histogram samples into their buckets every few seconds, so memory stays bounded between scrapes. Runs
/// until `stop` turns true.
pub async fn upkeep(mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(handle) = install() else { return };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_renders_what_the_facade_records() {
        let first = install().expect("no other recorder in the unit tests");
        assert!(std::ptr::eq(first, install().expect("installed")), "one recorder per process");
        metrics::counter!("sluice_unit_test_total", "type" => "cds").increment(2);
        assert!(render().contains("sluice_unit_test_total{type=\"cds\"} 2"), "{}", render());
    }
}
