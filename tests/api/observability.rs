//! Metrics and CSDS against tonic clients that play Envoy: a NACK counts in `pilot_total_xds_rejects{type}` and
//! shows in CSDS as NACKED with its reason; a response not yet answered shows STALE, a route held back until its
//! clusters are ACKed NOT_SENT, a named resource that does not exist DOES_NOT_EXIST; node matchers select.
//!
//! Only one test here NACKs, so the reject counter (per process) moves by exactly its NACK.

use crate::client;
use crate::common;

use client::{CDS, Delta, EDS, RDS, Sotw, VHDS};
use common::prom;
use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{ClientConfig, ClientStatusRequest, ConfigStatus};
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher, string_matcher::MatchPattern};
use prost::Message;
use sluice::model::*;
use sluice::server::{Options, Sluice};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn cluster(subset: &str, svc: &str) -> String {
    format!("outbound|9080|{subset}|{svc}.default.svc.cluster.local")
}

fn add(m: &mut Model, svc: &str, version: &str, port: u16) {
    let key = m.insert_service(Service::http("default", svc, 9080));
    let ep = Endpoint::ready(&format!("{svc}-{version}"), "127.0.0.1", 9080, port).with_label("version", version);
    m.push_endpoint(&key, ep);
}

async fn start() -> Sluice {
    let s = Sluice::start(Options::local()).await.expect("start sluice");
    let mut m = Model::default();
    add(&mut m, "reviews", "v1", 19082);
    s.store().set_model(m);
    s.wait_published(Duration::from_secs(5)).await.expect("published");
    s
}

fn matcher(pattern: MatchPattern) -> NodeMatcher {
    NodeMatcher {
        node_id: Some(StringMatcher { match_pattern: Some(pattern), ignore_case: false }),
        ..Default::default()
    }
}

async fn csds(s: &Sluice, matchers: Vec<NodeMatcher>) -> Vec<ClientConfig> {
    let mut c = ClientStatusDiscoveryServiceClient::connect(format!("http://{}", s.xds_addr())).await.expect("CSDS");
    let req = ClientStatusRequest { node_matchers: matchers, ..Default::default() };
    c.fetch_client_status(req).await.expect("fetch_client_status").into_inner().config
}

/// Polls CSDS for `node` until `pred` holds on its resources (streams report after each message they handle).
async fn csds_until(s: &Sluice, node: &str, pred: impl Fn(&[GenericXdsConfig]) -> bool) -> Vec<GenericXdsConfig> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let configs = csds(s, vec![matcher(MatchPattern::Exact(node.into()))]).await;
        let resources = configs.into_iter().next().map(|c| c.generic_xds_configs).unwrap_or_default();
        if pred(&resources) {
            return resources;
        }
        assert!(Instant::now() < deadline, "CSDS for {node} never showed what was expected: {resources:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn find<'a>(rs: &'a [GenericXdsConfig], type_url: &str, name: &str) -> Option<&'a GenericXdsConfig> {
    rs.iter().find(|g| g.type_url == type_url && g.name == name)
}

async fn rejects(s: &Sluice) -> HashMap<&'static str, f64> {
    let admin = s.admin_addr().expect("admin");
    let (status, text) =
        common::http::get_with(&common::http::client(), admin, "localhost", "/metrics", &[]).await.expect("metrics");
    assert_eq!(status, 200);
    let m = prom::parse(&text);
    ["cds", "eds", "lds", "rds"]
        .into_iter()
        .map(|t| (t, prom::value(&m, "pilot_total_xds_rejects", &[("type", t)]).unwrap_or(0.0)))
        .collect()
}

#[tokio::test]
async fn a_nack_counts_as_a_reject_of_its_type_and_csds_shows_it_with_the_reason() {
    let s = start().await;
    let mut c = Sotw::connect(s.xds_addr(), "p-nack").await;
    c.send(CDS, &[], "", "", None).await;
    let good = c.recv().await;
    c.ack(&good, &[]).await;
    let before = rejects(&s).await;

    s.store().update(|m| add(m, "details", "v1", 19081));
    s.wait_published(Duration::from_secs(5)).await.expect("published");
    let bad = c.recv().await;
    assert_eq!(bad.type_url, CDS);
    c.send(CDS, &[], &good.version_info, &bad.nonce, Some("cluster details: bad TLS context")).await;

    let details = cluster("", "details");
    let rs = csds_until(&s, "p-nack", |rs| {
        find(rs, CDS, &details).is_some_and(|g| g.client_status == ClientResourceStatus::Nacked as i32)
    })
    .await;
    let nacked = find(&rs, CDS, &details).unwrap();
    assert_eq!(nacked.config_status, ConfigStatus::Error as i32);
    assert_eq!(nacked.version_info, bad.version_info, "the rejected version");
    let error = nacked.error_state.as_ref().expect("error_state");
    assert_eq!(error.details, "cluster details: bad TLS context");
    assert_eq!(error.version_info, bad.version_info);
    let rejected = nacked.xds_config.as_ref().expect("the rejected resource, as sent");
    let decoded = envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(rejected.value.as_slice()).unwrap();
    assert_eq!(decoded.name, details);
    // What the proxy kept: its last good clusters, ACKed at the last good version.
    let kept = find(&rs, CDS, &cluster("", "reviews")).expect("reviews cluster");
    assert_eq!(
        (kept.client_status, kept.config_status, kept.version_info.as_str()),
        (ClientResourceStatus::Acked as i32, ConfigStatus::Synced as i32, good.version_info.as_str())
    );

    let after = rejects(&s).await;
    assert_eq!(after["cds"], before["cds"] + 1.0, "one CDS NACK");
    for t in ["eds", "lds", "rds"] {
        assert_eq!(after[t], before[t], "no {t} NACK");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn csds_shows_in_flight_held_back_and_missing_resources_and_matchers_select() {
    let s = start().await;
    let mut c = Delta::connect(s.xds_addr(), "csds-a").await;
    let mut other = Sotw::connect(s.xds_addr(), "other-b").await;
    other.send(CDS, &[], "", "", None).await;
    c.subscribe(CDS, &[], HashMap::new()).await;
    let cds = c.recv().await;
    // Not answered yet: the clusters are sent, not ACKed. The virtual host needs them ACKed first (make before
    // break; a Delta proxy takes the route configuration's virtual hosts over VHDS, and the configuration itself,
    // naming no cluster, goes out at once); a named assignment that does not exist is reported absent.
    c.subscribe(RDS, &["sluice-listen"], HashMap::new()).await;
    c.subscribe(VHDS, &[], HashMap::new()).await;
    c.subscribe(EDS, &["no-such-cluster"], HashMap::new()).await;
    let vhost = "sluice-listen/reviews.default.svc.cluster.local:9080";
    let rs =
        csds_until(&s, "csds-a", |rs| find(rs, EDS, "no-such-cluster").is_some() && find(rs, VHDS, vhost).is_some())
            .await;
    for r in &cds.resources {
        let g = find(&rs, CDS, &r.name).unwrap_or_else(|| panic!("{} in CSDS", r.name));
        assert_eq!(
            (g.config_status, g.client_status),
            (ConfigStatus::Stale as i32, ClientResourceStatus::Requested as i32)
        );
        assert_eq!(g.version_info, r.version, "Delta: the resource's version");
        assert!(g.last_updated.is_some());
    }
    let route = find(&rs, VHDS, vhost).unwrap();
    assert_eq!(
        (route.config_status, route.client_status),
        (ConfigStatus::NotSent as i32, ClientResourceStatus::Requested as i32)
    );
    assert!(route.xds_config.is_none());
    let missing = find(&rs, EDS, "no-such-cluster").unwrap();
    assert_eq!(
        (missing.config_status, missing.client_status),
        (ConfigStatus::NotSent as i32, ClientResourceStatus::DoesNotExist as i32)
    );

    // The ACK makes the clusters SYNCED/ACKED.
    c.reply(&cds, None).await;
    csds_until(&s, "csds-a", |rs| {
        cds.resources.iter().all(|r| {
            find(rs, CDS, &r.name).is_some_and(|g| {
                g.client_status == ClientResourceStatus::Acked as i32 && g.config_status == ConfigStatus::Synced as i32
            })
        })
    })
    .await;

    // Matchers: a prefix selects one client; several matchers are OR-ed; none selects all.
    let ids = |configs: Vec<ClientConfig>| configs.into_iter().map(|c| c.node.unwrap().id).collect::<Vec<_>>();
    assert_eq!(ids(csds(&s, vec![matcher(MatchPattern::Prefix("csds-".into()))]).await), ["csds-a"]);
    let either = vec![matcher(MatchPattern::Exact("csds-a".into())), matcher(MatchPattern::Suffix("-b".into()))];
    assert_eq!(ids(csds(&s, either).await), ["csds-a", "other-b"]);
    assert_eq!(ids(csds(&s, vec![]).await), ["csds-a", "other-b"]);
    s.shutdown().await;
}

#[tokio::test]
async fn proxy_status_prints_what_each_proxy_holds_per_type() {
    let s = start().await;
    let mut c = Sotw::connect(s.xds_addr(), "ps-synced").await;
    c.sync_like_envoy().await;
    s.wait_acked("ps-synced", Duration::from_secs(5)).await.expect("synced");
    let xds = format!("http://{}", s.xds_addr());
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(&args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "sluice {args:?} failed: {stderr}");
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let table = run(vec!["proxy-status".into(), "--xds".into(), xds.clone(), "ps-".into()]).await;
    let rows: Vec<Vec<&str>> =
        table.lines().map(|l| l.split("  ").filter(|c| !c.is_empty()).map(str::trim).collect()).collect();
    assert_eq!(rows.len(), 2, "a header and one proxy:\n{table}");
    assert_eq!(rows[0], ["NODE", "CDS", "EDS", "LDS", "RDS", "VHDS"]);
    assert_eq!(rows[1][0], "ps-synced");
    assert!(rows[1][1..5].iter().all(|c| c.starts_with("SYNCED ")), "every type synced:\n{table}");
    assert_eq!(rows[1][5], "-", "a SotW proxy takes no VHDS:\n{table}");

    let json = run(vec!["proxy-status".into(), "--xds".into(), xds, "-o".into(), "json".into()]).await;
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["config"][0]["node"]["id"], "ps-synced");
    let first = &v["config"][0]["genericXdsConfigs"][0];
    assert_eq!(first["configStatus"], "SYNCED", "{first}");
    assert!(first["xdsConfig"]["@type"].is_string(), "the resource itself: {first}");
    s.shutdown().await;
}
