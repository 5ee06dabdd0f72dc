//! `outboundTrafficPolicy.mode: REGISTRY_ONLY` (an Istio Sidecar's): an intercepting sidecar refuses calls to
//! hosts the mesh does not know, with istiod's shapes.
//!
//! ```text
//!                          ALLOW_ANY (default)                  REGISTRY_ONLY
//!  route config catch-all  allow_any ─▶ PassthroughCluster      block_all ─▶ direct response 502
//!  virtualOutbound default tcp_proxy ─▶ PassthroughCluster      tcp_proxy ─▶ BlackHoleCluster (no endpoints)
//!  0.0.0.0_P shared by TCP services ─▶ PassthroughCluster       ─▶ BlackHoleCluster
//! ```
//! The proxy's [`Visibility`](crate::model::Visibility) carries the mode (`registry_only`), so proxies under
//! the same Sidecar share these resources and others keep theirs.

use super::matchers::prefix_all;
use super::naming;
use crate::model::ProxyInfo;
use envoy_types::pb::envoy::config::route::v3::{DirectResponseAction, Route, VirtualHost, route};

/// Where an intercepting proxy sends a connection it has no service for (the cluster, also its stat prefix).
pub(super) fn fallback(proxy: &ProxyInfo) -> &'static str {
    if proxy.visibility.registry_only() { naming::BLACKHOLE_CLUSTER } else { naming::PASSTHROUGH_CLUSTER }
}

/// The last virtual host of an intercept-mode configuration under REGISTRY_ONLY: any host no service claims is
/// answered 502 by the proxy itself (istiod's `block_all`).
pub(super) fn block_all() -> VirtualHost {
    let action = DirectResponseAction { status: 502, ..Default::default() };
    let route = Route {
        name: "block_all".into(),
        r#match: Some(prefix_all()),
        action: Some(route::Action::DirectResponse(action)),
        ..Default::default()
    };
    VirtualHost { name: "block_all".into(), domains: vec!["*".into()], routes: vec![route], ..Default::default() }
}
