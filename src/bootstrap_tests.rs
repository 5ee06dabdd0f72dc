//! `sluice bootstrap`'s tests: the Envoy bootstrap it renders (listen, intercept, mTLS, gateway, stats) and a gRPC
//! client's.

use super::*;

#[test]
fn a_grpc_bootstrap_names_sluice_the_node_and_the_grpc_generator() {
    let args = BootstrapArgs {
        node_id: "ratings-client-1".into(),
        namespace: "shop".into(),
        xds: "[::1]:15010".parse().expect("host:port"),
        labels: vec![("app".into(), "ratings".into())],
        grpc: true,
        ..Default::default()
    };
    let b = render_grpc(&args);
    assert_eq!(
        b,
        json!({
            "xds_servers": [{"server_uri": "[::1]:15010", "channel_creds": [{"type": "insecure"}],
                             "server_features": ["xds_v3"]}],
            "node": {"id": "ratings-client-1", "cluster": "shop",
                     "metadata": {"NAMESPACE": "shop", "LABELS": {"app": "ratings"}, "GENERATOR": "grpc"}},
        })
    );
    let tls = BootstrapTls {
        tls_cert: Some("/etc/certs/cert-chain.pem".into()),
        tls_key: Some("/etc/certs/key.pem".into()),
        tls_ca: Some("/etc/certs/root-cert.pem".into()),
        tls_server_name: None,
    };
    let b = render_grpc(&BootstrapArgs { tls, ..args });
    assert_eq!(
        b["xds_servers"][0]["channel_creds"],
        json!([{"type": "tls", "config": {"ca_certificate_file": "/etc/certs/root-cert.pem",
            "certificate_file": "/etc/certs/cert-chain.pem", "private_key_file": "/etc/certs/key.pem"}}])
    );
}
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BootstrapArgs,
}

fn render_flags(flags: &[&str]) -> Value {
    let cli = Cli::try_parse_from(std::iter::once("bootstrap").chain(flags.iter().copied())).unwrap();
    render(&cli.args)
}

#[test]
fn defaults_are_delta_ads_to_a_static_cluster() {
    let b = render_flags(&["--node-id", "p1"]);
    assert_eq!(b["node"]["id"], "p1");
    assert_eq!(b["node"]["cluster"], "default");
    assert_eq!(b["node"]["metadata"], json!({ "NAMESPACE": "default", "LABELS": {} }));
    let ads = &b["dynamic_resources"]["ads_config"];
    assert_eq!(ads["api_type"], "DELTA_GRPC");
    assert_eq!(ads["transport_api_version"], "V3");
    assert_eq!(ads["set_node_on_first_message_only"], true);
    assert_eq!(ads["grpc_services"][0]["envoy_grpc"]["cluster_name"], XDS_CLUSTER);
    for key in ["cds_config", "lds_config"] {
        assert_eq!(b["dynamic_resources"][key], json!({ "ads": {}, "resource_api_version": "V3" }));
    }
    let cluster = &b["static_resources"]["clusters"][0];
    assert_eq!(cluster["type"], "STATIC");
    assert_eq!(cluster["connect_timeout"], "1s");
    let addr = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
    assert_eq!(addr, &socket_address("127.0.0.1", 15010));
    let h2 = &cluster["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS];
    assert_eq!(h2["explicit_http_config"]["http2_protocol_options"], json!({}));
    assert_eq!(b["admin"]["address"], socket_address("127.0.0.1", 15000));
    let sink = &b["stats_sinks"][0]["typed_config"];
    assert_eq!(sink["grpc_service"]["envoy_grpc"]["cluster_name"], XDS_CLUSTER);
    assert_eq!((&sink["report_counters_as_deltas"], &sink["histogram_emit_mode"]), (&json!(true), &json!("HISTOGRAM")));
    assert_eq!(b["stats_flush_interval"], "1s");
}

#[test]
fn the_stats_matcher_keeps_the_version_cluster_stats_the_sink_reads() {
    let re = regex::Regex::new(KEPT_CLUSTER_STATS).unwrap();
    let re = |name: &str| re.is_match(name);
    let v3 = "cluster.outbound|9080|v3|reviews.default.svc.cluster.local";
    for stat in ["upstream_rq_total", "upstream_rq_5xx", "upstream_rq_time"] {
        assert!(re(&format!("{v3}.{stat}")), "{stat} kept");
    }
    assert!(!re(&format!("{v3}.upstream_cx_total")));
    assert!(!re("cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_total"), "no version");
    assert!(!re("cluster.sluice-xds.upstream_rq_total"));
}

#[test]
fn inclusion_flags_keep_more_stats() {
    let b = render_flags(&[
        "--node-id=p",
        "--stats-inclusion-prefixes=cluster.outbound|9080||reviews.default.svc.cluster.local.,http.",
        "--stats-inclusion-suffixes=upstream_rq_retry",
        "--stats-inclusion-regexps=.*circuit_breakers.*",
    ]);
    let patterns = &b["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"];
    let n = patterns.as_array().map_or(0, Vec::len);
    assert_eq!(patterns[n - 4], json!({"prefix": "cluster.outbound|9080||reviews.default.svc.cluster.local."}));
    assert_eq!(patterns[n - 3], json!({"prefix": "http."}));
    assert_eq!(patterns[n - 2], json!({"suffix": "upstream_rq_retry"}));
    assert_eq!(patterns[n - 1], json!({"safe_regex": {"regex": ".*circuit_breakers.*"}}));
}

#[test]
fn flags_fill_metadata_and_sotw() {
    let b = render_flags(&[
        "--node-id=p2",
        "--namespace=shop",
        "--listen=127.0.0.1:15080",
        "--sotw",
        "--labels=app=reviews,version=v3",
        "--inbound-ports=9080,9081",
        "--admin-port=15999",
    ]);
    assert_eq!(b["node"]["cluster"], "shop");
    assert_eq!(
        b["node"]["metadata"],
        json!({
            "NAMESPACE": "shop",
            "LABELS": { "app": "reviews", "version": "v3" },
            "SLUICE_LISTEN": "127.0.0.1:15080",
            "INBOUND_PORTS": "9080,9081",
        })
    );
    assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
    assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 15999);
}

#[test]
fn hostname_xds_uses_strict_dns() {
    let cluster =
        render_flags(&["--node-id=p", "--xds=sluice.sluice-system.svc:15010"])["static_resources"]["clusters"][0]
            .clone();
    assert_eq!(cluster["type"], "STRICT_DNS");
    assert_eq!(cluster["dns_lookup_family"], "V4_PREFERRED");
    let ip6 = render_flags(&["--node-id=p", "--xds=[::1]:15010"])["static_resources"]["clusters"][0].clone();
    assert_eq!(ip6["type"], "STATIC");
    assert!(ip6.get("dns_lookup_family").is_none());
}

#[test]
fn certificate_paths_give_an_mtls_xds_cluster() {
    let b = render_flags(&[
        "--node-id=p",
        "--xds=sluice.sluice-system.svc:15012",
        "--tls-cert=/etc/certs/cert.pem",
        "--tls-key=/etc/certs/key.pem",
        "--tls-ca=/etc/certs/root.pem",
    ]);
    let tls = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"], "sluice.sluice-system.svc");
    let common = &tls["common_tls_context"];
    assert_eq!(common["tls_certificates"][0]["certificate_chain"]["filename"], "/etc/certs/cert.pem");
    assert_eq!(common["tls_certificates"][0]["private_key"]["filename"], "/etc/certs/key.pem");
    assert_eq!(common["validation_context"]["trusted_ca"]["filename"], "/etc/certs/root.pem");
    let san = &common["validation_context"]["match_typed_subject_alt_names"][0];
    assert_eq!(san, &json!({ "san_type": "DNS", "matcher": { "exact": "sluice.sluice-system.svc" } }));
    let plain = render_flags(&["--node-id=p"]);
    assert!(plain["static_resources"]["clusters"][0].get("transport_socket").is_none());
    let partial = Cli::try_parse_from(["b", "--node-id=p", "--tls-cert=/c.pem"]);
    assert!(partial.is_err(), "a certificate without key and CA is refused");
}

#[test]
fn bad_flags_are_rejected() {
    let parse = |flags: &[&str]| Cli::try_parse_from(std::iter::once("b").chain(flags.iter().copied())).is_ok();
    assert!(!parse(&[]), "node id is required");
    assert!(!parse(&["--node-id=p", "--xds=nohost"]));
    assert!(!parse(&["--node-id=p", "--xds=:15010"]));
    assert!(!parse(&["--node-id=p", "--labels=novalue"]));
    assert!(!parse(&["--node-id=p", "--listen=host:1"]), "--listen takes an IP");
    assert!(!parse(&["--node-id=p", "--stats-inclusion-regexps=a(b"]), "a broken regex");
    assert!(!parse(&["--node-id=p", "--gateway=gw"]), "--gateway takes NAMESPACE/NAME");
    assert!(!parse(&["--node-id=p", "--gateway-bind=127.0.0.1"]), "--gateway-bind needs --gateway");
    let b = render_flags(&["--node-id=gw", "--gateway=istio-system/public", "--gateway-bind=127.0.0.1"]);
    assert_eq!(b["node"]["metadata"][META_GATEWAY], "istio-system/public");
    assert_eq!(b["node"]["metadata"][META_GATEWAY_BIND], "127.0.0.1");
    assert_eq!("[::1]:80".parse::<HostPort>().unwrap().to_string(), "[::1]:80");
}
