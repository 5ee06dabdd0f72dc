//! `GET /api/v1/inventory`: what the console offers when a release task is created. Every namespace that holds a
//! Service, each Service's ports and versions (endpoints grouped by the version label, ready of total), and the
//! release task that already owns it, if one does. Read from the model as served, so the console offers exactly
//! what a release policy could name.
//!
//! ```json
//! {"namespaces": [{"name": "default", "services": [{"name": "reviews", "ports": [{"name": "http",
//!   "port": 9080, "protocol": "http"}], "versionLabel": "version", "versions": [{"name": "v1", "ready": 1,
//!   "endpoints": 1}], "unversioned": 0, "release": null}]}]}
//! ```

use super::AdminState;
use super::releases::ApiError;
use crate::model::{DEFAULT_VERSION_LABEL, Model, ObjectKey};
use crate::release::cluster::{Container, DeploymentInfo};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, PartialEq, Serialize)]
pub struct Inventory {
    pub namespaces: Vec<Namespace>,
    /// Whether some namespace's tasks live in a Kubernetes cluster (they may deploy their new version).
    pub kubernetes: bool,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct Namespace {
    pub name: String,
    pub services: Vec<ServiceEntry>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    pub name: String,
    pub ports: Vec<Port>,
    /// The label whose value names an endpoint's version (the release policy's `versionLabel` when one exists).
    pub version_label: String,
    pub versions: Vec<Version>,
    /// Endpoints without the version label: a release cannot name them.
    pub unversioned: usize,
    /// The release task that owns this Service (one per Service).
    pub release: Option<String>,
    /// Kubernetes mode: the Deployments running this Service's pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployments: Option<Vec<DeploymentEntry>>,
}

/// A Deployment that runs a Service's pods.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEntry {
    pub name: String,
    /// Its pods' version (the version label of its pod template).
    pub version: Option<String>,
    pub containers: Vec<Container>,
    pub replicas: i32,
    pub ready_replicas: i32,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct Port {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct Version {
    pub name: String,
    /// Ready endpoints (not terminating), of `endpoints`.
    pub ready: usize,
    pub endpoints: usize,
}

pub async fn inventory(State(s): State<AdminState>) -> Result<Json<Inventory>, ApiError> {
    let model = s.store.model();
    let mut inv = of(&model);
    for ns in &mut inv.namespaces {
        let Some(deployments) = s.releases.deployments(&ns.name).await? else { continue };
        inv.kubernetes = true;
        for svc in &mut ns.services {
            let selector = model.services.get(&ObjectKey::new(&ns.name, &svc.name)).map(|s| &s.selector);
            svc.deployments = Some(running(&deployments, selector.cloned().unwrap_or_default(), &svc.version_label));
        }
    }
    Ok(Json(inv))
}

/// The Deployments whose pods a Service with `selector` routes to (pure).
pub fn running(
    deployments: &[DeploymentInfo],
    selector: std::collections::BTreeMap<String, String>,
    version_label: &str,
) -> Vec<DeploymentEntry> {
    deployments
        .iter()
        .filter(|d| d.runs_pods_of(&selector))
        .map(|d| DeploymentEntry {
            name: d.name.clone(),
            version: d.template_labels.get(version_label).cloned(),
            containers: d.containers.clone(),
            replicas: d.replicas,
            ready_replicas: d.ready_replicas,
        })
        .collect()
}

/// The inventory of a model (pure).
pub fn of(model: &Model) -> Inventory {
    let mut namespaces: BTreeMap<&str, Vec<ServiceEntry>> = BTreeMap::new();
    for (key, svc) in &model.services {
        let policy = model.policy_for(key);
        let label = policy.map_or(DEFAULT_VERSION_LABEL, |p| p.spec.version_label());
        let mut versions: BTreeMap<&str, Version> = BTreeMap::new();
        let mut unversioned = 0;
        for e in model.endpoints_of(key) {
            let Some(v) = e.labels.get(label) else {
                unversioned += 1;
                continue;
            };
            let entry = versions.entry(v).or_insert_with(|| Version { name: v.clone(), ready: 0, endpoints: 0 });
            entry.endpoints += 1;
            entry.ready += usize::from(e.ready && !e.terminating);
        }
        let ports = svc
            .ports
            .iter()
            .map(|p| Port {
                name: p.name.clone(),
                port: p.port,
                protocol: p.app_protocol.clone().unwrap_or_else(|| "http".into()),
            })
            .collect();
        namespaces.entry(&key.namespace).or_default().push(ServiceEntry {
            name: key.name.clone(),
            ports,
            version_label: label.to_string(),
            versions: versions.into_values().collect(),
            unversioned,
            release: policy.map(|p| p.name.clone()),
            deployments: None,
        });
    }
    let namespaces =
        namespaces.into_iter().map(|(name, services)| Namespace { name: name.to_string(), services }).collect();
    Inventory { namespaces, kubernetes: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_counted_per_service_and_a_release_is_named() {
        let wl = |name: &str, app: &str, version: Option<&str>, port: u16, ready: bool| {
            let version = version.map(|v| format!(", version: {v}")).unwrap_or_default();
            format!(
                "---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: {}, \
                 labels: {{app: {app}{version}}}}}\nspec: {{address: 127.0.0.1, ports: {{http: {port}}}, ready: {ready}}}\n",
                if app == "ratings" { "shop" } else { "default" }
            )
        };
        let yaml = [
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: reviews}\n\
             spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n"
                .to_string(),
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: shop}\n\
             spec: {selector: {app: ratings}, ports: [{name: http, port: 9080, appProtocol: grpc}]}\n"
                .to_string(),
            wl("reviews-v1-a", "reviews", Some("v1"), 19001, true),
            wl("reviews-v1-b", "reviews", Some("v1"), 19002, false),
            wl("reviews-v3", "reviews", Some("v3"), 19003, true),
            wl("ratings", "ratings", None, 19004, true),
            "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: reviews-v3}\n\
             spec: {service: reviews, stable: v1, canary: v3}\n"
                .to_string(),
        ]
        .concat();
        let model = crate::source::parse_str(&yaml, "inventory.yaml").expect("parses");
        let inv = of(&model);
        let names: Vec<&str> = inv.namespaces.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["default", "shop"]);
        let reviews = &inv.namespaces[0].services[0];
        assert_eq!(reviews.release.as_deref(), Some("reviews-v3"));
        let versions: Vec<(&str, usize, usize)> =
            reviews.versions.iter().map(|v| (v.name.as_str(), v.ready, v.endpoints)).collect();
        assert_eq!(versions, [("v1", 1, 2), ("v3", 1, 1)]);
        let ratings = &inv.namespaces[1].services[0];
        assert_eq!((ratings.unversioned, ratings.release.as_deref()), (1, None));
        assert_eq!(ratings.ports[0].protocol, "grpc");
    }
}
