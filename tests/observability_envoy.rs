//! `/metrics` and CSDS with real Envoys (Delta and SotW ADS): after they connect, ACK, and ACK a change, the scrape parses
//! as Prometheus text and holds istiod's xDS names with plausible values and the release families; CSDS reports
//! every resource Envoy holds as ACKED with the version Envoy's own config_dump shows (clusters, listeners, routes;
//! Envoy's dump of load assignments has no version, so those agree by name).
//!
//! One test in this binary: the metrics are per process, so the values asserted are this Envoy's alone.

mod common;

use common::{free_port, prom, reviews_model, start_envoy};
use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{ClientStatusRequest, ConfigStatus};
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher, string_matcher::MatchPattern};
use serde_json::Value;
use sluice::model::{ObjectKey, ReleasePolicySpec};
use sluice::server::{Options, Sluice};
use std::collections::BTreeMap;
use std::time::Duration;

const NODE: &str = "envoy-telemetry";
const NODE_SOTW: &str = "envoy-telemetry-sotw";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const VHDS: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_csds_follow_a_real_envoy() {
    let s = Sluice::start(Options::local()).await.expect("start sluice");
    s.store().set_model(reviews_model(free_port(), free_port()));
    let key = ObjectKey::new("default", "reviews-v3");
    s.releases().apply(&key, ReleasePolicySpec::split("reviews", "v1", "v3", 2000)).expect("apply policy");
    s.wait_published(Duration::from_secs(5)).await.expect("published");
    let (envoy, _listen) = start_envoy(s.xds_addr(), NODE, false).await;
    let (envoy_sotw, _listen) = start_envoy(s.xds_addr(), NODE_SOTW, true).await;
    for node in [NODE, NODE_SOTW] {
        s.wait_acked(node, Duration::from_secs(20)).await.expect("Envoy ACKs the first config");
    }
    // A change while the Envoys are connected: convergence time runs from the change to each one's ACK.
    s.releases().set_weight(&key, 5000).expect("set weight");
    for node in [NODE, NODE_SOTW] {
        s.wait_acked(node, Duration::from_secs(20)).await.expect("Envoy ACKs the change");
    }

    check_metrics(&s).await;
    check_csds(&s, &envoy, NODE).await;
    check_csds(&s, &envoy_sotw, NODE_SOTW).await;
    s.shutdown().await;
}

async fn check_metrics(s: &Sluice) {
    let admin = s.admin_addr().expect("admin port");
    let (status, text) = common::http::get_with(&common::http::client(), admin, "localhost", "/metrics", &[])
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200, "{text}");
    let m = prom::parse(&text);
    for name in [
        "pilot_xds",
        "pilot_xds_pushes",
        "pilot_xds_push_time",
        "pilot_proxy_convergence_time",
        "pilot_total_xds_rejects",
        "pilot_debounce_time",
        "pilot_xds_config_size_bytes",
        "sluice_release_phase",
        "sluice_release_weight",
    ] {
        assert!(prom::documented(&m, name), "{name} has no HELP line in:\n{text}");
    }
    assert_eq!(prom::value(&m, "pilot_xds", &[("protocol", "delta")]), Some(1.0), "one Envoy on Delta ADS");
    assert_eq!(prom::value(&m, "pilot_xds", &[("protocol", "sotw")]), Some(1.0), "one Envoy on SotW ADS");
    for t in ["cds", "eds", "lds", "rds", "vhds"] {
        let pushes = prom::value(&m, "pilot_xds_pushes", &[("type", t)]).unwrap_or(0.0);
        assert!(pushes >= 1.0, "pilot_xds_pushes{{type={t}}} = {pushes}");
        let timed = prom::histogram_count(&m, "pilot_xds_push_time", &[("type", t)]);
        assert_eq!(timed, Some(pushes), "every push is timed ({t})");
        let sized = prom::histogram_count(&m, "pilot_xds_config_size_bytes", &[("type", t)]);
        assert_eq!(sized, Some(pushes), "every push is sized ({t})");
        let bytes = prom::value(&m, "pilot_xds_config_size_bytes_sum", &[("type", t)]).unwrap_or(0.0);
        assert!(bytes > 0.0, "{t} pushes carried {bytes} bytes");
        assert_eq!(prom::value(&m, "pilot_total_xds_rejects", &[("type", t)]), Some(0.0), "Envoy NACKed nothing");
    }
    // Routes went out once to each Envoy; the weight change again: as the whole configuration to the SotW one, as
    // the one changed virtual host (VHDS) to the Delta one, which got its virtual hosts over VHDS to begin with.
    let pushed = |t: &str| prom::value(&m, "pilot_xds_pushes", &[("type", t)]).unwrap_or(0.0);
    let (rds, vhds) = (pushed("rds"), pushed("vhds"));
    assert!(rds >= 3.0, "route configurations to each Envoy, and the change to the SotW one: {rds}");
    assert!(vhds >= 2.0, "the Delta Envoy's virtual hosts, then the changed one: {vhds}");
    let converged = prom::histogram_count(&m, "pilot_proxy_convergence_time", &[]).unwrap_or(0.0);
    assert!(converged >= 2.0, "convergence recorded for the change, per Envoy: {converged}");
    let took = prom::value(&m, "pilot_proxy_convergence_time_sum", &[]).unwrap_or(f64::NAN) / converged;
    assert!((0.0..20.0).contains(&took), "mean convergence {took} s: the change was ACKed within the wait");
    assert!(prom::histogram_count(&m, "pilot_debounce_time", &[]).unwrap_or(0.0) >= 2.0, "two snapshots built");
    let pushes: Vec<String> = ["cds", "eds", "lds", "rds", "vhds"]
        .iter()
        .map(|t| format!("{t}={}", prom::value(&m, "pilot_xds_pushes", &[("type", t)]).unwrap_or(0.0)))
        .collect();
    println!("pushes {}; convergence: {converged} samples, mean {:.1} ms", pushes.join(" "), took * 1000.0);

    let release = [("namespace", "default"), ("policy", "reviews-v3")];
    let phase = |p: &str| prom::value(&m, "sluice_release_phase", &[release[0], release[1], ("phase", p)]);
    assert_eq!(phase("Progressing"), Some(1.0));
    assert_eq!(phase("Promoted"), Some(0.0));
    let weight = |v: &str| prom::value(&m, "sluice_release_weight", &[release[0], release[1], ("version", v)]);
    assert_eq!((weight("v1"), weight("v3")), (Some(50.0), Some(50.0)));
}

fn id_matcher(pattern: MatchPattern) -> NodeMatcher {
    NodeMatcher {
        node_id: Some(StringMatcher { match_pattern: Some(pattern), ignore_case: false }),
        node_metadatas: vec![],
    }
}

/// Resource name → version, per type URL, as Envoy's own config_dump shows what it holds.
async fn envoy_holds(envoy: &common::Envoy) -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let dump: Value = serde_json::from_str(&envoy.admin_get("/config_dump?include_eds").await).expect("JSON");
    let mut out: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    for config in dump["configs"].as_array().expect("configs") {
        let items = |field: &str| config[field].as_array().cloned().unwrap_or_default();
        let kind = config["@type"].as_str().unwrap_or_default();
        if kind.ends_with("ClustersConfigDump") {
            for c in items("dynamic_active_clusters") {
                out.entry(CDS).or_default().insert(s(&c["cluster"]["name"]), s(&c["version_info"]));
            }
        } else if kind.ends_with("EndpointsConfigDump") {
            for e in items("dynamic_endpoint_configs") {
                out.entry(EDS).or_default().insert(s(&e["endpoint_config"]["cluster_name"]), s(&e["version_info"]));
            }
        } else if kind.ends_with("ListenersConfigDump") {
            for l in items("dynamic_listeners") {
                out.entry(LDS).or_default().insert(s(&l["name"]), s(&l["active_state"]["version_info"]));
            }
        } else if kind.ends_with("RoutesConfigDump") {
            for r in items("dynamic_route_configs") {
                let config = &r["route_config"];
                if config.get("vhds").is_none() {
                    out.entry(RDS).or_default().insert(s(&config["name"]), s(&r["version_info"]));
                    continue;
                }
                // Over VHDS Envoy shows the configuration merged, at the version of its last VHDS update, and
                // each virtual host without a version: names only.
                out.entry(RDS).or_default().insert(s(&config["name"]), String::new());
                for v in config["virtual_hosts"].as_array().cloned().unwrap_or_default() {
                    out.entry(VHDS).or_default().insert(s(&v["name"]), String::new());
                }
            }
        }
    }
    out
}

/// CSDS's view of `node` agrees with what that Envoy says it holds. Versions: Delta, each resource's own (as
/// Envoy shows); SotW, the `version_info` of the last response ACKed (CSDS's definition). Envoy shows a SotW
/// resource at the response that last changed it: here the same, since each type's last response changed all of
/// its resources (one CDS and LDS response; the weight change re-sends the one route configuration). Over VHDS
/// (the Delta Envoy) route configurations and virtual hosts agree by name.
async fn check_csds(s: &Sluice, envoy: &common::Envoy, node: &str) {
    let mut client = ClientStatusDiscoveryServiceClient::connect(format!("http://{}", s.xds_addr()))
        .await
        .expect("connect CSDS")
        .max_decoding_message_size(64 << 20);
    let req =
        ClientStatusRequest { node_matchers: vec![id_matcher(MatchPattern::Exact(node.into()))], ..Default::default() };
    let resp = client.fetch_client_status(req).await.expect("fetch_client_status").into_inner();
    assert_eq!(resp.config.len(), 1, "one client matches {node}");
    let config = &resp.config[0];
    assert_eq!(config.node.as_ref().map(|n| n.id.as_str()), Some(node));

    let mut csds: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
    for g in &config.generic_xds_configs {
        let at = format!("{} {}", g.type_url, g.name);
        assert_eq!(g.client_status, ClientResourceStatus::Acked as i32, "{at}: {g:?}");
        assert_eq!(g.config_status, ConfigStatus::Synced as i32, "{at}");
        assert!(g.error_state.is_none() && g.last_updated.is_some(), "{at}");
        let any = g.xds_config.as_ref().unwrap_or_else(|| panic!("{at}: the resource as sent"));
        assert_eq!(any.type_url, g.type_url, "{at}");
        let url = [CDS, EDS, LDS, RDS, VHDS].into_iter().find(|u| *u == g.type_url).expect("a served type");
        csds.entry(url).or_default().insert(g.name.clone(), g.version_info.clone());
    }
    let held = envoy_holds(envoy).await;
    let over_vhds = held.contains_key(VHDS);
    assert_eq!(over_vhds, node == NODE, "the Delta Envoy takes its virtual hosts over VHDS, the SotW one does not");
    for url in [CDS, LDS, RDS, VHDS].into_iter().filter(|u| over_vhds || *u != VHDS) {
        assert!(!held.get(url).is_none_or(|m| m.is_empty()), "Envoy holds {url}");
        let mut ours = csds.get(url).cloned().unwrap_or_default();
        if over_vhds && (url == RDS || url == VHDS) {
            ours.values_mut().for_each(String::clear);
        }
        assert_eq!(Some(&ours), held.get(url), "CSDS and Envoy's config_dump agree on {url} (name → version)");
    }
    // Envoy's dump of load assignments carries no version: the names must agree.
    let names = |m: Option<&BTreeMap<String, String>>| m.map(|m| m.keys().cloned().collect::<Vec<_>>());
    assert!(!names(held.get(EDS)).unwrap_or_default().is_empty(), "Envoy holds load assignments");
    assert_eq!(names(csds.get(EDS)), names(held.get(EDS)), "CSDS and Envoy agree on the load assignments held");

    // Matchers select: a prefix that names nobody answers no client; the stream form answers each request.
    let nobody = ClientStatusRequest {
        node_matchers: vec![id_matcher(MatchPattern::Prefix("nobody-".into()))],
        ..Default::default()
    };
    let none = client.fetch_client_status(nobody).await.expect("fetch").into_inner();
    assert!(none.config.is_empty(), "{none:?}");
    let all = ClientStatusRequest { exclude_resource_contents: true, ..Default::default() };
    let mut stream =
        client.stream_client_status(tokio_stream::iter([all])).await.expect("stream_client_status").into_inner();
    let first = stream.message().await.expect("answer").expect("one answer per request");
    assert_eq!(first.config.len(), 2, "both Envoys");
    assert!(first.config[0].generic_xds_configs.iter().all(|g| g.xds_config.is_none()), "contents excluded");
}
