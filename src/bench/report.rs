//! Percentiles, the table, and the JSON object.

use serde::Serialize;

/// p50, p99 and max of durations in ms.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut ns: Vec<u64>) -> Self {
        if ns.is_empty() {
            return Self::default();
        }
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1] as f64 / 1e6;
        Self { p50_ms: at(0.50), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

/// Everything one run measured. Field names are the JSON contract (`--json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    pub proxies: usize,
    pub services: usize,
    pub endpoints: usize,
    pub mode: String,
    pub connect_s: f64,
    pub churn_p50_ms: f64,
    pub churn_p99_ms: f64,
    pub churn_max_ms: f64,
    pub churn_bytes_per_proxy: f64,
    pub weight_p50_ms: f64,
    pub weight_p99_ms: f64,
    pub weight_max_ms: f64,
    pub weight_bytes_per_proxy: f64,
    /// `--istio`: one VirtualService edit → ACK, and what it cost each proxy (0 without `--istio`).
    pub vs_edit_p50_ms: f64,
    pub vs_edit_p99_ms: f64,
    pub vs_edit_bytes_per_proxy: f64,
    /// The run's `--sidecar-egress` (0: none) and `--istio`.
    pub sidecar_egress: usize,
    pub istio: bool,
    pub rss_mb: f64,
    pub baseline_rss_mb: f64,
    pub rss_per_proxy_kb: f64,
    pub idle_cpu_percent: f64,
    pub stalled_proxies: usize,
    /// Streams the simulated proxies had to open again (server reset or closed them) during the storm / in all.
    pub storm_reconnects: u64,
    pub reconnects: u64,
    /// Why streams ended (gRPC code and message) → how many times, over the whole phase.
    pub reconnect_reasons: std::collections::BTreeMap<String, u64>,
    /// Bytes each proxy received in the connect storm (its full config), and the CPU seconds the server and the
    /// driver (all simulated proxies) used until the last proxy had it.
    pub storm_bytes_per_proxy: f64,
    /// The same by type: CDS, EDS, LDS, RDS, VHDS.
    pub storm_bytes_by_type: [f64; 5],
    pub storm_server_cpu_s: f64,
    pub storm_driver_cpu_s: f64,
    pub floor_connect_s: f64,
    pub floor_churn_p50_ms: f64,
    pub floor_churn_p99_ms: f64,
    pub floor_churn_bytes_per_proxy: f64,
    pub floor_weight_p99_ms: f64,
    pub floor_storm_server_cpu_s: f64,
    pub floor_storm_driver_cpu_s: f64,
    pub churn_floor_ratio: f64,
    pub weight_floor_ratio: f64,
    pub connect_floor_ratio: f64,
    pub translate_ms: f64,
    pub endpoint_change_us_s100: f64,
    pub endpoint_change_us_s1000: f64,
    pub endpoint_change_us_s10000: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

impl Results {
    pub fn finish(&mut self) {
        self.churn_floor_ratio = ratio(self.churn_p99_ms, self.floor_churn_p99_ms);
        self.weight_floor_ratio = ratio(self.weight_p99_ms, self.floor_weight_p99_ms);
        self.connect_floor_ratio = ratio(self.connect_s, self.floor_connect_s);
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |name: &str, sluice: String, floor: String, ratio: String| {
            t.push_str(&format!("| {name:<34} | {sluice:>12} | {floor:>12} | {ratio:>7} |\n"));
        };
        row("measure", "sluice".into(), "floor".into(), "ratio".into());
        row("---", "---".into(), "---".into(), "---".into());
        let f = |v: f64| format!("{v:.1}");
        let r = |v: f64| format!("{v:.2}x");
        row(
            "connect storm (s)",
            format!("{:.2}", self.connect_s),
            format!("{:.2}", self.floor_connect_s),
            r(self.connect_floor_ratio),
        );
        let [c, e, l, rt, vh] = self.storm_bytes_by_type.map(|b| b / 1024.0);
        row("connect storm: KB/proxy", f(self.storm_bytes_per_proxy / 1024.0), "".into(), "".into());
        row(
            "  CDS / EDS / LDS / RDS / VHDS (KB)",
            format!("{c:.0}/{e:.0}/{l:.0}/{rt:.0}/{vh:.0}"),
            "".into(),
            "".into(),
        );
        row(
            "connect storm: server CPU (s)",
            f(self.storm_server_cpu_s),
            f(self.floor_storm_server_cpu_s),
            r(ratio(self.storm_server_cpu_s, self.floor_storm_server_cpu_s)),
        );
        row("connect storm: driver CPU (s)", f(self.storm_driver_cpu_s), f(self.floor_storm_driver_cpu_s), "".into());
        row(
            "endpoint change p50 (ms)",
            f(self.churn_p50_ms),
            f(self.floor_churn_p50_ms),
            r(ratio(self.churn_p50_ms, self.floor_churn_p50_ms)),
        );
        row("endpoint change p99 (ms)", f(self.churn_p99_ms), f(self.floor_churn_p99_ms), r(self.churn_floor_ratio));
        row("endpoint change max (ms)", f(self.churn_max_ms), "".into(), "".into());
        row(
            "endpoint change bytes/proxy",
            f(self.churn_bytes_per_proxy),
            f(self.floor_churn_bytes_per_proxy),
            "".into(),
        );
        row("weight change p99 (ms)", f(self.weight_p99_ms), f(self.floor_weight_p99_ms), r(self.weight_floor_ratio));
        row("weight change bytes/proxy", f(self.weight_bytes_per_proxy), "".into(), "".into());
        if self.istio {
            row(
                "VirtualService edit p50 / p99 (ms)",
                format!("{:.1} / {:.1}", self.vs_edit_p50_ms, self.vs_edit_p99_ms),
                "".into(),
                "".into(),
            );
            row("VirtualService edit bytes/proxy", f(self.vs_edit_bytes_per_proxy), "".into(), "".into());
        }
        row(
            "streams reopened (storm / all)",
            format!("{} / {}", self.storm_reconnects, self.reconnects),
            "".into(),
            "".into(),
        );
        row("RSS with proxies (MB)", f(self.rss_mb), "".into(), "".into());
        row("RSS without proxies (MB)", f(self.baseline_rss_mb), "".into(), "".into());
        row("RSS per proxy (KB)", f(self.rss_per_proxy_kb), "".into(), "".into());
        row("idle CPU (% of one core)", f(self.idle_cpu_percent), "".into(), "".into());
        for (name, value) in self.translation_rows() {
            row(&name, value, "".into(), "".into());
        }
        t
    }

    /// The translation figures only (`--translation-only`).
    pub fn translation_table(&self) -> String {
        let mut t = format!("| {:<34} | {:>12} |\n| {:<34} | {:>12} |\n", "measure", "sluice", "---", "---");
        for (name, value) in self.translation_rows() {
            t.push_str(&format!("| {name:<34} | {value:>12} |\n"));
        }
        t
    }

    fn translation_rows(&self) -> Vec<(String, String)> {
        vec![
            (format!("translate whole model, S={} (ms)", self.services), format!("{:.2}", self.translate_ms)),
            ("one endpoint change, S=100 (us)".into(), format!("{:.1}", self.endpoint_change_us_s100)),
            ("one endpoint change, S=1000 (us)".into(), format!("{:.1}", self.endpoint_change_us_s1000)),
            ("one endpoint change, S=10000 (us)".into(), format!("{:.1}", self.endpoint_change_us_s10000)),
        ]
    }
}
