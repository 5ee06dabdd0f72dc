//! Builders for models written in code: what harnesses and tests use instead of YAML.
//!
//! ```
//! use sluice::model::{Endpoint, Model, ReleasePolicy, ReleasePolicySpec, Service};
//! let mut m = Model::default();
//! let reviews = m.insert_service(Service::http("default", "reviews", 9080));
//! m.push_endpoint(&reviews, Endpoint::ready("reviews-v1", "127.0.0.1", 9080, 19082).with_label("version", "v1"));
//! m.insert_policy(ReleasePolicy::new("default", "reviews-v3", ReleasePolicySpec::split("reviews", "v1", "v3", 2000)));
//! ```

use super::{Endpoint, Model, ObjectKey, ReleasePolicy, ReleasePolicySpec, Service, ServicePort, TargetPort, Traffic};
use std::collections::BTreeMap;

impl Service {
    /// A service with one HTTP port named `http` (target port = port).
    pub fn http(namespace: &str, name: &str, port: u16) -> Self {
        Self::with_port(namespace, name, "http", port, None)
    }

    /// A service with one gRPC port named `grpc` (upstream HTTP/2).
    pub fn grpc(namespace: &str, name: &str, port: u16) -> Self {
        Self::with_port(namespace, name, "grpc", port, Some("grpc"))
    }

    fn with_port(namespace: &str, name: &str, port_name: &str, port: u16, proto: Option<&str>) -> Self {
        let port = ServicePort {
            name: port_name.into(),
            port,
            target_port: TargetPort::Number(port),
            app_protocol: proto.map(String::from),
        };
        Self { name: name.into(), namespace: namespace.into(), ports: vec![port], ..Default::default() }
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.name)
    }
}

impl Endpoint {
    /// A ready endpoint serving `service_port` on `address:port`.
    pub fn ready(name: &str, address: &str, service_port: u16, port: u16) -> Self {
        Self {
            name: name.into(),
            address: address.into(),
            ports: BTreeMap::from([(service_port, port)]),
            labels: BTreeMap::new(),
            ready: true,
            terminating: false,
            service_account: None,
        }
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

impl ReleasePolicySpec {
    /// A ratio policy: `canary` gets `canary_weight` basis points of `service`, `stable` the rest.
    pub fn split(service: &str, stable: &str, canary: &str, canary_weight: u32) -> Self {
        Self {
            service: service.into(),
            stable: stable.into(),
            canary: canary.into(),
            traffic: Traffic { canary_weight, ..Default::default() },
            ..Default::default()
        }
    }
}

impl ReleasePolicy {
    /// A policy that follows its spec (no release state yet).
    pub fn new(namespace: &str, name: &str, spec: ReleasePolicySpec) -> Self {
        Self { name: name.into(), namespace: namespace.into(), spec, state: Default::default() }
    }
}

impl Model {
    /// Adds (or replaces) a service; returns its key.
    pub fn insert_service(&mut self, service: Service) -> ObjectKey {
        let key = service.key();
        self.services.insert(key.clone(), service);
        key
    }

    /// Adds an endpoint behind a service.
    pub fn push_endpoint(&mut self, service: &ObjectKey, endpoint: Endpoint) {
        self.endpoints.entry(service.clone()).or_default().push(endpoint);
    }

    /// Adds (or replaces) a release policy; returns its key.
    pub fn insert_policy(&mut self, policy: ReleasePolicy) -> ObjectKey {
        let key = ObjectKey::new(&policy.namespace, &policy.name);
        self.policies.insert(key.clone(), policy);
        key
    }
}
