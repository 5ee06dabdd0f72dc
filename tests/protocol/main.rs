//! Protocol tests: the real server on 127.0.0.1:0 and tonic clients that play Envoy.

mod client;
mod limits;

use client::{CDS, Delta, EDS, LDS, RDS, Sotw, VHDS, names};
use sluice::model::*;
use sluice::server::{Options, Sluice};
use sluice::xds::TypeKind;
use std::collections::HashMap;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(400);

fn cluster(subset: &str, svc: &str) -> String {
    format!("outbound|9080|{subset}|{svc}.default.svc.cluster.local")
}

fn add_service(m: &mut Model, name: &str) {
    m.insert_service(Service::http("default", name, 9080));
}

fn add_endpoint(m: &mut Model, svc: &str, version: &str, port: u16) {
    let ep = Endpoint::ready(&format!("{svc}-{version}-{port}"), "127.0.0.1", 9080, port)
        .with_label("app", svc)
        .with_label("version", version);
    m.push_endpoint(&ObjectKey::new("default", svc), ep);
}

/// A release policy; its state (phase, live weight) is the release controller's, driven by verbs.
fn set_policy(m: &mut Model, canary: &str, weight: u32) {
    m.insert_policy(ReleasePolicy::new(
        "default",
        "reviews-rel",
        ReleasePolicySpec::split("reviews", "v1", canary, weight),
    ));
}

/// reviews (v1, v3) and ratings (v1): 2 clusters, the catch-alls (no route names a version, so there is no subset
/// cluster until a release policy or a VirtualService does).
fn bookinfo() -> Model {
    let mut m = Model::default();
    add_service(&mut m, "reviews");
    add_endpoint(&mut m, "reviews", "v1", 19082);
    add_endpoint(&mut m, "reviews", "v3", 19084);
    add_service(&mut m, "ratings");
    add_endpoint(&mut m, "ratings", "v1", 19085);
    m
}

async fn start(model: Model) -> Sluice {
    let s = Sluice::start(Options::local()).await.expect("start sluice");
    s.store().set_model(model);
    s.wait_published(Duration::from_secs(5)).await.expect("published");
    s
}

async fn publish(s: &Sluice, edit: impl FnOnce(&mut Model)) {
    s.store().update(edit);
    s.wait_published(Duration::from_secs(5)).await.expect("published");
}

#[tokio::test]
async fn wildcard_cds_and_lds_get_everything_and_unchanged_config_is_not_resent() {
    let s = start(bookinfo()).await;
    let mut c = Sotw::connect(s.xds_addr(), "p1").await;
    c.send(CDS, &[], "", "", None).await;
    let cds = c.recv().await;
    let mut got = names(&cds);
    got.sort();
    assert_eq!(got, [cluster("", "ratings"), cluster("", "reviews")]);
    c.ack(&cds, &[]).await;
    c.send(LDS, &[], "", "", None).await;
    let lds = c.recv().await;
    assert_eq!(names(&lds).len(), 1, "listen mode has one listener");
    c.ack(&lds, &[]).await;

    // An endpoint-only change leaves clusters and listeners as they are: nothing is sent on CDS or LDS.
    publish(&s, |m| add_endpoint(m, "reviews", "v1", 19090)).await;
    assert!(c.try_recv(QUIET).await.is_none(), "unchanged CDS/LDS must not be re-sent");

    // A new service changes CDS: the full set comes again, with the new clusters.
    publish(&s, |m| {
        add_service(m, "details");
        add_endpoint(m, "details", "v1", 19081);
    })
    .await;
    let next = c.recv().await;
    assert_eq!(next.type_url, CDS);
    assert_eq!(names(&next).len(), 3);
    assert_ne!(next.version_info, cds.version_info);
    s.shutdown().await;
}

#[tokio::test]
async fn nack_keeps_last_good_is_not_resent_and_shows_in_syncz() {
    let s = start(bookinfo()).await;
    let mut c = Sotw::connect(s.xds_addr(), "p-nack").await;
    c.send(CDS, &[], "", "", None).await;
    let good = c.recv().await;
    c.ack(&good, &[]).await;

    publish(&s, |m| add_service(m, "details")).await;
    let bad = c.recv().await;
    // NACK: error_detail present, version_info the last good one.
    c.send(CDS, &[], &good.version_info, &bad.nonce, Some("cluster details: invalid")).await;
    assert!(c.try_recv(QUIET).await.is_none(), "a NACKed version must not be re-sent");

    let status = &s.registry().get("p-nack")[0].types[&TypeKind::Cluster];
    assert_eq!(status.acked.as_deref(), Some(good.version_info.as_str()), "the last good version stays");
    let nack = status.last_nack.as_ref().expect("NACK recorded");
    assert_eq!(nack.reason, "cluster details: invalid");
    assert_eq!(nack.version, bad.version_info);
    let syncz = http_get(s.admin_addr().unwrap(), "/debug/syncz").await;
    assert!(syncz.contains("cluster details: invalid"), "syncz shows the NACK reason: {syncz}");

    // The refused cluster is traced (it was the one change) and held back; other new config still flows.
    assert_eq!(status.refused.iter().map(|r| r.unit.resource.as_str()).collect::<Vec<_>>(), [cluster("", "details")]);
    publish(&s, |m| add_service(m, "productpage")).await;
    let next = c.recv().await;
    let got = names(&next);
    assert!(got.contains(&cluster("", "productpage")) && !got.contains(&cluster("", "details")), "{got:?}");
    c.ack(&next, &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = &s.registry().get("p-nack")[0].types[&TypeKind::Cluster];
    assert!(status.last_nack.is_some(), "the refusal stands while the refused cluster is unchanged");

    // A new version of the refused cluster is offered again, and its ACK clears the NACK.
    publish(&s, |m| {
        m.services.remove(&ObjectKey::new("default", "details"));
        m.insert_service(Service::grpc("default", "details", 9080));
    })
    .await;
    let fixed = c.recv().await;
    assert!(names(&fixed).contains(&cluster("", "details")));
    c.ack(&fixed, &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = &s.registry().get("p-nack")[0].types[&TypeKind::Cluster];
    assert!(status.last_nack.is_none() && status.refused.is_empty());
    assert_eq!(status.acked.as_deref(), Some(fixed.version_info.as_str()));
    s.shutdown().await;
}

#[tokio::test]
async fn a_stale_nonce_is_ignored() {
    let s = start(bookinfo()).await;
    let mut c = Sotw::connect(s.xds_addr(), "p-stale").await;
    c.send(CDS, &[], "", "", None).await;
    let first = c.recv().await;
    c.ack(&first, &[]).await;
    publish(&s, |m| add_service(m, "details")).await;
    let second = c.recv().await;
    // A NACK that names the older nonce is stale: it must not count against the response in flight.
    c.send(CDS, &[], &first.version_info, &first.nonce, Some("late complaint")).await;
    c.send(CDS, &[], &first.version_info, "no-such-nonce", Some("bogus")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = s.registry().get("p-stale")[0].types[&TypeKind::Cluster].clone();
    assert!(status.last_nack.is_none(), "stale NACKs are ignored");
    assert!(status.pending, "the newest response is still waiting for its ACK");
    c.ack(&second, &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = s.registry().get("p-stale")[0].types[&TypeKind::Cluster].clone();
    assert_eq!(status.acked.as_deref(), Some(second.version_info.as_str()));
    s.shutdown().await;
}

#[tokio::test]
async fn named_eds_answers_known_names_and_later_the_ones_that_appear() {
    let s = start(bookinfo()).await;
    let mut c = Sotw::connect(s.xds_addr(), "p-eds").await;
    let v1 = cluster("", "reviews");
    let v2 = cluster("", "details");
    c.send(EDS, &[&v1, &v2], "", "", None).await;
    let r = c.recv().await;
    assert_eq!(names(&r), vec![v1.clone()], "only the name that exists");
    c.ack(&r, &[&v1, &v2]).await;
    assert!(c.try_recv(QUIET).await.is_none());

    publish(&s, |m| {
        add_service(m, "details");
        add_endpoint(m, "details", "v1", 19083);
    })
    .await;
    let r = c.recv().await;
    let mut got = names(&r);
    got.sort();
    assert_eq!(got, vec![v2.clone(), v1.clone()], "the later name is sent when it appears");

    // A newly requested name is sent even though nothing changed.
    c.ack(&r, &[&v1, &v2]).await;
    let rv = cluster("", "ratings");
    c.send(EDS, &[&v1, &v2, &rv], &r.version_info, &r.nonce, None).await;
    let r = c.recv().await;
    assert!(names(&r).contains(&rv));
    s.shutdown().await;
}

#[tokio::test]
async fn named_rds_and_make_before_break_on_finalize() {
    let mut m = bookinfo();
    set_policy(&mut m, "v3", 2000);
    let s = start(m).await;
    let mut c = Sotw::connect(s.xds_addr(), "p-order").await;
    let clusters = c.sync_like_envoy().await;
    assert!(clusters.contains(&cluster("v1", "reviews")));
    s.wait_acked("p-order", Duration::from_secs(5)).await.expect("in sync");

    // Promote and finalize to v3: v1's subset cluster goes away, but only after routes stop naming it.
    let key = ObjectKey::new("default", "reviews-rel");
    s.releases().act(&key, sluice::release::Verb::Promote).unwrap();
    s.releases().act(&key, sluice::release::Verb::Finalize).unwrap();
    s.wait_published(Duration::from_secs(5)).await.unwrap();
    let first = c.recv().await;
    assert_eq!(first.type_url, RDS, "routes change first; clusters are removed only after");
    c.ack(&first, &["sluice-listen"]).await;
    let second = c.recv().await;
    assert_eq!(second.type_url, CDS);
    assert!(!names(&second).contains(&cluster("v1", "reviews")), "v1's cluster is removed after the route ACK");
    s.shutdown().await;
}

#[tokio::test]
async fn routes_wait_until_new_clusters_and_endpoints_are_acked() {
    let mut m = bookinfo();
    set_policy(&mut m, "v3", 2000);
    let s = start(m).await;
    let mut c = Sotw::connect(s.xds_addr(), "p-make").await;
    let clusters = c.sync_like_envoy().await;

    // A new canary version: its cluster must be ACKed with its endpoints before a route names it.
    publish(&s, |m| {
        add_endpoint(m, "reviews", "v4", 19086);
        set_policy(m, "v4", 5000);
    })
    .await;
    let cds = c.recv().await;
    assert_eq!(cds.type_url, CDS);
    let v4 = cluster("v4", "reviews");
    assert!(names(&cds).contains(&v4));
    // Meanwhile only endpoints may change (the catch-all gains v4's endpoint); no route may name v4 yet.
    let mut early = Vec::new();
    while let Some(r) = c.try_recv(QUIET).await {
        assert_ne!(r.type_url, RDS, "no route may name v4 before its cluster is ACKed");
        early.push(r);
    }
    c.ack(&cds, &[]).await;
    let old: Vec<&str> = clusters.iter().map(String::as_str).collect();
    for r in &early {
        c.ack(r, &old).await;
    }
    // Envoy asks for the new cluster's endpoints.
    let mut eds_names: Vec<String> = clusters.clone();
    eds_names.push(v4.clone());
    let refs: Vec<&str> = eds_names.iter().map(String::as_str).collect();
    c.send(EDS, &refs, "", "", None).await;
    let eds = c.recv().await;
    assert_eq!(eds.type_url, EDS);
    assert!(c.try_recv(QUIET).await.is_none(), "routes wait for the EDS ACK too");
    c.ack(&eds, &refs).await;
    let rds = c.recv().await;
    assert_eq!(rds.type_url, RDS, "now the route may name v4");
    s.shutdown().await;
}

#[tokio::test]
async fn delta_reconnect_with_initial_versions_gets_only_what_changed() {
    let s = start(bookinfo()).await;
    let mut d = Delta::connect(s.xds_addr(), "p-delta").await;
    d.subscribe(CDS, &[], HashMap::new()).await;
    let r = d.recv().await;
    assert_eq!(r.resources.len(), 2);
    assert!(r.removed_resources.is_empty());
    d.reply(&r, None).await;
    let held: HashMap<String, String> = r.resources.iter().map(|x| (x.name.clone(), x.version.clone())).collect();
    drop(d);

    // While disconnected: details appears, ratings goes.
    publish(&s, |m| {
        add_service(m, "details");
        add_endpoint(m, "details", "v1", 19081);
        m.services.remove(&ObjectKey::new("default", "ratings"));
        m.endpoints.remove(&ObjectKey::new("default", "ratings"));
    })
    .await;
    let mut d = Delta::connect(s.xds_addr(), "p-delta").await;
    d.subscribe(CDS, &[], held).await;
    let r = d.recv().await;
    let mut sent: Vec<String> = r.resources.iter().map(|x| x.name.clone()).collect();
    sent.sort();
    assert_eq!(sent, [cluster("", "details")], "only the new cluster");
    assert_eq!(r.removed_resources, [cluster("", "ratings")], "what the proxy held that no longer exists is removed");
    d.reply(&r, None).await;
    assert!(d.try_recv(QUIET).await.is_none());
    s.shutdown().await;
}

#[tokio::test]
async fn delta_unknown_names_are_reported_removed_then_sent_when_they_appear() {
    let s = start(bookinfo()).await;
    let mut d = Delta::connect(s.xds_addr(), "p-delta-eds").await;
    let v2 = cluster("v2", "reviews");
    d.subscribe(EDS, &[&v2], HashMap::new()).await;
    let r = d.recv().await;
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, vec![v2.clone()]);
    d.reply(&r, None).await;
    // v2's subset cluster comes into being when a release policy names it.
    publish(&s, |m| {
        add_endpoint(m, "reviews", "v2", 19083);
        set_policy(m, "v2", 1000);
    })
    .await;
    let r = d.recv().await;
    assert_eq!(r.resources.iter().map(|x| x.name.clone()).collect::<Vec<_>>(), vec![v2]);
    s.shutdown().await;
}

/// A Delta client that names its VHDS subscription (Envoy's first request names none) gets the virtual hosts of the
/// route configurations it names, only once their clusters are held; dropping a configuration and asking for it
/// again sends its virtual hosts again.
#[tokio::test]
async fn delta_vhds_by_configuration_name_follows_subscribe_and_unsubscribe() {
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use prost::Message;
    let s = start(bookinfo()).await;
    let mut d = Delta::connect(s.xds_addr(), "p-vhds").await;
    // Clusters by wildcard, as Envoy takes them (what make-before-break orders against), not ACKed yet.
    d.subscribe(CDS, &[], HashMap::new()).await;
    let cds = d.recv().await;
    d.subscribe(RDS, &["sluice-listen"], HashMap::new()).await;
    let rds = d.recv().await;
    let header = RouteConfiguration::decode(rds.resources[0].resource.as_ref().unwrap().value.as_slice()).unwrap();
    assert!(header.vhds.is_some() && header.virtual_hosts.is_empty(), "the VHDS form: {header:?}");
    d.reply(&rds, None).await;
    d.subscribe(VHDS, &["sluice-listen"], HashMap::new()).await;
    // Make before break: no virtual host before its cluster and assignment are held.
    let first = d.recv().await;
    assert!(first.resources.is_empty(), "held back until the clusters are ACKed: {first:?}");
    d.reply(&first, None).await;
    d.reply(&cds, None).await;
    let clusters: Vec<String> = cds.resources.iter().map(|r| r.name.clone()).collect();
    d.subscribe(EDS, &clusters.iter().map(String::as_str).collect::<Vec<_>>(), HashMap::new()).await;
    let eds = d.recv().await;
    d.reply(&eds, None).await;
    let vhost_names = |r: &envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse| {
        let mut n: Vec<String> = r.resources.iter().map(|x| x.name.clone()).collect();
        n.sort();
        n
    };
    let want = [
        "sluice-listen/ratings.default.svc.cluster.local:9080",
        "sluice-listen/reviews.default.svc.cluster.local:9080",
    ];
    let vh = d.recv().await;
    assert_eq!(vh.type_url, VHDS);
    assert_eq!(vhost_names(&vh), want);
    d.reply(&vh, None).await;
    assert!(d.try_recv(QUIET).await.is_none(), "nothing more while nothing changes");
    // The configuration dropped and named again: its virtual hosts are sent again.
    d.unsubscribe(VHDS, &["sluice-listen"]).await;
    d.subscribe(VHDS, &["sluice-listen"], HashMap::new()).await;
    let again = d.recv().await;
    assert_eq!(vhost_names(&again), want, "sent again after the proxy dropped them");
    s.shutdown().await;
}

#[tokio::test]
async fn sotw_and_delta_clients_share_one_server() {
    let s = start(bookinfo()).await;
    let mut a = Sotw::connect(s.xds_addr(), "p-sotw").await;
    let mut b = Delta::connect(s.xds_addr(), "p-delta2").await;
    a.send(CDS, &[], "", "", None).await;
    b.subscribe(CDS, &[], HashMap::new()).await;
    let ra = a.recv().await;
    let rb = b.recv().await;
    assert_eq!(names(&ra).len(), rb.resources.len());
    a.ack(&ra, &[]).await;
    b.reply(&rb, None).await;
    publish(&s, |m| add_service(m, "details")).await;
    assert_eq!(names(&a.recv().await).len(), 3);
    let rb = b.recv().await;
    assert_eq!(rb.resources.len(), 1, "delta sends only the new cluster");
    assert_eq!(s.registry().list().len(), 2);
    s.shutdown().await;
}

#[tokio::test]
async fn a_stream_without_node_is_refused_with_a_reason() {
    let s = start(bookinfo()).await;
    let mut client = envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient::connect(format!("http://{}", s.xds_addr())).await.unwrap();
    let req =
        envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest { type_url: CDS.into(), ..Default::default() };
    let mut rx = client.stream_aggregated_resources(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let err = rx.message().await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("node"), "{}", err.message());
    s.shutdown().await;
}

#[tokio::test]
async fn readyz_waits_for_every_source_and_config_dump_shows_what_a_proxy_holds() {
    let store = sluice::store::Store::new();
    store.register_source("file");
    let s = Sluice::start_with(Options::local(), store, serde_json::Value::Null).await.unwrap();
    let admin = s.admin_addr().unwrap();
    assert!(http_get(admin, "/readyz").await.starts_with("HTTP/1.0 503"), "not ready before the source loads");
    assert!(http_get(admin, "/healthz").await.starts_with("HTTP/1.0 200"));
    s.store().set_part("file", bookinfo());
    s.wait_published(Duration::from_secs(5)).await.unwrap();
    assert!(http_get(admin, "/readyz").await.starts_with("HTTP/1.0 200"));

    let mut c = Sotw::connect(s.xds_addr(), "p-dump").await;
    c.sync_like_envoy().await;
    s.wait_acked("p-dump", Duration::from_secs(5)).await.unwrap();
    let dump = http_get(admin, "/debug/config_dump?proxy=p-dump").await;
    assert!(dump.starts_with("HTTP/1.0 200"), "{dump}");
    let body: serde_json::Value = serde_json::from_str(dump.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let clusters = &body["streams"][0]["types"]["clusters"]["resources"];
    assert_eq!(clusters.as_array().unwrap().len(), 2, "{body}");
    assert_eq!(clusters[0]["@type"], CDS);
    let routes = &body["streams"][0]["types"]["routes"]["resources"][0];
    assert_eq!(routes["name"], "sluice-listen", "Envoy JSON of the route configuration: {routes}");
    assert!(http_get(admin, "/debug/config_dump?proxy=nobody").await.starts_with("HTTP/1.0 404"));
    s.shutdown().await;
}

/// A plain HTTP/1.0 GET on the admin port.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("admin port");
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    out
}

/// The per-type services (CDS, EDS, LDS, RDS without ADS) answer their own type on both protocols, and refuse the
/// unary fetch with a reason.
#[tokio::test]
async fn per_type_services_serve_their_type_and_refuse_fetch() {
    use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
    use envoy_types::pb::envoy::service::route::v3::route_discovery_service_client::RouteDiscoveryServiceClient;
    let s = start(bookinfo()).await;
    let url = format!("http://{}", s.xds_addr());
    let mut cds = ClusterDiscoveryServiceClient::connect(url.clone()).await.expect("connect");
    let req = DiscoveryRequest { node: Some(client::node("p-cds")), type_url: CDS.into(), ..Default::default() };
    let mut rx = cds.stream_clusters(tokio_stream::iter(vec![req])).await.expect("StreamClusters").into_inner();
    let r = rx.message().await.expect("a response").expect("not the end");
    assert_eq!((r.type_url.as_str(), r.resources.len()), (CDS, 2), "SotW CDS: both catch-all clusters");

    let req =
        DeltaDiscoveryRequest { node: Some(client::node("p-cds-delta")), type_url: CDS.into(), ..Default::default() };
    let mut rx = cds.delta_clusters(tokio_stream::iter(vec![req])).await.expect("DeltaClusters").into_inner();
    let r = rx.message().await.expect("a response").expect("not the end");
    assert_eq!((r.type_url.as_str(), r.resources.len()), (CDS, 2), "Delta CDS: both catch-all clusters");

    let mut rds = RouteDiscoveryServiceClient::connect(url).await.expect("connect");
    let err = rds.fetch_routes(DiscoveryRequest::default()).await.expect_err("unary fetch is refused");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    assert!(err.message().contains("gRPC stream"), "the reason says what to use: {}", err.message());
    s.shutdown().await;
}
