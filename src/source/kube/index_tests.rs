//! The index's tests: relists, readiness, invalid objects, the model built from slices and pods.

use super::*;
use crate::model::{Service, ServicePort, TargetPort};
use crate::source::kube::convert::{PodLabels, SliceEndpoint};

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name)
}

fn svc(name: &str) -> Result<Item, Invalid> {
    let port =
        ServicePort { name: "http".into(), port: 9080, target_port: TargetPort::Number(9080), app_protocol: None };
    Ok(Item::Service(
        Service { name: name.into(), namespace: "default".into(), ports: vec![port], ..Default::default() },
        Default::default(),
    ))
}

fn slice(service: &str, eps: &[(&str, &str, bool)]) -> Result<Item, Invalid> {
    let endpoints = eps
        .iter()
        .map(|(pod, ip, ready)| SliceEndpoint {
            address: ip.to_string(),
            pod: Some(pod.to_string()),
            ready: *ready,
            terminating: false,
            zone: None,
        })
        .collect();
    Ok(Item::Slice(Slice { service: service.into(), ports: [("http".into(), 9080)].into(), endpoints }))
}

fn pod(version: &str) -> Result<Item, Invalid> {
    let labels = [("version".to_string(), version.to_string())].into();
    Ok(Item::Pod(PodLabels { labels, service_account: None }))
}

fn bad() -> Result<Item, Invalid> {
    Err(Invalid { field: "spec.canary".into(), message: "must differ from spec.stable".into() })
}

fn index() -> (Index, [usize; 3]) {
    let mut ix = Index::default();
    let ids = [ix.add_shard(Kind::Service), ix.add_shard(Kind::Pod), ix.add_shard(Kind::EndpointSlice)];
    (ix, ids)
}

fn list(ix: &mut Index, shard: usize, items: Vec<(ObjectKey, Result<Item, Invalid>)>) {
    ix.apply(shard, Change::Init);
    for (k, i) in items {
        ix.apply(shard, Change::InitApply(k, i));
    }
    ix.apply(shard, Change::InitDone);
}

#[test]
fn ready_only_once_every_shard_has_listed() {
    let (mut ix, [s, p, e]) = index();
    list(&mut ix, s, vec![(key("reviews"), svc("reviews"))]);
    list(&mut ix, p, vec![]);
    assert!(!ix.is_ready());
    list(&mut ix, e, vec![]);
    assert!(ix.is_ready());
}

#[test]
fn endpoints_join_slices_and_pods_by_target_ref() {
    let (mut ix, [s, p, e]) = index();
    list(&mut ix, s, vec![(key("reviews"), svc("reviews"))]);
    list(&mut ix, p, vec![(key("r1"), pod("v1")), (key("r2"), pod("v2"))]);
    list(
        &mut ix,
        e,
        vec![(key("reviews-a"), slice("reviews", &[("r1", "10.0.0.1", true), ("r2", "10.0.0.2", false)]))],
    );
    let m = ix.model();
    let eps = m.endpoints_of(&key("reviews"));
    assert_eq!(eps.len(), 2);
    assert_eq!((eps[0].label("version"), eps[0].ready, eps[0].ports[&9080]), (Some("v1"), true, 9080));
    assert_eq!((eps[1].label("version"), eps[1].ready), (Some("v2"), false));
}

#[test]
fn a_relist_removes_what_is_gone_and_never_shows_a_partial_list() {
    let (mut ix, [s, _, _]) = index();
    list(&mut ix, s, vec![(key("a"), svc("a")), (key("b"), svc("b"))]);
    ix.apply(s, Change::Init);
    ix.apply(s, Change::InitApply(key("a"), svc("a")));
    // Mid-relist, the model still has both.
    assert_eq!(ix.model().services.len(), 2);
    assert!(ix.apply(s, Change::InitDone).changed);
    assert_eq!(ix.model().services.keys().collect::<Vec<_>>(), [&key("a")]);
}

#[test]
fn an_invalid_object_is_reported_once_and_its_delete_applies() {
    let mut ix = Index::default();
    let shard = ix.add_shard(Kind::ReleasePolicy);
    list(&mut ix, shard, vec![]);
    let first = ix.apply(shard, Change::Apply(key("p"), bad()));
    assert_eq!(first.rejected.as_ref().map(|r| (r.kind, r.key.clone())), Some((Kind::ReleasePolicy, key("p"))));
    assert!(!first.changed);
    assert_eq!(ix.apply(shard, Change::Apply(key("p"), bad())).rejected, None, "reported once");
    ix.apply(shard, Change::Delete(key("p")));
    assert!(ix.apply(shard, Change::Apply(key("p"), bad())).rejected.is_some(), "a new object again");
}

#[test]
fn an_absent_kind_counts_as_listed_and_empties_its_shard() {
    let (mut ix, [s, p, e]) = index();
    let vs = ix.add_shard(Kind::VirtualService);
    for shard in [s, p, e] {
        list(&mut ix, shard, vec![]);
    }
    assert!(!ix.is_ready());
    assert!(ix.apply(vs, Change::Absent).changed);
    assert!(ix.is_ready());
    let item = Item::VirtualService(Box::default());
    list(&mut ix, vs, vec![(key("reviews"), Ok(item))]);
    assert_eq!(ix.model().virtual_services.len(), 1);
    assert!(ix.apply(vs, Change::Absent).changed, "CRD removed: its objects go");
    assert!(ix.model().virtual_services.is_empty());
}

#[test]
fn an_invalid_edit_keeps_the_last_valid_version() {
    let (mut ix, [s, p, e]) = index();
    list(&mut ix, p, vec![]);
    list(&mut ix, e, vec![]);
    list(&mut ix, s, vec![(key("a"), svc("a"))]);
    assert!(ix.apply(s, Change::Apply(key("a"), bad())).rejected.is_some());
    assert!(ix.model().services.contains_key(&key("a")));
    list(&mut ix, s, vec![(key("a"), bad())]);
    assert!(ix.model().services.contains_key(&key("a")), "kept across a relist too");
    assert_eq!(ix.apply(s, Change::Apply(key("a"), bad())).rejected, None, "still reported once");
    assert!(ix.apply(s, Change::Delete(key("a"))).changed);
    assert!(ix.model().services.is_empty());
}

#[test]
fn gateway_kinds_reach_the_model_and_the_status_writer() {
    use crate::model::mesh::{ApiGateway, GatewayClass, TlsSecret};
    use crate::source::kube::convert::{ServiceFront, Tracked};
    use crate::source::kube::gateway_status::StatusObjects;
    let mut ix = Index::default();
    let [classes, gateways, secrets, services] =
        [Kind::GatewayClass, Kind::ApiGateway, Kind::Secret, Kind::Service].map(|k| ix.add_shard(k));
    let tracked = Tracked { generation: Some(2), status: None };
    let class =
        Item::GatewayClass(Box::new(GatewayClass { name: "sluice".into(), ..Default::default() }), tracked.clone());
    list(&mut ix, classes, vec![(ObjectKey::new("", "sluice"), Ok(class))]);
    list(&mut ix, gateways, vec![(key("gw"), Ok(Item::ApiGateway(Box::<ApiGateway>::default(), tracked)))]);
    let secret =
        TlsSecret { name: "cert".into(), namespace: "default".into(), cert_chain: "c".into(), private_key: "k".into() };
    list(&mut ix, secrets, vec![(key("cert"), Ok(Item::Secret(Box::new(secret))))]);
    let front = ServiceFront { gateway: Some("gw".into()), ingress: vec![] };
    let Ok(Item::Service(gw_svc, _)) = svc("gw-svc") else { panic!() };
    list(
        &mut ix,
        services,
        vec![(key("gw-svc"), Ok(Item::Service(gw_svc, front.clone()))), (key("plain"), svc("plain"))],
    );
    assert!(ix.is_ready());
    let m = ix.model();
    assert!(m.gateway_classes.contains_key(&ObjectKey::new("", "sluice")));
    assert!(m.api_gateways.contains_key(&key("gw")) && m.secrets.contains_key(&key("cert")));
    let objects = StatusObjects::of(ix.items());
    assert_eq!(objects.gateways[&key("gw")].1.generation, Some(2));
    assert_eq!(objects.fronts.keys().collect::<Vec<_>>(), [&key("gw-svc")], "only Services that front a Gateway");
    assert!(Kind::ApiGateway.is_optional() && !Kind::Secret.is_optional());
}

#[test]
fn a_slice_endpoints_zone_is_its_locality_zone_unless_the_pod_says() {
    let (mut ix, [s, p, e]) = index();
    list(&mut ix, s, vec![(key("reviews"), svc("reviews"))]);
    let mut labelled = PodLabels { labels: [("version".into(), "v2".into())].into(), service_account: None };
    labelled.labels.insert(crate::model::ZONE_LABEL.into(), "pod-zone".into());
    list(&mut ix, p, vec![(key("r1"), pod("v1")), (key("r2"), Ok(Item::Pod(labelled)))]);
    let Ok(Item::Slice(mut zoned)) = slice("reviews", &[("r1", "10.0.0.1", true), ("r2", "10.0.0.2", true)]) else {
        panic!("a slice")
    };
    for ep in &mut zoned.endpoints {
        ep.zone = Some("us-east-1a".into());
    }
    list(&mut ix, e, vec![(key("reviews-a"), Ok(Item::Slice(zoned)))]);
    let m = ix.model();
    let zones: Vec<Option<&str>> =
        m.endpoints_of(&key("reviews")).iter().map(|e| e.label(crate::model::ZONE_LABEL)).collect();
    assert_eq!(zones, [Some("us-east-1a"), Some("pod-zone")]);
}
