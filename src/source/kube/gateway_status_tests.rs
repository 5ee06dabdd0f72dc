//! The statuses owed to a class, a Gateway with a valid and an invalid listener, and an attached route; the
//! Gateway's addresses from its Service.

use super::*;
use crate::model::Service;
use crate::model::mesh::GatewayAddress;

const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: productpage}
spec:
  ports: [{name: http, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
  - name: https
    port: 8443
    protocol: HTTPS
    hostname: bookinfo.example.com
    tls: {certificateRefs: [{name: missing-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules: [{backendRefs: [{name: productpage, port: 9080}]}]
"#;

fn setup() -> (Model, StatusObjects) {
    let model = crate::source::parse_str(YAML, "t.yaml").expect("model");
    let tracked = |g| Tracked { generation: Some(g), status: None };
    let key = |ns: &str, n: &str| ObjectKey::new(ns, n);
    let mut objects = StatusObjects::default();
    let class = model.gateway_classes[&key("", "sluice")].clone();
    objects.classes.insert(key("", "sluice"), (class, tracked(1)));
    let gw = model.api_gateways[&key("default", "gw")].clone();
    objects.gateways.insert(key("default", "gw"), (gw, tracked(2)));
    let route = model.http_routes[&key("default", "bookinfo")].clone();
    objects.routes.insert(key("default", "bookinfo"), (route, tracked(3)));
    (model, objects)
}

fn find<'a>(list: &'a Value, kind: &str) -> &'a Value {
    list.as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap_or_else(|| panic!("{kind} in {list}"))
}

fn by_target(all: &[Desired], target: Target) -> &Value {
    &all.iter().find(|d| d.target == target).unwrap_or_else(|| panic!("{target:?}: {all:?}")).status
}

#[test]
fn class_gateway_and_route_statuses_with_their_generations() {
    let (model, objects) = setup();
    let all = desired(&model, &objects);
    let class = by_target(&all, Target::GatewayClass);
    assert_eq!((find(&class["conditions"], "Accepted")["status"].as_str()), Some("True"));
    assert_eq!(find(&class["conditions"], "Accepted")["observedGeneration"], 1);

    let gw = by_target(&all, Target::Gateway);
    let accepted = find(&gw["conditions"], "Accepted");
    assert_eq!((accepted["status"].as_str(), accepted["reason"].as_str()), (Some("True"), Some("ListenersNotValid")));
    let programmed = find(&gw["conditions"], "Programmed");
    assert_eq!(programmed["reason"], "AddressNotAssigned", "no Service fronts it: {programmed}");
    assert_eq!((programmed["status"].as_str(), programmed["observedGeneration"].as_i64()), (Some("False"), Some(2)));
    assert!(programmed["message"].as_str().unwrap().contains("gateway-name: gw"), "{programmed}");
    assert!(gw["addresses"].is_null());
    let [http, https] = gw["listeners"].as_array().unwrap().as_slice() else { panic!("{gw}") };
    assert_eq!((http["attachedRoutes"].as_u64(), https["attachedRoutes"].as_u64()), (Some(1), Some(0)));
    let refs = find(&https["conditions"], "ResolvedRefs");
    assert_eq!((refs["status"].as_str(), refs["reason"].as_str()), (Some("False"), Some("InvalidCertificateRef")));
    assert_eq!(refs["observedGeneration"], 2);
    assert_eq!(find(&http["conditions"], "Programmed")["status"], "True");

    let route = by_target(&all, Target::HttpRoute);
    let parent = &route["parents"][0];
    assert_eq!(parent["controllerName"], "sluice.dev/gateway-controller");
    assert_eq!((find(&parent["conditions"], "Accepted")["status"].as_str()), Some("True"));
    assert_eq!(find(&parent["conditions"], "ResolvedRefs")["observedGeneration"], 3);
}

#[test]
fn an_object_the_model_holds_in_another_version_gets_no_status_yet() {
    let (model, mut objects) = setup();
    let (gw, _) = objects.gateways.values_mut().next().unwrap();
    gw.spec.listeners.pop();
    let all = desired(&model, &objects);
    assert!(all.iter().all(|d| d.target != Target::Gateway), "its generation may not be the model's spec: {all:?}");
}

#[test]
fn addresses_come_from_the_labelled_service_or_the_one_a_hostname_names() {
    let (mut model, objects) = setup();
    let key = ObjectKey::new("default", "gw");
    let mut gw = objects.gateways[&key].0.clone();
    let mut fronts = BTreeMap::new();
    let mut svc = Service::http("default", "gw-sluice", 80);
    svc.cluster_ip = Some("10.96.0.10".parse().unwrap());
    model.insert_service(svc);
    let label = ServiceFront { gateway: Some("gw".into()), ingress: vec![] };
    fronts.insert(ObjectKey::new("default", "gw-sluice"), label.clone());
    assert_eq!(addresses(&model, &fronts, &key, &gw), Ok(vec![("IPAddress", "10.96.0.10".into())]), "cluster IP");
    let ingress = vec![("IPAddress", "203.0.113.7".into()), ("Hostname", "lb.example.com".into())];
    fronts.insert(ObjectKey::new("default", "gw-sluice"), ServiceFront { ingress: ingress.clone(), ..label });
    assert_eq!(addresses(&model, &fronts, &key, &gw), Ok(ingress.clone()), "the load balancer's, not the cluster IP");
    // A labelled Service of another namespace does not count.
    let other = ObjectKey::new("other", "gw-sluice");
    let elsewhere: BTreeMap<_, _> = [(other, fronts[&ObjectKey::new("default", "gw-sluice")].clone())].into();
    assert!(addresses(&model, &elsewhere, &key, &gw).is_err());
    // A Hostname address names the Service, by short name or FQDN.
    let hostname = |v: &str| GatewayAddress { kind: Some("Hostname".into()), value: v.into() };
    for value in ["gw-sluice", "gw-sluice.default.svc.cluster.local"] {
        gw.spec.addresses = vec![hostname(value)];
        assert_eq!(addresses(&model, &fronts, &key, &gw), Ok(ingress.clone()), "{value}");
        assert_eq!(addresses(&model, &BTreeMap::new(), &key, &gw).unwrap()[0].1, "10.96.0.10");
    }
    gw.spec.addresses = vec![hostname("nope")];
    assert_eq!(
        addresses(&model, &fronts, &key, &gw).unwrap_err(),
        "Service default/nope (address nope) does not exist"
    );
    gw.spec.addresses = vec![hostname("lb.example.com")];
    assert!(addresses(&model, &fronts, &key, &gw).unwrap_err().contains("not a Service name"));
}
