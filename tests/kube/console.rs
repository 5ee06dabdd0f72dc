//! The release console in Kubernetes mode, in Debian's headless Chromium (`tests/browser/console_kube.mjs`,
//! playwright-core) against Sluice watching the kmock API emulator (there is no API server here) and a real Envoy
//! routing to two backends: the Create
//! Release Task form deploys the new version from the stable Deployment with a new image tag and a replica count,
//! the task is a ReleasePolicy in the cluster, the progress bar follows the canary Deployment from 0/2 to 2/2 as
//! this test plays the Deployment controller, and the traffic policy form unlocks only then. Delivering a policy
//! replaces the cluster object's spec; ending the task scales v1's Deployment to zero, as the form asked. Needs `/usr/bin/chromium` and `npm ci` in tests/browser (scripts/setup).

use crate::common;
use crate::deploy::{deployment_of, pod, reviews_service, slice, sluice_leading};

use common::browser::{require_browser, run_script};
use common::kmock::{Kmock, api, create, patch, resource_version};
use common::mesh::until_release;
use common::{Backend, load, repo, start_envoy};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use sluice::source::kube::console::ClusterPolicies;
use std::sync::Arc;
use std::time::Duration;

async fn policy(client: &kube::Client) -> Option<Value> {
    match api(client, "sluice.dev/v1alpha1", "ReleasePolicy").get("reviews-v3").await {
        Ok(o) => Some(serde_json::to_value(o).unwrap()),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => panic!("get policy: {e}"),
    }
}

/// The Deployment controller's part: the canary Deployment's status.
async fn ready_replicas(client: &kube::Client, ready: i32) {
    let p = json!({"metadata": {"resourceVersion": resource_version()},
                   "status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": ready}});
    let a = api(client, "apps/v1", "Deployment");
    a.patch_status("reviews-v3", &PatchParams::default(), &Patch::Merge(p)).await.expect("deployment status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_deploys_the_new_version_and_unlocks_the_policy_once_it_is_rolled_out() {
    require_browser();
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    create(&client, reviews_service()).await;
    create(&client, deployment_of("reviews-v1", "reviews", "v1", "istio/examples-bookinfo-reviews-v1:1.20")).await;
    for p in ["reviews-v1-a", "reviews-v1-b"] {
        create(&client, pod(p, "reviews", "v1")).await;
    }
    create(&client, slice("reviews-v1", v1.port(), &["reviews-v1-a", "reviews-v1-b"], true)).await;
    // Leading (status writer and Deployment task), with the Release API writing tasks to the cluster as `serve
    // --kube` does.
    let running = sluice_leading(&kmock, true).await;
    let sluice = &running.sluice;
    sluice.releases().set_cluster(Arc::new(ClusterPolicies::new(kmock.client().await, &[])));
    let (_envoy, listen) = start_envoy(sluice.xds_addr(), "envoy-console-kube", false).await;
    sluice.wait_acked("envoy-console-kube", Duration::from_secs(10)).await.expect("Envoy ACKs the config");

    let admin = sluice.admin_addr().expect("admin port");
    let mut env = vec![("CONSOLE_URL", format!("http://{admin}/dashboard"))];
    if let Ok(dir) = std::env::var("SLUICE_CONSOLE_SCREENSHOTS") {
        env.push(("SCREENSHOTS", repo().join(dir).display().to_string()));
    }
    let within = Duration::from_secs(180);
    let seen = run_script("console_kube.mjs", &env, within, async |checkpoint: &str| match checkpoint {
        "deployed" => {
            // The task is a ReleasePolicy in the cluster, and the Deployment task made the canary from it.
            let p = policy(&client).await.expect("the ReleasePolicy is in the cluster");
            assert_eq!(p["spec"]["deploy"]["images"], json!({"reviews": "istio/examples-bookinfo-reviews-v3:1.20"}));
            assert_eq!(p["spec"]["deploy"]["replicas"], 2, "{p:#}");
            assert_eq!(p["spec"]["finalize"], json!({"loser": "ScaleToZero"}), "{p:#}");
            let a = api(&client, "apps/v1", "Deployment");
            let canary = serde_json::to_value(a.get("reviews-v3").await.expect("canary Deployment")).unwrap();
            let image = &canary["spec"]["template"]["spec"]["containers"][0]["image"];
            assert_eq!(image, "istio/examples-bookinfo-reviews-v3:1.20", "{canary:#}");
            assert_eq!(canary["spec"]["template"]["metadata"]["labels"]["version"], "v3");
            // Nothing of v3 is ready: all traffic stays on v1.
            let c = load(listen, "reviews", 200, 4).await;
            assert_eq!((c.of("v1"), c.errors, c.non_2xx), (200, 0, 0), "{c:?}");
            // Its pods start, none ready yet.
            for p in ["reviews-v3-a", "reviews-v3-b"] {
                create(&client, pod(p, "reviews", "v3")).await;
            }
            create(&client, slice("reviews-v3", v3.port(), &["reviews-v3-a", "reviews-v3-b"], false)).await;
            ready_replicas(&client, 1).await;
        }
        "one-ready" => {
            let ready = |pod: &str| {
                json!({"addresses": ["127.0.0.1"], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "name": pod}})
            };
            let endpoints = json!({"endpoints": [ready("reviews-v3-a"), ready("reviews-v3-b")]});
            patch(&client, "discovery.k8s.io/v1", "EndpointSlice", "reviews-v3", endpoints).await;
            ready_replicas(&client, 2).await;
        }
        "delivered" => {
            let p = policy(&client).await.expect("the ReleasePolicy");
            assert_eq!(p["spec"]["traffic"]["canaryWeight"], 2000, "the delivered policy is the cluster's: {p:#}");
            assert!(p["spec"]["deploy"].is_object(), "delivering a policy keeps spec.deploy: {p:#}");
            until_release(sluice, "reviews-v3", |v| v.status.weights.get("v3") == Some(&2000), "20% to v3").await;
            let c = load(listen, "reviews", 1000, 8).await;
            let share = c.of("v3") as f64 / 1000.0;
            println!("20% through Envoy: {c:?}");
            assert_eq!((c.errors, c.non_2xx), (0, 0), "{c:?}");
            assert!((0.15..=0.25).contains(&share), "v3 gets ~20% of 1,000 requests: {share}");
        }
        "ended" => {
            // Once Envoy ACKed the state without v1, the Deployment task scales v1 down.
            let a = api(&client, "apps/v1", "Deployment");
            let started = std::time::Instant::now();
            loop {
                let stable = serde_json::to_value(a.get("reviews-v1").await.expect("reviews-v1")).unwrap();
                if stable["spec"]["replicas"] == 0 {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "reviews-v1 not scaled to 0: {stable:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let c = load(listen, "reviews", 200, 4).await;
            assert_eq!((c.of("v3"), c.errors, c.non_2xx), (200, 0, 0), "v3 takes all traffic: {c:?}");
        }
        other => panic!("unknown checkpoint {other}"),
    })
    .await;
    assert_eq!(seen, ["deployed", "one-ready", "delivered", "ended"], "every checkpoint was reached");
}
