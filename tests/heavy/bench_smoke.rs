//! `sluice bench` works: a small run (200 proxies) against Sluice and the floor prints every figure the JSON
//! contract names. This checks the program, not the machine: no timing is asserted here (BENCHMARKS.md has the
//! numbers, from release builds).

use serde_json::Value;
use std::process::Command;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bench", "--json", "--services", "50", "--endpoints-per-service", "4", "--connections", "20"])
        .args(args)
        .output()
        .expect("run sluice bench");
    assert!(out.status.success(), "sluice bench failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn bench_runs_against_sluice_and_the_floor_and_reports_every_figure() {
    let _serial = crate::serial_blocking();
    let r = bench(&["--proxies", "200", "--rounds", "2", "--mode", "delta"]);
    for key in [
        "proxies",
        "services",
        "endpoints",
        "mode",
        "connect_s",
        "churn_p50_ms",
        "churn_p99_ms",
        "churn_max_ms",
        "churn_bytes_per_proxy",
        "weight_p99_ms",
        "rss_mb",
        "rss_per_proxy_kb",
        "floor_churn_p99_ms",
        "churn_floor_ratio",
    ] {
        assert!(r.get(key).is_some(), "missing {key} in {r}");
    }
    assert_eq!(
        (r["proxies"].as_u64(), r["services"].as_u64(), r["endpoints"].as_u64()),
        (Some(200), Some(50), Some(200))
    );
    assert_eq!(r["mode"], "delta");
    let positive = |k: &str| r[k].as_f64().unwrap_or(0.0) > 0.0;
    for key in ["connect_s", "churn_p99_ms", "weight_p99_ms", "rss_mb", "floor_churn_p99_ms", "translate_ms"] {
        assert!(positive(key), "{key} should be measured: {r}");
    }
    // Delta sends only the changed assignments: one service's three clusters, far less than the whole EDS set.
    let per_proxy = r["churn_bytes_per_proxy"].as_f64().unwrap();
    assert!(per_proxy > 0.0 && per_proxy < 5_000.0, "delta churn bytes per proxy: {per_proxy}");
    // And a weight change one virtual host over VHDS, not the port's configuration of 50 virtual hosts.
    let weight = r["weight_bytes_per_proxy"].as_f64().unwrap();
    assert!(weight > 0.0 && weight < 3_000.0, "delta weight bytes per proxy: {weight}");
    let storm = r["storm_bytes_by_type"].as_array().expect("bytes by type");
    assert_eq!(storm.len(), 5, "CDS, EDS, LDS, RDS, VHDS: {r}");
    assert!(storm[4].as_f64().unwrap() > storm[3].as_f64().unwrap(), "the virtual hosts come over VHDS: {r}");
}

#[test]
fn bench_measures_virtual_service_edits_and_sidecar_scoped_proxies() {
    let _serial = crate::serial_blocking();
    let scoped = bench(&[
        "--proxies",
        "50",
        "--rounds",
        "2",
        "--no-floor",
        "--stalled",
        "0",
        "--istio",
        "--sidecar-egress",
        "6",
    ]);
    assert_eq!((scoped["istio"].as_bool(), scoped["sidecar_egress"].as_u64()), (Some(true), Some(6)));
    for key in ["vs_edit_p50_ms", "vs_edit_p99_ms", "vs_edit_bytes_per_proxy", "weight_p99_ms", "churn_p99_ms"] {
        assert!(scoped[key].as_f64().unwrap_or(0.0) > 0.0, "{key} should be measured: {scoped}");
    }
    let whole = bench(&["--proxies", "50", "--rounds", "1", "--no-floor", "--stalled", "0", "--istio"]);
    let first = |r: &serde_json::Value| r["storm_bytes_per_proxy"].as_f64().unwrap();
    assert!(
        first(&scoped) * 3.0 < first(&whole),
        "a proxy depending on 6 of 50 services gets a fraction of the config: {} vs {} bytes",
        first(&scoped),
        first(&whole)
    );
}

#[test]
fn bench_speaks_state_of_the_world_too() {
    let _serial = crate::serial_blocking();
    let r = bench(&["--proxies", "50", "--rounds", "1", "--mode", "sotw", "--no-floor", "--stalled", "0"]);
    assert_eq!(r["mode"], "sotw");
    assert!(r["churn_bytes_per_proxy"].as_f64().unwrap() > 5_000.0, "SotW sends the whole EDS set: {r}");
}
