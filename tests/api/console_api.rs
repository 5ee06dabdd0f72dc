//! What the release console reads and asks before it changes anything: the inventory of Services and versions,
//! `?dryRun=All` on a PUT (every check, nothing stored), and a verb's plan (the clusters that leave Envoy, the
//! versions that stay), against a real Sluice on 127.0.0.1 with `reviews` (v1, v3) set from code.

use super::release_api::{call, start};
use serde_json::{Value, json};

const PATH: &str = "/api/v1/namespaces/default/releases/reviews-v3";

fn policy(spec: Value) -> String {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "ReleasePolicy",
           "metadata": {"name": "reviews-v3", "namespace": "default"}, "spec": spec})
    .to_string()
}

fn ratio(weight: u32) -> String {
    policy(json!({"service": "reviews", "stable": "v1", "canary": "v3", "traffic": {"canaryWeight": weight}}))
}

#[tokio::test]
async fn the_inventory_lists_services_and_their_versions() {
    let s = start().await;
    let admin = s.admin_addr().unwrap();
    let (code, inv) = call(admin, "GET", "/api/v1/inventory", None).await;
    assert_eq!(code, 200, "{inv}");
    let reviews = &inv["namespaces"][0]["services"][0];
    assert_eq!(inv["namespaces"][0]["name"], "default");
    assert_eq!(reviews["name"], "reviews");
    assert_eq!(reviews["ports"][0]["port"], 9080);
    let versions: Vec<(&str, u64)> = reviews["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["ready"].as_u64().unwrap()))
        .collect();
    assert_eq!(versions, [("v1", 1), ("v3", 1)]);
    assert_eq!(reviews["release"], Value::Null);

    let (code, _) = call(admin, "PUT", PATH, Some(&ratio(0))).await;
    assert_eq!(code, 200);
    let (_, inv) = call(admin, "GET", "/api/v1/inventory", None).await;
    assert_eq!(inv["namespaces"][0]["services"][0]["release"], "reviews-v3", "the Service's task is named");
}

#[tokio::test]
async fn a_dry_run_checks_everything_and_stores_nothing() {
    let s = start().await;
    let admin = s.admin_addr().unwrap();
    let dry = format!("{PATH}?dryRun=All");
    let (code, view) = call(admin, "PUT", &dry, Some(&ratio(2000))).await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["status"]["weights"], json!({"v1": 8000, "v3": 2000}), "the release it would make: {view}");
    let (_, list) = call(admin, "GET", "/api/v1/releases", None).await;
    assert_eq!(list["items"], json!([]), "a dry run stores nothing");
    let (code, _) = call(admin, "GET", PATH, None).await;
    assert_eq!(code, 404);

    // Refusals are the PUT's own, with the field: RE2 refuses a lookahead that JavaScript would take.
    let bad_regex = policy(json!({"service": "reviews", "stable": "v1", "canary": "v3", "traffic": {"rules": [
        {"match": {"headers": [{"name": "x-user", "regex": "(?=a)b"}]}}]}}));
    let (code, err) = call(admin, "PUT", &dry, Some(&bad_regex)).await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["field"], "spec.traffic.rules[0].match.headers[0].regex", "{err}");
    let (code, err) = call(admin, "PUT", &dry, Some(&ratio(10100))).await;
    assert_eq!((code, err["field"].as_str()), (400, Some("spec.traffic.canaryWeight")), "{err}");
    let no_service = policy(json!({"service": "nope", "stable": "v1", "canary": "v3"}));
    let (code, err) = call(admin, "PUT", &dry, Some(&no_service)).await;
    assert_eq!((code, err["field"].as_str()), (400, Some("spec.service")), "{err}");
    let (code, err) = call(admin, "PUT", &format!("{PATH}?dryRun=true"), Some(&ratio(0))).await;
    assert_eq!((code, err["field"].as_str()), (400, Some("dryRun")), "{err}");
    let (_, list) = call(admin, "GET", "/api/v1/releases", None).await;
    assert_eq!(list["items"], json!([]), "nothing stored by any of them");
}

#[tokio::test]
async fn a_plan_names_the_clusters_that_leave_and_the_version_that_stays() {
    let s = start().await;
    let admin = s.admin_addr().unwrap();
    let (code, _) = call(admin, "PUT", PATH, Some(&ratio(2000))).await;
    assert_eq!(code, 200);

    // Finalizing a split release is refused, by the plan as by the verb.
    let (code, err) = call(admin, "POST", &format!("{PATH}/finalize?dryRun=All"), None).await;
    assert_eq!(code, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("promote or abort it first"), "{err}");

    let (code, plan) = call(admin, "POST", &format!("{PATH}/promote?dryRun=All"), None).await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!((plan["phase"].as_str(), plan["nextPhase"].as_str()), (Some("Progressing"), Some("Promoted")));
    assert_eq!(plan["weights"], json!({"v1": 0, "v3": 10000}));
    assert_eq!(plan["keeps"], json!(["v3"]));
    let (_, view) = call(admin, "GET", PATH, None).await;
    assert_eq!(view["status"]["phase"], "Progressing", "the plan changed nothing");

    let (code, _) = call(admin, "POST", &format!("{PATH}/promote"), None).await;
    assert_eq!(code, 200);
    let (code, plan) = call(admin, "POST", &format!("{PATH}/finalize?dryRun=All"), None).await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["nextPhase"], "Finalized");
    assert_eq!(plan["clustersRemoved"], json!(["outbound|9080|v1|reviews.default.svc.cluster.local"]), "{plan}");
    assert_eq!(plan["loser"]["version"], "v1");
    assert_eq!(plan["loser"]["deployment"], "Keep");
    let (_, view) = call(admin, "GET", PATH, None).await;
    assert_eq!(view["status"]["phase"], "Promoted", "the plan changed nothing");
}
