//! Envoy `Node` → [`ProxyInfo`]: the node metadata keys `sluice bootstrap` writes, read back.

use crate::model::{GatewayRole, InterceptionMode, ObjectKey, ProxyInfo};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use std::collections::BTreeMap;

pub use crate::bootstrap::{
    META_GATEWAY, META_GATEWAY_BIND, META_INBOUND_PORTS, META_LABELS, META_LISTEN, META_MTLS, META_NAMESPACE, META_VHDS,
};
/// `grpc` marks a proxyless gRPC client (as Istio's `GENERATOR`).
pub const META_GENERATOR: &str = "GENERATOR";

/// A node the server cannot serve, named with the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("the first request on a stream must carry `node`")]
    Missing,
    #[error("node.id must not be empty")]
    NoId,
    #[error("node.id is longer than {0} bytes")]
    IdTooLong(usize),
    #[error("node.metadata.{key}: {message}")]
    Metadata { key: &'static str, message: String },
}

/// Longest node id accepted (Kubernetes pod name + namespace fit easily).
pub const MAX_NODE_ID: usize = 512;

pub fn proxy_info(node: Option<&Node>) -> Result<ProxyInfo, NodeError> {
    let node = node.ok_or(NodeError::Missing)?;
    if node.id.is_empty() {
        return Err(NodeError::NoId);
    }
    if node.id.len() > MAX_NODE_ID {
        return Err(NodeError::IdTooLong(MAX_NODE_ID));
    }
    let empty = Struct::default();
    let meta = node.metadata.as_ref().unwrap_or(&empty);
    let namespace = stated_namespace(node).map(|(ns, _)| ns).unwrap_or_else(|| "default".to_string());
    let mode = if let Some(listen) = string(meta, META_LISTEN) {
        let addr = listen.parse().map_err(|e| NodeError::Metadata {
            key: META_LISTEN,
            message: format!("`{listen}` is not ip:port ({e})"),
        })?;
        InterceptionMode::Listen(addr)
    } else if let Some(role) = gateway_role(node, meta)? {
        InterceptionMode::Gateway(role)
    } else if string(meta, META_GENERATOR) == Some("grpc") || node.user_agent_name.starts_with("gRPC") {
        InterceptionMode::Proxyless
    } else {
        InterceptionMode::Intercept
    };
    // Only an Envoy can take SDS secrets into its TLS contexts; a proxyless client never gets TLS here. A gateway
    // with SDS (`sluice proxy --gateway --mtls`) calls the mesh over mTLS with its own identity, as istiod's do.
    let mtls = string(meta, META_MTLS) == Some("true")
        && matches!(mode, InterceptionMode::Listen(_) | InterceptionMode::Intercept | InterceptionMode::Gateway(_));
    Ok(ProxyInfo {
        id: node.id.clone(),
        namespace,
        mode,
        labels: labels(meta),
        inbound_ports: inbound_ports(meta)?,
        visibility: Default::default(),
        mtls,
        // Whether the node allows VHDS; the stream keeps it only for Delta ADS (Envoy takes VHDS over Delta only).
        vhds: string(meta, META_VHDS) != Some("false"),
    })
}

/// The namespace a node claims, and where: `node.metadata.NAMESPACE`, else the namespace part of an Istio-style
/// node id (`sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`). `None` when it claims none.
pub fn stated_namespace(node: &Node) -> Option<(String, &'static str)> {
    let meta = node.metadata.as_ref();
    if let Some(ns) = meta.and_then(|m| string(m, META_NAMESPACE)) {
        return Some((ns.to_string(), "node.metadata.NAMESPACE"));
    }
    let parts: Vec<&str> = node.id.split('~').collect();
    match parts.as_slice() {
        [_, _, pod, _] => {
            pod.split_once('.').map(|(_, ns)| (ns.to_string(), "node.id")).filter(|(ns, _)| !ns.is_empty())
        }
        _ => None,
    }
}

/// A gateway proxy: node metadata `SLUICE_GATEWAY: NS/NAME` (`sluice bootstrap --gateway`), or an Istio router
/// node id (`router~IP~POD.NS~NS.svc.cluster.local`), which is given the Gateways its labels select.
fn gateway_role(node: &Node, meta: &Struct) -> Result<Option<GatewayRole>, NodeError> {
    let named = match string(meta, META_GATEWAY) {
        Some(text) => {
            let (ns, name) =
                text.split_once('/').filter(|(ns, n)| !ns.is_empty() && !n.is_empty()).ok_or_else(|| {
                    NodeError::Metadata { key: META_GATEWAY, message: format!("`{text}` is not NAMESPACE/NAME") }
                })?;
            Some(ObjectKey::new(ns, name))
        }
        None if node.id.starts_with("router~") => None,
        None => return Ok(None),
    };
    let bind = match string(meta, META_GATEWAY_BIND) {
        Some(ip) => ip.parse().map_err(|e| NodeError::Metadata {
            key: META_GATEWAY_BIND,
            message: format!("`{ip}` is not an IP address ({e})"),
        })?,
        None => std::net::IpAddr::from([0, 0, 0, 0]),
    };
    Ok(Some(GatewayRole { named, bind }))
}

fn field<'a>(meta: &'a Struct, key: &str) -> Option<&'a Kind> {
    meta.fields.get(key).and_then(|v: &Value| v.kind.as_ref())
}

fn string<'a>(meta: &'a Struct, key: &str) -> Option<&'a str> {
    match field(meta, key) {
        Some(Kind::StringValue(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn labels(meta: &Struct) -> BTreeMap<String, String> {
    let Some(Kind::StructValue(s)) = field(meta, META_LABELS) else { return BTreeMap::new() };
    s.fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

fn inbound_ports(meta: &Struct) -> Result<Vec<u16>, NodeError> {
    let Some(list) = string(meta, META_INBOUND_PORTS) else { return Ok(Vec::new()) };
    let mut ports = list
        .split(',')
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| NodeError::Metadata { key: META_INBOUND_PORTS, message: format!("`{p}` is not a port") })
        })
        .collect::<Result<Vec<u16>, _>>()?;
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(meta: &[(&str, Kind)]) -> Node {
        let fields = meta.iter().map(|(k, v)| (k.to_string(), Value { kind: Some(v.clone()) })).collect();
        Node { id: "p1".into(), metadata: Some(Struct { fields }), ..Default::default() }
    }

    #[test]
    fn listen_mode_and_namespace_come_from_metadata() {
        let n = node(&[
            (META_NAMESPACE, Kind::StringValue("shop".into())),
            (META_LISTEN, Kind::StringValue("127.0.0.1:15080".into())),
            (META_INBOUND_PORTS, Kind::StringValue("9080, 9081".into())),
        ]);
        let p = proxy_info(Some(&n)).unwrap();
        assert_eq!(p.namespace, "shop");
        assert_eq!(p.mode, InterceptionMode::Listen("127.0.0.1:15080".parse().unwrap()));
        assert_eq!(p.inbound_ports, vec![9080, 9081]);
    }

    #[test]
    fn bad_metadata_names_the_key() {
        let n = node(&[(META_LISTEN, Kind::StringValue("nope".into()))]);
        let err = proxy_info(Some(&n)).unwrap_err().to_string();
        assert!(err.starts_with("node.metadata.SLUICE_LISTEN: `nope` is not ip:port"), "{err}");
        assert_eq!(proxy_info(None).unwrap_err(), NodeError::Missing);
    }

    #[test]
    fn gateways_are_named_in_metadata_or_are_istio_routers() {
        let n = node(&[
            (META_GATEWAY, Kind::StringValue("istio-system/bookinfo-gateway".into())),
            (META_GATEWAY_BIND, Kind::StringValue("127.0.0.1".into())),
        ]);
        let want = GatewayRole {
            named: Some(ObjectKey::new("istio-system", "bookinfo-gateway")),
            bind: "127.0.0.1".parse().unwrap(),
        };
        assert_eq!(proxy_info(Some(&n)).unwrap().mode, InterceptionMode::Gateway(want));
        let router =
            Node { id: "router~10.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local".into(), ..node(&[]) };
        let p = proxy_info(Some(&router)).unwrap();
        assert_eq!(p.mode, InterceptionMode::Gateway(GatewayRole { named: None, bind: [0, 0, 0, 0].into() }));
        assert_eq!(p.namespace, "istio-system");
        let bad = node(&[(META_GATEWAY, Kind::StringValue("nope".into()))]);
        assert!(proxy_info(Some(&bad)).unwrap_err().to_string().starts_with("node.metadata.SLUICE_GATEWAY"));
    }

    #[test]
    fn an_istio_node_id_states_its_namespace() {
        let mut n = node(&[]);
        n.id = "sidecar~10.0.0.1~reviews-v1-abc.shop~shop.svc.cluster.local".into();
        assert_eq!(stated_namespace(&n), Some(("shop".into(), "node.id")));
        assert_eq!(proxy_info(Some(&n)).unwrap().namespace, "shop");
        assert_eq!(stated_namespace(&node(&[])), None);
    }

    #[test]
    fn only_sluice_mtls_true_opts_into_workload_mtls() {
        let on = node(&[(META_MTLS, Kind::StringValue("true".into()))]);
        assert!(proxy_info(Some(&on)).unwrap().mtls);
        for off in [node(&[]), node(&[(META_MTLS, Kind::StringValue("false".into()))])] {
            assert!(!proxy_info(Some(&off)).unwrap().mtls);
        }
        let mut grpc = on.clone();
        grpc.user_agent_name = "gRPC Python".into();
        assert!(!proxy_info(Some(&grpc)).unwrap().mtls, "a proxyless client has no SDS");
    }

    #[test]
    fn grpc_clients_are_proxyless_and_defaults_apply() {
        let mut n = node(&[]);
        n.user_agent_name = "gRPC Python".into();
        let p = proxy_info(Some(&n)).unwrap();
        assert_eq!((p.namespace.as_str(), p.mode), ("default", InterceptionMode::Proxyless));
    }
}
