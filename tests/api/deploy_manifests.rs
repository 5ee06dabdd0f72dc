//! The manifests in `deploy/`: they parse, the CRD is what `sluice crd` prints, the ClusterRole and Role grant
//! exactly the API calls the code makes (`sluice::source::kube::ACCESS`), the webhook configuration reaches the
//! webhook, and Bookinfo is plain (the webhook adds the sidecars).

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
