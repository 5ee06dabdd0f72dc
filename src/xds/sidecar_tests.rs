//! A Sidecar's scope as the streams see it: `Snapshot::view` narrows the proxy, proxies under the same effective
//! Sidecar share one encoded set per type, and a change outside the scope wakes none of them.

use super::TypeKind;
use super::snapshot::{Snapshot, View};
use crate::model::mesh::{Provenance, Sidecar};
use crate::model::{Endpoint, InterceptionMode, Model, ObjectKey, ProxyInfo, Service};
use std::sync::Arc;

fn model(beta_port: u16, hosts: &[&str]) -> Model {
    let mut m = Model::default();
    for (name, port) in [("alpha", 1000), ("beta", beta_port)] {
        let svc = m.insert_service(Service::http("default", name, 9080));
        m.push_endpoint(&svc, Endpoint::ready(name, "127.0.0.1", 9080, port));
    }
    let spec = serde_json::from_value(serde_json::json!({"workloadSelector": {"labels": {"app": "web"}},
        "egress": [{"hosts": hosts}]}))
    .expect("spec");
    let sidecar = Sidecar { name: "web".into(), namespace: "default".into(), spec, provenance: Provenance::default() };
    m.sidecars.insert(ObjectKey::new("default", "web"), sidecar);
    m
}

fn proxy(id: &str, app: &str) -> ProxyInfo {
    let mut p = ProxyInfo::listening(id, "default", "127.0.0.1:15080".parse().unwrap());
    p.labels.insert("app".into(), app.into());
    p
}

fn names(v: &View, kind: TypeKind) -> Vec<String> {
    v.get(kind).keys().cloned().collect()
}

#[test]
fn a_scoped_proxy_gets_only_its_services_and_shares_its_sets() {
    let s = Snapshot::build(1, Arc::new(model(2000, &["./alpha.default.svc.cluster.local"])), None).unwrap();
    let (a, b, other) = (s.view(&proxy("a", "web")), s.view(&proxy("b", "web")), s.view(&proxy("c", "db")));
    let alpha = "outbound|9080||alpha.default.svc.cluster.local";
    assert_eq!(names(&a, TypeKind::Cluster), [alpha]);
    assert_eq!(names(&a, TypeKind::Endpoint), [alpha]);
    let routes: Vec<&String> = a.get(TypeKind::Route).values().flat_map(|r| r.refs.iter()).collect();
    assert_eq!(routes, [alpha], "no virtual host names beta");
    for kind in [TypeKind::Cluster, TypeKind::Endpoint, TypeKind::Listener, TypeKind::Route] {
        assert!(Arc::ptr_eq(a.arc(kind), b.arc(kind)), "{kind:?}: one set for both proxies of the Sidecar");
    }
    assert_eq!(names(&other, TypeKind::Cluster).len(), 2, "a proxy the Sidecar does not select sees both");
    assert!(Arc::ptr_eq(other.arc(TypeKind::Cluster), s.clusters()), "and shares the unscoped set");

    // beta's endpoint moves: the scoped proxies' sets keep their Arcs (their streams are not woken).
    let s2 = Snapshot::build(2, Arc::new(model(2001, &["./alpha.default.svc.cluster.local"])), Some(&s)).unwrap();
    let a2 = s2.view(&proxy("a", "web"));
    assert!(Arc::ptr_eq(a.arc(TypeKind::Endpoint), a2.arc(TypeKind::Endpoint)));
    assert!(Arc::ptr_eq(a.arc(TypeKind::Cluster), a2.arc(TypeKind::Cluster)));

    // The Sidecar widens: the next snapshot's view has beta again, and equals a fresh translation's.
    let wide = Arc::new(model(2001, &["./*"]));
    let s3 = Snapshot::build(3, wide.clone(), Some(&s2)).unwrap();
    let a3 = s3.view(&proxy("a", "web"));
    assert_eq!(names(&a3, TypeKind::Cluster).len(), 2);
    let fresh = Snapshot::build(4, wide, None).unwrap().view(&proxy("a", "web"));
    for kind in [TypeKind::Cluster, TypeKind::Endpoint, TypeKind::Listener, TypeKind::Route] {
        assert_eq!(a3.get(kind), fresh.get(kind), "{kind:?}");
    }
}

#[test]
fn registry_only_changes_only_intercepting_proxies_catch_all() {
    let mut m = model(2000, &["./*"]);
    let web = m.sidecars.get_mut(&ObjectKey::new("default", "web")).expect("sidecar");
    web.spec.outbound_traffic_policy = serde_json::from_value(serde_json::json!({"mode": "REGISTRY_ONLY"})).ok();
    let s = Snapshot::build(1, Arc::new(m), None).unwrap();
    let mut p = proxy("a", "web");
    p.mode = InterceptionMode::Intercept;
    p.inbound_ports = vec![9080];
    let v = s.view(&p);
    assert!(v.get(TypeKind::Cluster).contains_key("BlackHoleCluster"));
    let route = &v.get(TypeKind::Route)["9080"];
    assert!(route.refs.iter().all(|c| c != "PassthroughCluster"), "block_all names no cluster: {:?}", route.refs);
    let mut open = proxy("b", "db");
    open.mode = InterceptionMode::Intercept;
    open.inbound_ports = vec![9080];
    let o = s.view(&open);
    assert!(!o.get(TypeKind::Cluster).contains_key("BlackHoleCluster"));
    assert!(o.get(TypeKind::Route)["9080"].refs.iter().any(|c| c == "PassthroughCluster"));
}
