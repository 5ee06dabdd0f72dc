//! Golden tests of `sluice::translate`: `tests/golden/<case>/{model,proxy}.yaml` in, Envoy JSON out.
//!
//! `UPDATE_GOLDEN=1 cargo test --test source golden::` rewrites the expected files; otherwise a difference fails with the
//! first differing lines. `SLUICE_BOOTSTRAP_DIR=DIR` also writes, per case, a static Envoy bootstrap (EDS
//! clusters made STATIC with their assignment inlined, RDS replaced by the route configuration) for
//! `envoy --mode validate -c DIR/<case>.json`.

#[path = "../golden/model_loader.rs"]
mod model_loader;

use crate::common;

use serde_json::{Value, json};
use sluice::envoy_json::to_json;
use sluice::model::{InterceptionMode, Model, ProxyInfo};
use sluice::translate;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

struct Case {
    name: String,
    dir: PathBuf,
    model: Model,
    proxy: ProxyInfo,
}

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/golden")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("model.yaml").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{dir:?}/{f}: {e}"));
            let (model, proxy) =
                (model_loader::load_model(&read("model.yaml")), model_loader::load_proxy(&read("proxy.yaml")));
            // An Istio Sidecar narrows what the proxy sees, as the xDS layer serves it (`Snapshot::view`).
            let (model, proxy) = match model.scoped_proxy(&proxy) {
                Some(scoped) => (model.visible_to(&scoped.visibility), scoped),
                None => (model, proxy),
            };
            Case { name: dir.file_name().expect("name").to_string_lossy().into_owned(), model, proxy, dir }
        })
        .collect()
}

fn json_list<M: prost::Message + prost::Name>(items: &[M]) -> Value {
    Value::Array(items.iter().map(|m| to_json(m).expect("to JSON")).collect())
}

/// The four golden documents of a case.
fn outputs(case: &Case) -> BTreeMap<&'static str, Value> {
    let (model, proxy) = (&case.model, &case.proxy);
    let scope = translate::route_scope(model, proxy);
    BTreeMap::from([
        (
            "clusters",
            json!({
                "outbound": json_list(&translate::outbound_clusters(model, proxy)),
                "proxy": json_list(&translate::proxy_clusters(model, proxy)),
            }),
        ),
        ("endpoints", json_list(&translate::load_assignments(model))),
        ("routes", json_list(&translate::route_configs(model, &scope))),
        ("listeners", json_list(&translate::listeners(model, proxy))),
    ])
}

fn first_difference(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let at = w.iter().zip(&g).position(|(a, b)| a != b).unwrap_or(w.len().min(g.len()));
    let from = at.saturating_sub(3);
    let show = |lines: &[&str]| {
        lines.iter().enumerate().skip(from).take(8).map(|(i, l)| format!("  {:>5}: {l}\n", i + 1)).collect::<String>()
    };
    format!("first difference at line {}\n--- expected\n{}+++ actual\n{}", at + 1, show(&w), show(&g))
}

#[test]
fn golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 10, "golden cases missing");
    for case in &all {
        for (kind, value) in outputs(case) {
            let got = serde_json::to_string_pretty(&value).expect("pretty JSON") + "\n";
            let path = case.dir.join(format!("{kind}.json"));
            if update {
                std::fs::write(&path, &got).expect("write golden");
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if want != got {
                failures.push(format!("{}/{kind}.json: {}", case.name, first_difference(&want, &got)));
            }
        }
        if let Some(dir) = std::env::var_os("SLUICE_BOOTSTRAP_DIR") {
            write_bootstrap(case, Path::new(&dir));
        }
    }
    assert!(failures.is_empty(), "golden mismatch (UPDATE_GOLDEN=1 to accept):\n{}", failures.join("\n"));
}

/// Envoy 1.40 itself accepts what every case translates to (listeners, routes, clusters, assignments), checked
/// offline with `envoy --mode validate` so intercept-mode listeners need not bind 0.0.0.0. (Proxyless API
/// listeners cannot be static; the proxyless test covers them with a real gRPC client.)
#[test]
fn envoy_accepts_every_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for case in cases() {
        write_bootstrap(&case, dir.path());
        let file = dir.path().join(format!("{}.json", case.name));
        if !file.exists() {
            continue;
        }
        let out = std::process::Command::new(common::envoy_bin())
            .args(["--mode", "validate", "--log-level", "error", "-c"])
            .arg(&file)
            .output()
            .expect("run envoy");
        assert!(
            out.status.success(),
            "Envoy rejects case {}: {}{}",
            case.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} cases were checked");
}

#[test]
fn same_model_gives_byte_identical_output() {
    for case in cases() {
        let once = outputs(&case);
        let again = outputs(&Case { model: case.model.clone(), ..case });
        assert_eq!(once, again);
    }
}

#[test]
fn service_fast_path_equals_full_assignments() {
    for case in cases() {
        let full = translate::load_assignments(&case.model);
        let mut fast: Vec<_> =
            case.model.services.keys().flat_map(|k| translate::service_load_assignments(&case.model, k)).collect();
        fast.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
        assert_eq!(full, fast, "{}", case.name);
    }
}

/// Every cluster name a JSON document refers to (`cluster` fields, weighted clusters' `name`).
fn referenced_clusters(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(c)) = map.get("cluster") {
                out.insert(c.clone());
            }
            if let Some(Value::Array(list)) = map.get("weightedClusters").and_then(|w| w.get("clusters")) {
                out.extend(list.iter().filter_map(|c| c["name"].as_str()).map(String::from));
            }
            map.values().for_each(|v| referenced_clusters(v, out));
        }
        Value::Array(list) => list.iter().for_each(|v| referenced_clusters(v, out)),
        _ => {}
    }
}

#[test]
fn snapshots_are_consistent() {
    for case in cases() {
        let (model, proxy) = (&case.model, &case.proxy);
        let outbound = translate::outbound_clusters(model, proxy);
        let mut known: BTreeSet<String> = outbound.iter().map(|c| c.name.clone()).collect();
        known.extend(translate::proxy_clusters(model, proxy).into_iter().map(|c| c.name));
        let out = outputs(&case);
        let mut named = BTreeSet::new();
        referenced_clusters(&out["routes"], &mut named);
        referenced_clusters(&out["listeners"], &mut named);
        let missing: Vec<_> = named.difference(&known).collect();
        assert!(missing.is_empty(), "{}: routes name unknown clusters {missing:?}", case.name);
        let assigned: Vec<String> = translate::load_assignments(model).into_iter().map(|a| a.cluster_name).collect();
        let eds: Vec<String> = outbound.into_iter().map(|c| c.name).collect();
        assert_eq!(assigned, eds, "{}: every EDS cluster has exactly one assignment", case.name);
        for config in translate::route_configs(model, &translate::route_scope(model, proxy)) {
            let mut seen = BTreeSet::new();
            for d in config.virtual_hosts.iter().flat_map(|v| &v.domains) {
                assert!(seen.insert(d.clone()), "{}: domain {d} repeats in {}", case.name, config.name);
            }
        }
    }
}

/// A static bootstrap of the case's whole output, for `envoy --mode validate`. Proxyless cases are skipped
/// (API listeners are a client-library concept).
fn write_bootstrap(case: &Case, dir: &Path) {
    if case.proxy.mode == InterceptionMode::Proxyless {
        return;
    }
    let out = outputs(case);
    let assignments: BTreeMap<String, Value> = out["endpoints"]
        .as_array()
        .expect("list")
        .iter()
        .map(|a| (a["clusterName"].as_str().expect("name").to_string(), a.clone()))
        .collect();
    let routes: BTreeMap<String, Value> = out["routes"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| (r["name"].as_str().expect("name").to_string(), r.clone()))
        .collect();
    let mut clusters = Vec::new();
    for list in ["outbound", "proxy"] {
        for c in out["clusters"][list].as_array().expect("list") {
            let mut c = c.clone();
            if c["type"] == "EDS" {
                let obj = c.as_object_mut().expect("object");
                obj.remove("edsClusterConfig");
                obj.insert("type".into(), json!("STATIC"));
                obj.insert("loadAssignment".into(), assignments[obj["name"].as_str().expect("name")].clone());
            }
            clusters.push(c);
        }
    }
    if case.proxy.mtls {
        // The SDS cluster the agent's bootstrap defines (its Unix socket); Envoy only needs it to exist.
        clusters.push(json!({"name": "sds-grpc", "type": "STATIC", "connectTimeout": "1s",
            "typedExtensionProtocolOptions": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicitHttpConfig": {"http2ProtocolOptions": {}}}},
            "loadAssignment": {"clusterName": "sds-grpc", "endpoints": [{"lbEndpoints": [{"endpoint": {"address":
                {"pipe": {"path": "/etc/istio/proxy/XDS"}}}}]}]}}));
    }
    let mut listeners = out["listeners"].clone();
    inline_rds(&mut listeners, &routes);
    let bootstrap = json!({
        "node": {"id": case.proxy.id, "cluster": "sluice-golden"},
        "staticResources": {"clusters": clusters, "listeners": listeners},
    });
    std::fs::create_dir_all(dir).expect("bootstrap dir");
    // DestinationRule TLS names files under /etc/certs/; Envoy reads them, so point it at the test certificates.
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/certs/");
    let text = serde_json::to_string_pretty(&bootstrap).expect("JSON").replace("/etc/certs/", &certs.to_string_lossy());
    std::fs::write(dir.join(format!("{}.json", case.name)), text).expect("write bootstrap");
}

fn inline_rds(value: &mut Value, routes: &BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            if let Some(rds) = map.remove("rds") {
                let name = rds["routeConfigName"].as_str().expect("route config name");
                map.insert("routeConfig".into(), routes[name].clone());
            }
            map.values_mut().for_each(|v| inline_rds(v, routes));
        }
        Value::Array(list) => list.iter_mut().for_each(|v| inline_rds(v, routes)),
        _ => {}
    }
}

/// Every resource of every case meets the constraints Envoy's API declares (its protoc-gen-validate annotations,
/// read from the descriptor set): what Envoy would refuse with "Proto constraint validation failed".
#[test]
fn every_case_meets_envoys_own_constraints() {
    use sluice::xds::pgv::check_message;
    let mut checked = 0;
    for case in cases() {
        let (model, proxy) = (&case.model, &case.proxy);
        let scope = translate::route_scope(model, proxy);
        let mut broken: Vec<String> = Vec::new();
        let mut note = |what: &str, v: Vec<sluice::xds::pgv::Violation>| {
            broken.extend(v.into_iter().map(|v| format!("{what}: {v}")));
        };
        for c in translate::outbound_clusters(model, proxy).iter().chain(&translate::proxy_clusters(model, proxy)) {
            note(&c.name, check_message(c));
        }
        for a in translate::load_assignments(model) {
            note(&a.cluster_name, check_message(&a));
        }
        for r in translate::route_configs(model, &scope) {
            note(&r.name, check_message(&r));
        }
        for l in translate::listeners(model, proxy) {
            note(&l.name, check_message(&l));
        }
        assert!(broken.is_empty(), "case {}: {broken:#?}", case.name);
        checked += 1;
    }
    assert!(checked >= 20, "{checked} cases");
}
