//! Sidecar injection: what istiod's mutating webhook does, for Sluice's sidecar. A pod being created gets the
//! `sluice-init` init container (`sluice iptables`), the `sluice-proxy` sidecar (`sluice proxy`) and their
//! volumes, as an RFC 6902 JSONPatch that only adds. The same pure core serves the webhook (`sluice serve
//! --inject`, `POST /inject` on 15017) and the offline form (`sluice inject -f`, as `istioctl kube-inject`).
//!
//! ```text
//!  AdmissionReview ─▶ review::answer ─▶ policy::decide (hostNetwork, system namespaces, opt-out, injected?)
//!                                     ─▶ annotations::parse (Istio's annotations; a bad value refuses the pod)
//!                                     ─▶ template::parts ─▶ patch::ops ─▶ response (JSONPatch, base64)
//!                                     ─▶ (inject.istio.io/templates: gateway) gateway::ops: the gateway's own
//!                                        proxy container filled in as the agent, no init container
//!  sluice inject -f F ─▶ offline: each pod template ─▶ the same ops, applied with `json-patch` ─▶ YAML
//! ```

pub mod annotations;
pub mod certs;
pub mod gateway;
pub mod offline;
pub mod patch;
pub mod policy;
pub mod review;
pub mod template;
pub mod webhook;

use serde_json::Value;

/// How sidecars are injected; shared by `sluice serve --inject` and `sluice inject`.
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct Settings {
    /// The image of the injected containers: sluice and Envoy (`scripts/build-image` builds it).
    #[arg(long = "proxy-image", env = "SLUICE_PROXY_IMAGE", default_value = "sluice:latest")]
    pub image: String,
    /// The injected containers' `imagePullPolicy`.
    #[arg(long = "proxy-image-pull-policy", env = "SLUICE_PROXY_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub image_pull_policy: String,
    /// The xDS address injected sidecars connect to.
    #[arg(long = "proxy-xds", env = "SLUICE_PROXY_XDS", default_value = "sluice.sluice-system.svc:15010")]
    pub xds: String,
    /// Inject the sidecar as a native sidecar (an init container with `restartPolicy: Always`; Kubernetes 1.29+):
    /// it starts before the app's containers and stops after them.
    #[arg(long = "native-sidecars", env = "SLUICE_NATIVE_SIDECARS")]
    pub native_sidecars: bool,
    /// The sidecar's drain on SIGTERM, in seconds (`proxy.istio.io/config` `terminationDrainDuration` per pod).
    #[arg(long = "proxy-drain-seconds", env = "SLUICE_PROXY_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
    /// Envoy's worker threads (`proxy.istio.io/config` `concurrency` per pod).
    #[arg(long = "proxy-concurrency", env = "SLUICE_PROXY_CONCURRENCY", default_value_t = 2)]
    pub concurrency: u32,
    /// The mesh CA's root (PEM), when Sluice runs its CA (`serve --ca`): injected sidecars then get workload
    /// mTLS (their agent asks the CA with a projected token and trusts this root). Set by `serve`, not a flag.
    #[arg(skip)]
    #[serde(skip)]
    pub mesh_root_pem: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image: "sluice:latest".into(),
            image_pull_policy: "IfNotPresent".into(),
            xds: "sluice.sluice-system.svc:15010".into(),
            native_sidecars: false,
            drain_seconds: 5,
            concurrency: 2,
            mesh_root_pem: None,
        }
    }
}

/// What injection does to one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The JSONPatch to apply, and warnings for the user (annotations not honoured).
    Injected { ops: Vec<Value>, warnings: Vec<String> },
    /// Left as it is, and why.
    Skipped(policy::Skip),
    /// The pod asks for something that cannot be done: it is refused, naming what.
    Refused(Refusal),
}

/// Why a pod is refused: its message is what `kubectl` shows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An annotation's value makes no sense.
    #[error(transparent)]
    Annotation(#[from] annotations::BadAnnotation),
    /// A gateway pod (`inject.istio.io/templates: gateway`) the injector cannot fill in.
    #[error(transparent)]
    Gateway(#[from] gateway::BadGateway),
}

/// Injection for `pod` (a Pod as JSON, or a pod template's `metadata` and `spec`) in `namespace`.
pub fn inject(pod: &Value, namespace: &str, settings: &Settings) -> Outcome {
    if let Err(skip) = policy::decide(pod, namespace) {
        return Outcome::Skipped(skip);
    }
    let overrides = match annotations::parse(pod["metadata"]["annotations"].as_object()) {
        Ok(o) => o,
        Err(e) => return Outcome::Refused(e.into()),
    };
    if overrides.gateway {
        return match gateway::ops(pod, settings, &overrides) {
            Ok((ops, warnings)) => Outcome::Injected { ops, warnings },
            Err(e) => Outcome::Refused(e.into()),
        };
    }
    let parts = template::parts(pod, settings, &overrides);
    Outcome::Injected { ops: patch::ops(pod, &parts), warnings: overrides.warnings }
}
