//! Sidecar injection, golden: AdmissionReviews as the API server sends them, built from the pod templates of
//! `deploy/bookinfo.yaml` (every Deployment) and variations of them (opt-outs, hostNetwork, kube-system, already
//! injected, native sidecars, each supported annotation, bad annotations, v1beta1, not a Pod, not a CREATE), and the
//! gateway pod of `deploy/bookinfo-gateway.yaml` (gateway injection: with and without the mesh CA, the Gateway named
//! by an annotation, named nowhere), answered by the injector (`sluice::inject::review::answer`, what `POST /inject`
//! serves).
//!
//! Each case's golden file `tests/golden/inject/CASE.yaml` holds the response (its base64 patch decoded, each
//! operation and path in `patchOps`) and, when injected, the pod that the patch gives when the `json-patch` crate (RFC 6902, not Sluice's
//! code) applies it to the original. Besides the goldens, every injected case checks what no golden can hide: every
//! operation is an `add` (but the `replace` of a gateway's `image: auto`), and every container, volume, label and
//! annotation the user wrote is still there, unchanged (a gateway's proxy container: every field the user wrote).
//!
//! `UPDATE_GOLDEN=1 cargo test --test source inject_golden` rewrites the files.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice::inject::Settings;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pod templates of `deploy/bookinfo.yaml`'s Deployments, by Deployment name, as the Pods the API server would
/// send (generateName and the pod-template-hash label that a ReplicaSet adds).
fn bookinfo_pods() -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(repo().join("deploy/bookinfo.yaml")).expect("deploy/bookinfo.yaml");
    let mut pods = Vec::new();
    for de in serde_yaml::Deserializer::from_str(&text) {
        let doc = Value::deserialize(de).expect("bookinfo.yaml parses");
        if doc["kind"] != "Deployment" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().expect("a Deployment name").to_string();
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
        pod["metadata"] = doc["spec"]["template"]["metadata"].clone();
        pod["metadata"]["generateName"] = json!(format!("{name}-5d8b9c7f6b-"));
        pod["metadata"]["namespace"] = doc["metadata"]["namespace"].clone();
        pod["metadata"]["labels"]["pod-template-hash"] = json!("5d8b9c7f6b");
        pod["spec"] = doc["spec"]["template"]["spec"].clone();
        pods.push((name, pod));
    }
    pods
}

/// The gateway Deployment's pod template in `deploy/bookinfo-gateway.yaml`, as the Pod the API server would send.
fn gateway_pod() -> Value {
    let text = std::fs::read_to_string(repo().join("deploy/bookinfo-gateway.yaml")).expect("bookinfo-gateway.yaml");
    let docs = serde_yaml::Deserializer::from_str(&text).map(|de| Value::deserialize(de).expect("it parses"));
    let [doc] = &docs.filter(|d| d["kind"] == "Deployment").collect::<Vec<_>>()[..] else { panic!("one Deployment") };
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": doc["spec"]["template"]["metadata"].clone(),
                         "spec": doc["spec"]["template"]["spec"].clone()});
    pod["metadata"]["generateName"] = json!("bookinfo-gateway-7f6c9d8b5-");
    pod["metadata"]["namespace"] = doc["metadata"]["namespace"].clone();
    pod["metadata"]["labels"]["pod-template-hash"] = json!("7f6c9d8b5");
    pod
}

const ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

fn pod(pods: &[(String, Value)], name: &str) -> Value {
    pods.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no Deployment {name} in bookinfo.yaml")).1.clone()
}

fn review(version: &str, operation: &str, namespace: &str, kind: &str, object: &Value) -> Value {
    let resource = if kind == "Pod" { "pods" } else { "deployments" };
    json!({
        "apiVersion": format!("admission.k8s.io/{version}"),
        "kind": "AdmissionReview",
        "request": {
            "uid": "0df28fbd-5f5f-4d4b-9a4c-8d0b0f5b1a2c",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "namespace": namespace,
            "operation": operation,
            "object": object,
        }
    })
}

struct Case {
    name: String,
    review: Value,
    settings: Settings,
}

fn with(mut pod: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut pod);
    pod
}

fn annotated(pod: Value, key: &str, value: &str) -> Value {
    with(pod, |p| p["metadata"]["annotations"][key] = json!(value))
}

fn cases() -> Vec<Case> {
    let pods = bookinfo_pods();
    assert_eq!(pods.len(), 6, "bookinfo.yaml has six Deployments");
    let v1 = |name: &str, pod: Value| Case {
        name: name.to_string(),
        review: review("v1", "CREATE", "bookinfo", "Pod", &pod),
        settings: Settings::default(),
    };
    let mut all: Vec<Case> = pods.iter().map(|(name, p)| v1(&format!("bookinfo-{name}"), p.clone())).collect();
    let reviews = pod(&pods, "reviews-v1");
    let productpage = pod(&pods, "productpage-v1");

    all.push(v1("opt-out-annotation", annotated(productpage.clone(), "sidecar.istio.io/inject", "false")));
    all.push(v1(
        "opt-out-label-beats-opt-in-annotation",
        with(annotated(productpage.clone(), "sidecar.istio.io/inject", "true"), |p| {
            p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false")
        }),
    ));
    all.push(v1(
        "opt-in-label-beats-opt-out-annotation",
        with(annotated(productpage.clone(), "sidecar.istio.io/inject", "false"), |p| {
            p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("true")
        }),
    ));
    all.push(v1("host-network", with(productpage.clone(), |p| p["spec"]["hostNetwork"] = json!(true))));
    all.push(Case {
        name: "kube-system".into(),
        review: review("v1", "CREATE", "kube-system", "Pod", &productpage),
        settings: Settings::default(),
    });
    all.push(v1(
        "already-injected-istio-proxy",
        with(productpage.clone(), |p| {
            p["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "istio-proxy", "image": "istio/proxyv2"}))
        }),
    ));
    // What Sluice's own patch gives, sent again (a re-created pod object, or two webhooks configured).
    let injected = apply(
        &reviews,
        &ops_of(&sluice::inject::review::answer(
            review("v1", "CREATE", "bookinfo", "Pod", &reviews).to_string().as_bytes(),
            &Settings::default(),
        )),
    );
    all.push(v1("already-injected-by-sluice", injected));
    all.push(Case {
        name: "native-sidecar".into(),
        review: review("v1", "CREATE", "bookinfo", "Pod", &reviews),
        settings: Settings { native_sidecars: true, ..Settings::default() },
    });
    // With the mesh CA on (`serve --ca`): the sidecar gets workload mTLS (the root, a projected token).
    all.push(Case {
        name: "workload-mtls".into(),
        review: review("v1", "CREATE", "bookinfo", "Pod", &reviews),
        settings: Settings { mesh_root_pem: Some(ROOT_PEM.into()), ..Settings::default() },
    });
    // Gateway injection: the gateway pod as deploy/bookinfo-gateway.yaml writes it (`istio-proxy`, `image: auto`,
    // SLUICE_GATEWAY), with and without the CA; its Gateway named by the annotation instead; named nowhere.
    let gateway = gateway_pod();
    all.push(v1("gateway", gateway.clone()));
    all.push(Case {
        name: "gateway-mtls".into(),
        review: review("v1", "CREATE", "bookinfo", "Pod", &gateway),
        settings: Settings { mesh_root_pem: Some(ROOT_PEM.into()), ..Settings::default() },
    });
    let unnamed = with(gateway, |p| {
        p["spec"]["containers"][0].as_object_mut().unwrap().remove("env");
    });
    all.push(v1(
        "gateway-named-by-annotation",
        annotated(unnamed.clone(), "sluice.dev/gateway", "bookinfo/bookinfo-gateway"),
    ));
    all.push(v1("refused-gateway-names-no-gateway", unnamed));
    all.push(Case {
        name: "native-sidecar-with-init-containers".into(),
        review: review(
            "v1",
            "CREATE",
            "bookinfo",
            "Pod",
            &with(reviews.clone(), |p| {
                p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "busybox", "command": ["true"]}])
            }),
        ),
        settings: Settings { native_sidecars: true, ..Settings::default() },
    });
    for (case, key, value) in [
        ("annotation-include-inbound-ports", "traffic.sidecar.istio.io/includeInboundPorts", "9080,9443"),
        ("annotation-include-inbound-ports-all", "traffic.sidecar.istio.io/includeInboundPorts", "*"),
        ("annotation-exclude-inbound-ports", "traffic.sidecar.istio.io/excludeInboundPorts", "9080"),
        ("annotation-include-outbound-ip-ranges", "traffic.sidecar.istio.io/includeOutboundIPRanges", "10.96.0.0/12"),
        (
            "annotation-exclude-outbound-ip-ranges",
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "169.254.169.254/32,10.0.0.0/8",
        ),
        ("annotation-include-outbound-ports", "traffic.sidecar.istio.io/includeOutboundPorts", "9080"),
        ("annotation-exclude-outbound-ports", "traffic.sidecar.istio.io/excludeOutboundPorts", "5432,6379"),
        ("annotation-proxy-config", "proxy.istio.io/config", "terminationDrainDuration: 20s\nconcurrency: 4\n"),
        ("annotation-proxy-image", "sidecar.istio.io/proxyImage", "registry.example/sluice:1.2.3"),
        ("annotation-interception-mode-redirect", "sidecar.istio.io/interceptionMode", "REDIRECT"),
        ("annotation-stats-inclusion-prefixes", "sidecar.istio.io/statsInclusionPrefixes", "http.,cluster.outbound"),
        ("annotation-unsupported-warns", "sidecar.istio.io/bootstrapOverride", "my-bootstrap"),
        ("refused-include-inbound-ports-not-a-port", "traffic.sidecar.istio.io/includeInboundPorts", "9080,http"),
        (
            "refused-exclude-outbound-ip-ranges-not-cidr",
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "10.0.0.0/33",
        ),
        ("refused-interception-mode-tproxy", "sidecar.istio.io/interceptionMode", "TPROXY"),
        ("refused-proxy-config-drain-not-a-duration", "proxy.istio.io/config", "terminationDrainDuration: soon\n"),
        ("refused-proxy-cpu-not-a-quantity", "sidecar.istio.io/proxyCPU", "a lot"),
    ] {
        all.push(v1(case, annotated(reviews.clone(), key, value)));
    }
    let mut resources = reviews.clone();
    for (key, value) in [
        ("sidecar.istio.io/proxyCPU", "250m"),
        ("sidecar.istio.io/proxyMemory", "256Mi"),
        ("sidecar.istio.io/proxyCPULimit", "1"),
        ("sidecar.istio.io/proxyMemoryLimit", "512Mi"),
    ] {
        resources = annotated(resources, key, value);
    }
    all.push(v1("annotation-proxy-resources", resources));
    all.push(Case {
        name: "v1beta1".into(),
        review: review("v1beta1", "CREATE", "bookinfo", "Pod", &productpage),
        settings: Settings::default(),
    });
    all.push(Case {
        name: "update-not-injected".into(),
        review: review("v1", "UPDATE", "bookinfo", "Pod", &productpage),
        settings: Settings::default(),
    });
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}});
    all.push(Case {
        name: "not-a-pod".into(),
        review: review("v1", "CREATE", "bookinfo", "Deployment", &deployment),
        settings: Settings::default(),
    });
    all
}

fn ops_of(answer: &sluice::inject::review::Answer) -> Vec<Value> {
    let Some(patch) = answer.body["response"]["patch"].as_str() else { return Vec::new() };
    let bytes = base64::engine::general_purpose::STANDARD.decode(patch).expect("the patch is base64");
    serde_json::from_slice(&bytes).expect("the patch is a JSON array")
}

/// The patch applied by the `json-patch` crate.
fn apply(pod: &Value, ops: &[Value]) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).expect("an RFC 6902 patch");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("the patch applies to the original pod");
    out
}

/// What the user wrote is all still there, unchanged; only `add` operations, but the `replace` of a gateway's
/// `image: auto` placeholder.
fn keeps_what_the_user_wrote(case: &str, before: &Value, after: &Value, ops: &[Value]) {
    for op in ops {
        let path = op["path"].as_str().unwrap_or_default();
        let placeholder =
            op["op"] == "replace" && path.ends_with("/image") && before.pointer(path) == Some(&json!("auto"));
        assert!(op["op"] == "add" || placeholder, "{case}: only add operations: {op}");
    }
    let gateway = before["metadata"]["annotations"]["inject.istio.io/templates"] == "gateway";
    for list in ["containers", "initContainers", "volumes"] {
        for item in before["spec"][list].as_array().into_iter().flatten() {
            let now = after["spec"][list].as_array().and_then(|l| l.iter().find(|i| i["name"] == item["name"]));
            let proxy = gateway
                && list == "containers"
                && ["istio-proxy", "sluice-proxy"].contains(&item["name"].as_str().unwrap_or_default());
            let kept = now.is_some_and(|now| now == item || (proxy && filled_in(item, now)));
            assert!(kept, "{case}: spec.{list} item {} changed or went", item["name"]);
        }
    }
    for map in ["labels", "annotations"] {
        for (k, v) in before["metadata"][map].as_object().into_iter().flatten() {
            assert_eq!(&after["metadata"][map][k], v, "{case}: metadata.{map}.{k} changed");
        }
    }
}

/// A gateway's proxy container `now` keeps every field of the user's `mine`: each list item, each other value
/// (`image: auto` excepted: the injector's image replaces it).
fn filled_in(mine: &Value, now: &Value) -> bool {
    mine.as_object().into_iter().flatten().all(|(key, value)| match (key.as_str(), value) {
        ("image", v) if v == "auto" => now["image"].as_str().is_some_and(|i| i != "auto"),
        (_, Value::Array(items)) => items.iter().all(|i| now[key].as_array().is_some_and(|l| l.contains(i))),
        _ => &now[key] == value,
    })
}

#[test]
fn inject_golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = repo().join("tests/golden/inject");
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    let mut results = std::collections::BTreeMap::<&str, usize>::new();
    let all = cases();
    for case in &all {
        let answer = sluice::inject::review::answer(case.review.to_string().as_bytes(), &case.settings);
        *results.entry(answer.result).or_default() += 1;
        let mut response = answer.body["response"].clone();
        assert_eq!(response["uid"], case.review["request"]["uid"], "{}: the uid is echoed", case.name);
        assert_eq!(answer.body["apiVersion"], case.review["apiVersion"], "{}: answered in its version", case.name);
        let ops = ops_of(&answer);
        let mut golden = json!({"result": answer.result, "reason": answer.reason});
        if let Some(o) = response.as_object_mut()
            && o.remove("patch").is_some()
        {
            // The operations by kind and path; what they add is in the golden pod.
            let summary = ops.iter().map(|op| {
                json!(format!("{} {}", op["op"].as_str().unwrap_or("?"), op["path"].as_str().unwrap_or("?")))
            });
            o.insert("patchOps".into(), summary.collect());
        }
        golden["response"] = response;
        if answer.result == "injected" {
            let before = &case.review["request"]["object"];
            let after = apply(before, &ops);
            keeps_what_the_user_wrote(&case.name, before, &after, &ops);
            golden["pod"] = after;
        }
        let got = serde_yaml::to_string(&golden).expect("YAML");
        let path = dir.join(format!("{}.yaml", case.name));
        if update {
            std::fs::write(&path, &got).unwrap();
        } else if std::fs::read_to_string(&path).unwrap_or_default() != got {
            failures.push(format!("{} differs (diff it with UPDATE_GOLDEN=1 and git diff)", path.display()));
        }
    }
    // No stale golden files.
    let names: Vec<String> = all.iter().map(|c| format!("{}.yaml", c.name)).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !names.contains(&file) {
            failures.push(format!("tests/golden/inject/{file} belongs to no case"));
        }
    }
    println!("{} cases: {results:?}", all.len());
    assert!(failures.is_empty(), "golden mismatch (UPDATE_GOLDEN=1 to accept):\n{}", failures.join("\n"));
}

/// What the goldens say, stated as a user would check it: which cases inject, which are left alone, which refused.
#[test]
fn who_is_injected() {
    let expected = |name: &str| match name {
        n if n.starts_with("bookinfo-")
            || n.starts_with("annotation-")
            || n.starts_with("native-sidecar")
            || n == "workload-mtls"
            || n.starts_with("gateway") =>
        {
            "injected"
        }
        "opt-in-label-beats-opt-out-annotation" | "v1beta1" => "injected",
        n if n.starts_with("refused-") => "refused",
        "not-a-pod" => "not-a-pod",
        _ => "skipped",
    };
    for case in cases() {
        let answer = sluice::inject::review::answer(case.review.to_string().as_bytes(), &case.settings);
        assert_eq!(answer.result, expected(&case.name), "{}: {}", case.name, answer.reason);
        let allowed = answer.body["response"]["allowed"].as_bool();
        assert_eq!(allowed, Some(answer.result != "refused"), "{}", case.name);
        if case.name == "refused-gateway-names-no-gateway" {
            let message = answer.body["response"]["status"]["message"].as_str().unwrap_or_default();
            for what in ["SLUICE_GATEWAY", "sluice.dev/gateway", "istio-proxy"] {
                assert!(message.contains(what), "the refusal says what is missing ({what}): {message}");
            }
        } else if answer.result == "refused" {
            let message = answer.body["response"]["status"]["message"].as_str().unwrap_or_default();
            let key = case.review["request"]["object"]["metadata"]["annotations"]
                .as_object()
                .and_then(|a| a.keys().next().cloned())
                .unwrap();
            assert!(message.contains(&key), "{}: the refusal names the annotation {key}: {message}", case.name);
        }
    }
}
