//! Tests of `xds::snapshot`: incremental builds give what a fresh translation gives.

use super::*;
use crate::model::{Endpoint, ReleasePolicy, ReleasePolicySpec, Service};
use crate::xds::TypeKind;

fn model(v3_ready: bool, v1_port: u16) -> Model {
    let mut m = Model::default();
    let svc = m.insert_service(Service::http("default", "reviews", 9080));
    m.push_endpoint(&svc, Endpoint::ready("a", "127.0.0.1", 9080, v1_port).with_label("version", "v1"));
    let mut v3 = Endpoint::ready("b", "127.0.0.1", 9080, 19084).with_label("version", "v3");
    v3.ready = v3_ready;
    m.push_endpoint(&svc, v3);
    m.insert_policy(ReleasePolicy::new("default", "r", ReleasePolicySpec::split("reviews", "v1", "v3", 2000)));
    m
}

fn proxy() -> ProxyInfo {
    ProxyInfo::listening("p", "default", "127.0.0.1:15080".parse().unwrap())
}

#[test]
fn an_endpoint_move_carries_clusters_and_routes_over() {
    let a = Snapshot::build(1, Arc::new(model(true, 19082)), None).unwrap();
    let routes_a = a.view(&proxy()).get(crate::xds::TypeKind::Route).clone();
    let b = Snapshot::build(2, Arc::new(model(true, 19090)), Some(&a)).unwrap();
    assert!(Arc::ptr_eq(a.clusters(), b.clusters()), "same versions: clusters are shared, not rebuilt");
    assert_ne!(
        a.endpoints().values().map(|r| &r.version).collect::<Vec<_>>(),
        b.endpoints().values().map(|r| &r.version).collect::<Vec<_>>()
    );
    assert_eq!(&routes_a, b.view(&proxy()).get(crate::xds::TypeKind::Route));
    assert_eq!(lock(&b.routes).len(), 1, "the route cache was carried over");
}

#[test]
fn a_version_losing_its_last_ready_endpoint_rebuilds_routes() {
    let a = Snapshot::build(1, Arc::new(model(true, 19082)), None).unwrap();
    let before = a.view(&proxy()).get(crate::xds::TypeKind::Route).clone();
    let b = Snapshot::build(2, Arc::new(model(false, 19082)), Some(&a)).unwrap();
    assert!(lock(&b.routes).is_empty(), "readiness changed: routes are derived again");
    let after = b.view(&proxy()).get(crate::xds::TypeKind::Route).clone();
    assert_ne!(before["sluice-listen"].version, after["sluice-listen"].version, "v3's weight moved to v1");
}

fn two_namespaces(b_port: u16, a_port: u16) -> Model {
    let mut m = Model::default();
    for (ns, port) in [("a", a_port), ("b", b_port)] {
        let svc = m.insert_service(Service::http(ns, "web", 80));
        m.push_endpoint(&svc, Endpoint::ready("w", "127.0.0.1", 80, port));
    }
    m
}

#[test]
fn a_limited_visibility_sees_its_namespaces_and_is_woken_only_by_their_changes() {
    let mut p = proxy();
    p.namespace = "a".into();
    p.visibility = Visibility::Namespaces(["a".to_string()].into());
    let s1 = Snapshot::build(1, Arc::new(two_namespaces(1000, 2000)), None).unwrap();
    let v1 = s1.view(&p);
    let names = |v: &View, k| v.get(k).keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&v1, TypeKind::Cluster), ["outbound|80||web.a.svc.cluster.local"]);
    assert_eq!(names(&v1, TypeKind::Endpoint), ["outbound|80||web.a.svc.cluster.local"]);
    let route = &v1.get(TypeKind::Route)["sluice-listen"];
    assert_eq!(route.refs.iter().collect::<Vec<_>>(), ["outbound|80||web.a.svc.cluster.local"]);

    // b's endpoint moves: a's scoped assignments keep their Arc (streams of `a` are not woken).
    let s2 = Snapshot::build(2, Arc::new(two_namespaces(1001, 2000)), Some(&s1)).unwrap();
    assert!(Arc::ptr_eq(v1.arc(TypeKind::Endpoint), s2.view(&p).arc(TypeKind::Endpoint)));
    // a's endpoint moves: a new set, with the new assignment.
    let s3 = Snapshot::build(3, Arc::new(two_namespaces(1001, 2001)), Some(&s2)).unwrap();
    let v3 = s3.view(&p);
    assert!(!Arc::ptr_eq(v1.arc(TypeKind::Endpoint), v3.arc(TypeKind::Endpoint)));
    assert_eq!(v3.get(TypeKind::Endpoint), &*visible::filter(s3.endpoints(), &p.visibility));
}

#[test]
fn only_mtls_proxies_get_the_mesh_clusters_and_they_follow_service_accounts() {
    let mut m = model(true, 19082);
    let sidecar = |m: &mut Model, sa: &str| {
        for e in m.endpoints.get_mut(&ObjectKey::new("default", "reviews")).unwrap() {
            e.labels.insert(crate::model::TLS_MODE_LABEL.into(), crate::model::TLS_MODE_ISTIO.into());
            e.service_account = Some(sa.into());
        }
    };
    sidecar(&mut m, "reviews");
    let a = Snapshot::build(1, Arc::new(m.clone()), None).unwrap();
    let mut mtls = proxy();
    mtls.mtls = true;
    let plain = a.view(&proxy());
    assert!(Arc::ptr_eq(plain.arc(TypeKind::Cluster), a.clusters()), "no TLS for a proxy without SLUICE_MTLS");
    let mesh = a.view(&mtls);
    assert!(!Arc::ptr_eq(mesh.arc(TypeKind::Cluster), a.clusters()));
    assert!(Arc::ptr_eq(plain.arc(TypeKind::Endpoint), mesh.arc(TypeKind::Endpoint)), "one EDS set for both");
    // A new service account changes the mesh clusters' SANs only: the plain set keeps its Arc.
    sidecar(&mut m, "reviews-v2");
    let b = Snapshot::build(2, Arc::new(m), Some(&a)).unwrap();
    assert!(Arc::ptr_eq(a.clusters(), b.clusters()));
    assert!(!Arc::ptr_eq(mesh.arc(TypeKind::Cluster), b.view(&mtls).arc(TypeKind::Cluster)));
    let fresh = Snapshot::build(3, b.model.clone(), None).unwrap();
    assert_eq!(b.view(&mtls).get(TypeKind::Cluster), fresh.view(&mtls).get(TypeKind::Cluster));
}

#[test]
fn store_edits_build_the_same_sets_as_a_fresh_translation() {
    let store = crate::store::Store::new();
    store.set_model(model(true, 19082));
    let mut prev = Snapshot::build(1, store.model(), None).unwrap();
    let vhds = ProxyInfo { vhds: true, ..proxy() };
    let _ = (prev.view(&proxy()), prev.view(&vhds));
    let reviews = || ObjectKey::new("default", "reviews");
    let edits: [&dyn Fn(&mut Model); 5] = [
        // Endpoints only, same versions: the fast path, clusters shared.
        &|m| {
            m.endpoints.get_mut(&reviews()).unwrap()[0].ports.insert(9080, 19090);
        },
        // Endpoints only, v3 gone: clusters and routes derived again.
        &|m| m.endpoints.get_mut(&reviews()).unwrap().retain(|e| e.label("version") != Some("v3")),
        // A release step (policies only): the touched Services' resources derived again, the rest carried.
        &|m| {
            let key = m.policies.keys().next().unwrap().clone();
            m.policies.get_mut(&key).unwrap().spec.traffic.canary_weight = 3000;
        },
        &|m| {
            let key = m.policies.keys().next().unwrap().clone();
            m.policies.get_mut(&key).unwrap().spec.canary = "v2".into();
        },
        // Policies only, one gone.
        &|m| m.policies.clear(),
    ];
    for (i, edit) in edits.into_iter().enumerate() {
        let before = store.model();
        store.update(|m| edit(m));
        let next = Snapshot::build(2 + i as u64, store.model(), Some(&prev)).unwrap();
        assert!(!Arc::ptr_eq(&before, &next.model), "edit {i} changed the model");
        let fresh = Snapshot::build(99, store.model(), None).unwrap();
        assert_eq!(**next.clusters(), **fresh.clusters(), "clusters after edit {i}");
        assert_eq!(**next.endpoints(), **fresh.endpoints(), "assignments after edit {i}");
        for (k, p) in TypeKind::ALL.into_iter().flat_map(|k| [(k, proxy()), (k, vhds.clone())]) {
            assert_eq!(next.view(&p).get(k), fresh.view(&p).get(k), "{k:?} (VHDS: {}) after edit {i}", p.vhds);
        }
        assert!(!next.view(&vhds).get(TypeKind::VirtualHost).is_empty());
        assert_eq!(next.route_patch.is_some(), i >= 2, "edit {i} is a policy-only change: patched");
        prev = next;
    }
}

#[test]
fn a_virtual_service_edit_patches_the_touched_services_and_matches_a_fresh_translation() {
    let yaml = include_str!("../../tests/golden/istio-reviews-80-20/model.yaml");
    let model = crate::source::parse_str(yaml, "model.yaml").expect("the golden model loads");
    let store = crate::store::Store::new();
    store.set_model(model);
    let prev = Snapshot::build(1, store.model(), None).unwrap();
    let vhds = ProxyInfo { vhds: true, ..proxy() };
    let _ = (prev.view(&proxy()), prev.view(&vhds));
    let reviews = ObjectKey::new("default", "reviews");
    store.update(|m| {
        let vs = m.virtual_services.get_mut(&reviews).expect("reviews' VirtualService");
        let text = serde_json::to_string(&vs.spec).unwrap().replace("\"subset\":\"v2\"", "\"subset\":\"v3\"");
        vs.spec = serde_json::from_str(&text).unwrap();
    });
    let next = Snapshot::build(2, store.model(), Some(&prev)).unwrap();
    let touched = next.route_patch.clone().expect("a VirtualService edit takes the patch path");
    assert!(touched.contains(&reviews), "{touched:?}");
    assert!(!touched.contains(&ObjectKey::new("default", "details")), "details is not touched: {touched:?}");
    let fresh = Snapshot::build(99, store.model(), None).unwrap();
    for (k, p) in TypeKind::ALL.into_iter().flat_map(|k| [(k, proxy()), (k, vhds.clone())]) {
        assert_eq!(next.view(&p).get(k), fresh.view(&p).get(k), "{k:?} (VHDS: {})", p.vhds);
    }
    assert!(next.clusters().keys().any(|c| c == "outbound|9080|v3|reviews.default.svc.cluster.local"));
}
