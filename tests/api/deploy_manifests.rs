//! The manifests in `deploy/`: they parse, the CRD is what `sluice crd` prints, the ClusterRole and Role grant
//! exactly the API calls the code makes (`sluice::source::kube::ACCESS`), the webhook configuration reaches the
//! webhook, Bookinfo is plain (the webhook adds the sidecars), and Bookinfo's gateway (`bookinfo-gateway.yaml`) asks
//! for gateway injection and, injected (as `sluice inject` does it, with the mesh CA's root), is a `sluice proxy
//! --gateway` with workload mTLS that its LoadBalancer Service, its Gateway and Sluice's translation agree on.

use crate::common;

use serde::Deserialize;
use serde_json::Value;
use sluice::source::kube::ACCESS;
use std::collections::BTreeSet;
use std::process::Command;

fn docs(file: &str) -> Vec<Value> {
    let path = common::repo().join("deploy").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn crd_yaml_is_what_sluice_crd_prints() {
    let printed = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("crd").output().expect("running sluice crd");
    assert!(printed.status.success());
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert_eq!(printed, sluice::source::kube::crd::crd_yaml().unwrap());
    let file = std::fs::read_to_string(common::repo().join("deploy/crd.yaml")).unwrap();
    assert!(file == printed, "deploy/crd.yaml is stale: run `cargo run -- crd > deploy/crd.yaml`");
    let crd = &docs("crd.yaml")[0];
    assert_eq!(crd["metadata"]["name"], "releasepolicies.sluice.dev");
}

#[test]
fn the_roles_grant_exactly_what_the_code_calls() {
    let docs = docs("sluice.yaml");
    let roles = find(&docs, "ClusterRole");
    assert_eq!(roles.len(), 1);
    // The ClusterRole, and the Role in Sluice's namespace (only the webhook certificate's Secret).
    let role = find(&docs, "Role");
    assert_eq!(role.len(), 1);
    assert_eq!(role[0]["metadata"]["namespace"], "sluice-system");
    let mut granted = BTreeSet::new();
    for rule in roles[0]["rules"].as_array().unwrap().iter().chain(role[0]["rules"].as_array().unwrap()) {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let s = |v: &Value| v.as_str().unwrap().to_string();
                    assert!(s(verb) != "*" && s(resource) != "*", "no wildcards");
                    granted.insert((s(group), s(resource), s(verb)));
                }
            }
        }
    }
    let used: BTreeSet<(String, String, String)> = ACCESS
        .iter()
        .flat_map(|a| a.verbs.iter().map(|v| (a.group.to_string(), a.resource.to_string(), v.to_string())))
        .collect();
    assert_eq!(granted, used);
    for (kind, role) in [("ClusterRoleBinding", roles[0]), ("RoleBinding", role[0])] {
        let binding = find(&docs, kind)[0];
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(binding["subjects"][0]["name"], find(&docs, "ServiceAccount")[0]["metadata"]["name"]);
    }
}

#[test]
fn the_webhook_configuration_reaches_the_webhook_and_fails_closed() {
    let docs = docs("sluice.yaml");
    let config = find(&docs, "MutatingWebhookConfiguration")[0];
    assert_eq!(config["metadata"]["name"], "sluice-sidecar-injector", "the name --inject-webhook-config defaults to");
    let service = find(&docs, "Service")[0];
    let webhook_port =
        service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == "https-webhook").unwrap();
    let webhooks = config["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 4);
    for w in webhooks {
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["admissionReviewVersions"], serde_json::json!(["v1"]));
        let target = &w["clientConfig"]["service"];
        assert_eq!((target["name"].as_str(), target["namespace"].as_str()), (Some("sluice"), Some("sluice-system")));
        assert_eq!(target["path"], "/inject");
        assert_eq!(target["port"], webhook_port["port"]);
        assert_eq!(webhook_port["targetPort"], 15017, "the webhook's default --inject-addr port");
        assert_eq!(w["rules"][0]["resources"], serde_json::json!(["pods"]));
        assert_eq!(w["rules"][0]["operations"], serde_json::json!(["CREATE"]));
    }
}

#[test]
fn the_deployment_probes_and_service_use_sluices_ports() {
    let docs = docs("sluice.yaml");
    let deployment = find(&docs, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["requests"]["memory"].is_string());
    let env = |name: &str| {
        c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).map(|e| e["value"].clone()).unwrap()
    };
    assert_eq!(env("SLUICE_ADMIN_ADDR"), "0.0.0.0:15014");
    assert_eq!(env("SLUICE_XDS_ADDR"), "0.0.0.0:15010");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], 15014);
    let ports: Vec<&Value> = find(&docs, "Service")[0]["spec"]["ports"].as_array().unwrap().iter().collect();
    assert_eq!(ports.iter().map(|p| p["port"].as_u64().unwrap()).collect::<Vec<_>>(), [15010, 15012, 15014, 443]);
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args, ["serve", "--kube", "--inject", "--ca"]);
    // Replicas forward release changes to the leader: they share the API token, from a Secret that must exist.
    let token_file = env("SLUICE_API_TOKEN_FILE");
    let pod = &deployment["spec"]["template"]["spec"];
    let mount = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "api-token").unwrap();
    assert_eq!(token_file, format!("{}/token", mount["mountPath"].as_str().unwrap()));
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "api-token").unwrap();
    assert_eq!(volume["secret"]["secretName"], "sluice-api-token");
    assert!(volume["secret"].get("optional").is_none(), "a missing token must keep the pods waiting");
}

#[test]
fn bookinfo_is_plain_and_its_namespace_asks_for_injection() {
    let docs = docs("bookinfo.yaml");
    let namespace = find(&docs, "Namespace")[0];
    assert_eq!(namespace["metadata"]["labels"]["sluice-injection"], "enabled");
    let deployments = find(&docs, "Deployment");
    assert_eq!(deployments.len(), 6, "productpage, details, ratings, reviews v1-v3");
    for d in deployments {
        let pod = &d["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "no hand-written sidecar in {}", d["metadata"]["name"]);
        assert!(pod["initContainers"].is_null());
        let text = serde_json::to_string(pod).unwrap();
        assert!(!text.contains("PROXY") && !text.contains("15001"), "no proxy settings: {text}");
        assert_eq!(d["metadata"]["namespace"], "bookinfo");
    }
    let policy = find(&docs, "ReleasePolicy")[0];
    let spec: sluice::model::ReleasePolicySpec = serde_json::from_value(policy["spec"].clone()).unwrap();
    spec.validate().unwrap();
}

/// The labels `selector` names are all among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// `sluice proxy` as the container runs it: each env var the manifest sets (fieldRefs given test values) becomes
/// the flag that reads it, so a name `sluice proxy` does not read fails here.
fn proxy_args(container: &Value, pod: &Value) -> sluice::agent::ProxyArgs {
    use clap::{Args, FromArgMatches};
    let command = sluice::agent::ProxyArgs::augment_args(clap::Command::new("proxy").no_binary_name(true));
    let mut flags = Vec::new();
    for e in container["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("env name");
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => "bookinfo-gateway-5d8f7-x2v9q".to_string(),
            Some("metadata.namespace") => pod["metadata"]["namespace"].as_str().expect("namespace").to_string(),
            Some("status.podIP") => "10.1.0.9".to_string(),
            Some("spec.serviceAccountName") => pod["spec"]["serviceAccountName"].as_str().expect("sa").to_string(),
            Some(other) => panic!("{name}: fieldRef {other}"),
            None => e["value"].as_str().unwrap_or_else(|| panic!("{name}: a string value")).to_string(),
        };
        let arg = command.get_arguments().find(|a| a.get_env().is_some_and(|n| n == name));
        let long = arg.and_then(|a| a.get_long()).unwrap_or_else(|| panic!("`sluice proxy` reads no env var {name}"));
        if arg.is_some_and(|a| a.get_action().takes_values()) {
            flags.push(format!("--{long}={value}"));
        } else if value == "true" {
            flags.push(format!("--{long}"));
        }
    }
    let matches = command.try_get_matches_from(&flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
    sluice::agent::ProxyArgs::from_arg_matches(&matches).expect("ProxyArgs")
}

/// The node a bootstrap announces, as Sluice's xDS layer reads it.
fn proxy_of(bootstrap: &Value) -> sluice::model::ProxyInfo {
    let desc = sluice::envoy_json::pool().get_message_by_name("envoy.config.core.v3.Node").expect("Node");
    let node = prost_reflect::DynamicMessage::deserialize(desc, bootstrap["node"].clone()).expect("node JSON");
    let node: envoy_types::pb::envoy::config::core::v3::Node = node.transcode_to().expect("Node");
    sluice::xds::node::proxy_info(Some(&node)).expect("a valid node")
}

const ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

/// `bookinfo-gateway.yaml` through `sluice inject`'s code, with the settings `serve --inject --ca` has (the mesh
/// root): its documents, injected.
fn injected_gateway_docs() -> Vec<Value> {
    let text = std::fs::read_to_string(common::repo().join("deploy/bookinfo-gateway.yaml")).expect("the manifest");
    let settings = sluice::inject::Settings { mesh_root_pem: Some(ROOT_PEM.into()), ..Default::default() };
    let (yaml, notes) = sluice::inject::offline::inject_documents(&text, "bookinfo-gateway.yaml", "default", &settings)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(notes.is_empty(), "injected without a note: {notes:?}");
    serde_yaml::Deserializer::from_str(&yaml).map(|d| Value::deserialize(d).expect("YAML")).collect()
}

#[test]
fn the_bookinfo_gateway_asks_for_gateway_injection_and_gets_a_gateway_agent_with_mtls() {
    let docs = docs("bookinfo-gateway.yaml");
    let [deployment] = find(&docs, "Deployment")[..] else { panic!("one Deployment") };
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["inject.istio.io/templates"], "gateway");
    assert_eq!(pod["metadata"]["labels"]["sidecar.istio.io/inject"], "true", "injected wherever it runs");
    let [c] = &pod["spec"]["containers"].as_array().expect("containers")[..] else { panic!("one container") };
    assert_eq!((c["name"].as_str(), c["image"].as_str()), (Some("istio-proxy"), Some("auto")));

    let injected = injected_gateway_docs();
    let [deployment] = find(&injected, "Deployment")[..] else { panic!("one Deployment") };
    let pod = &deployment["spec"]["template"];
    assert!(pod["spec"]["initContainers"].is_null(), "no sluice-init: a gateway intercepts nothing");
    let [c] = &pod["spec"]["containers"].as_array().expect("containers")[..] else { panic!("one container") };
    assert_eq!((c["name"].as_str(), c["image"].as_str()), (Some("istio-proxy"), Some("sluice:latest")));
    assert_eq!(c["args"], serde_json::json!(["proxy"]));
    let env = |name: &str| c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
    assert_eq!(env("SLUICE_GATEWAY"), Some("bookinfo/bookinfo-gateway".into()));
    assert_eq!(env("SLUICE_MTLS"), Some("true".into()));
    assert_eq!(env("SLUICE_CA_ROOT_PEM"), Some(ROOT_PEM.into()));
    assert_eq!(env("SLUICE_DRAIN_SECONDS"), Some("20".into()), "from proxy.istio.io/config");
    assert_eq!(env("SLUICE_INBOUND_PORTS"), None);
    assert_eq!(c["securityContext"]["runAsUser"], 1337);
    let labels = &pod["metadata"]["labels"];
    assert!(labels.get("security.istio.io/tlsMode").is_none(), "no proxy calls the gateway with mTLS: {labels}");
    let status = pod["metadata"]["annotations"]["sidecar.istio.io/status"].as_str().expect("marked injected");
    assert!(status.contains("sluice-token"), "{status}");
}

#[test]
fn the_injected_bookinfo_gateway_runs_sluice_proxy_as_the_gateway_its_service_and_routes_name() {
    let docs = injected_gateway_docs();
    let [deployment] = find(&docs, "Deployment")[..] else { panic!("one Deployment") };
    let [service] = find(&docs, "Service")[..] else { panic!("one Service") };
    let [gateway] = find(&docs, "Gateway")[..] else { panic!("one Gateway") };
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    for d in &docs {
        assert_eq!(d["metadata"]["namespace"], "bookinfo", "{}", d["metadata"]["name"]);
    }

    // The Service: a LoadBalancer in front of these pods, each port reaching a port the container declares.
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert!(selects(&service["spec"]["selector"], labels), "the Service selects the gateway pods");
    assert!(selects(&deployment["spec"]["selector"]["matchLabels"], labels));
    assert!(selects(&gateway["spec"]["selector"], labels), "the Gateway's selector matches the pods too");
    let [c] = &pod["spec"]["containers"].as_array().expect("containers")[..] else { panic!("one container") };
    let container_ports: Vec<&Value> = c["ports"].as_array().expect("ports").iter().collect();
    let port_of = |target: &Value| {
        container_ports
            .iter()
            .find(|p| p["containerPort"] == *target || p["name"] == *target)
            .map(|p| &p["containerPort"])
    };
    let mut targets = Vec::new();
    for p in service["spec"]["ports"].as_array().expect("ports") {
        let target = port_of(&p["targetPort"]).unwrap_or_else(|| panic!("targetPort {} is no container port", p));
        targets.push(target.as_u64().expect("a number"));
    }
    assert_eq!(service["spec"]["ports"][0]["port"], 80, "HTTP from outside on 80");

    // The injected pod is the agent, the readiness probe the agent answers.
    assert_eq!(c["args"], serde_json::json!(["proxy"]));
    assert_eq!(c["readinessProbe"]["httpGet"], serde_json::json!({"path": "/healthz/ready", "port": 15021}));
    let account = pod["spec"]["serviceAccountName"].clone();
    assert!(find(&docs, "ServiceAccount").iter().any(|a| a["metadata"]["name"] == account), "{account}");
    let sluice_docs = self::docs("sluice.yaml");
    let sluice_service = find(&sluice_docs, "Service")[0];
    let args = proxy_args(c, &serde_json::json!({"metadata": deployment["metadata"], "spec": pod["spec"]}));
    let meta = &sluice_service["metadata"];
    let xds = format!("{}.{}.svc:15010", meta["name"].as_str().expect("name"), meta["namespace"].as_str().expect("ns"));
    assert_eq!(args.xds.to_string(), xds, "the gateway reaches Sluice's xDS Service");
    assert_eq!(args.status_port, 15021);

    // What that agent's Envoy announces is a gateway proxy for this Gateway, with workload mTLS over SDS ...
    assert!(args.mtls.enabled, "SLUICE_MTLS");
    let bootstrap = sluice::bootstrap::render(&args.bootstrap(&args.pod().expect("the pod")));
    let proxy = proxy_of(&bootstrap);
    assert!(proxy.mtls, "the node announces workload mTLS");
    let statics = bootstrap["static_resources"]["clusters"].as_array().expect("static clusters");
    let sds = statics.iter().find(|c| c["name"] == sluice::bootstrap::SDS_CLUSTER).expect("the SDS cluster");
    let socket = args.sds_socket().to_string_lossy().into_owned();
    assert!(sds.to_string().contains(&socket), "SDS from the agent's socket {socket}: {sds}");
    let gw_key = sluice::model::ObjectKey::new("bookinfo", "bookinfo-gateway");
    match &proxy.mode {
        sluice::model::InterceptionMode::Gateway(role) => assert_eq!(role.named.as_ref(), Some(&gw_key)),
        other => panic!("not a gateway: {other:?}"),
    }
    assert!(proxy.id.starts_with("router~10.1.0.9~bookinfo-gateway-5d8f7-x2v9q.bookinfo~"), "{}", proxy.id);
    assert!(proxy.inbound_ports.is_empty());

    // ... and Sluice, given this Gateway and VirtualService with Bookinfo's Services, gives it a listener on the
    // port the Service sends to, routing to productpage.
    let services = self::docs("bookinfo.yaml").into_iter().filter(|d| d["kind"] == "Service");
    let routing = docs.iter().filter(|d| d["kind"] == "Gateway" || d["kind"] == "VirtualService").cloned();
    let text: String =
        services.chain(routing).map(|d| format!("---\n{}", serde_yaml::to_string(&d).expect("YAML"))).collect();
    let model = sluice::source::parse_str(&text, "bookinfo-gateway.yaml").unwrap_or_else(|e| panic!("{e}"));
    let listeners: Vec<String> = sluice::translate::listeners(&model, &proxy).into_iter().map(|l| l.name).collect();
    assert_eq!(listeners, ["0.0.0.0_8080"]);
    assert!(targets.contains(&8080), "the Service sends to the Gateway's server port: {targets:?}");
    let scope = sluice::translate::route_scope(&model, &proxy);
    let routes = sluice::translate::route_configs(&model, &scope);
    let [http] = &routes[..] else { panic!("one route configuration: {routes:?}") };
    assert_eq!(http.name, "http.8080");
    let clusters = format!("{:?}", http.virtual_hosts);
    assert!(clusters.contains("outbound|9080||productpage.bookinfo.svc.cluster.local"), "{clusters}");
}
