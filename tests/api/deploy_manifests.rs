//! The manifests in `deploy/`: they parse, the CRD is what `sluice crd` prints, the ClusterRole grants exactly
//! the API calls the code makes (`sluice::source::kube::ACCESS`), and the Bookinfo sidecars' bootstrap command
//! runs.

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
fn the_cluster_role_grants_exactly_what_the_code_calls() {
    let docs = docs("sluice.yaml");
    let roles = find(&docs, "ClusterRole");
    assert_eq!(roles.len(), 1);
    let mut granted = BTreeSet::new();
    for rule in roles[0]["rules"].as_array().unwrap() {
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
    let binding = find(&docs, "ClusterRoleBinding")[0];
    assert_eq!(binding["roleRef"]["name"], roles[0]["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], find(&docs, "ServiceAccount")[0]["metadata"]["name"]);
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
    assert_eq!(ports.iter().map(|p| p["port"].as_u64().unwrap()).collect::<Vec<_>>(), [15010, 15014]);
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args, ["serve", "--kube"]);
}

#[test]
fn bookinfo_sidecars_are_bootstrapped_by_sluice_bootstrap() {
    let docs = docs("bookinfo.yaml");
    let config_maps = find(&docs, "ConfigMap");
    let deployments = find(&docs, "Deployment");
    assert_eq!((config_maps.len(), deployments.len()), (6, 6), "productpage, details, ratings, reviews v1-v3");
    for cm in config_maps {
        let args: Vec<String> =
            serde_json::from_str(cm["metadata"]["annotations"]["sluice.dev/bootstrap"].as_str().unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("bootstrap").args(&args).output().unwrap();
        assert!(out.status.success(), "sluice bootstrap {args:?}");
        let want: Value = serde_json::from_slice(&out.stdout).unwrap();
        let have: Value = serde_json::from_str(cm["data"]["envoy.json"].as_str().unwrap()).unwrap();
        assert!(have == want, "{} is stale: run scripts/gen-bookinfo", cm["metadata"]["name"]);
    }
    for d in deployments {
        let pod = &d["spec"]["template"]["spec"];
        let envoy = pod["containers"].as_array().unwrap().iter().find(|c| c["name"] == "envoy").expect("a sidecar");
        let volume = &pod["volumes"][0]["configMap"]["name"];
        let name = d["metadata"]["name"].as_str().unwrap();
        assert_eq!(volume, &format!("{name}-envoy"));
        assert_eq!(envoy["args"][1], "/etc/envoy/envoy.json");
    }
    let policy = find(&docs, "ReleasePolicy")[0];
    let spec: sluice::model::ReleasePolicySpec = serde_json::from_value(policy["spec"].clone()).unwrap();
    spec.validate().unwrap();
}
