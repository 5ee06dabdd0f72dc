//! The inbound side of workload mTLS: `virtualInbound`'s chains of a proxy that takes part in it (`ProxyInfo::mtls`),
//! by the PeerAuthentication mode of each port (`Model::peer_policies`), as istiod builds them.
//!
//! ```text
//!  listener filters: original_dst, tls_inspector (sets the transport protocol: tls | raw_buffer)
//!  per inbound port P, by mode:
//!    STRICT      {P, tls} mTLS ─▶ the app      {P, raw_buffer} refused (network RBAC, nothing allowed)
//!    PERMISSIVE  {P, tls} mTLS ─▶ the app      {P, raw_buffer} plaintext ─▶ the app
//!    DISABLE     {P} plaintext ─▶ the app
//!  other ports (the listener's default), by the workload's mode:
//!    STRICT      {tls} mTLS ─▶ InboundPassthroughClusterIpv4; default: refused
//!    otherwise   default: InboundPassthroughClusterIpv4, as without mTLS
//! ```
//! mTLS here is a DownstreamTlsContext with the workload's SDS identity that requires a client certificate of the
//! mesh CA (`tls::downstream`). A refused port needs its own chain: without one, a plaintext connection would fall
//! to the listener's default chain and reach the app through the passthrough. HTTP chains add the caller's
//! certificate (subject, URI = its SPIFFE id, DNS) to `x-forwarded-client-cert` for the app.

use super::listener::{TCP_PROXY_FILTER, chain, tcp_proxy};
use super::{naming, pack, tls};
use crate::model::mesh::MtlsMode;
use crate::model::{Model, ProxyInfo};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, ListenerFilter, listener_filter};
use envoy_types::pb::envoy::config::rbac::v3::{Rbac as RbacRules, rbac};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

const TLS: &str = "tls";
const RAW: &str = "raw_buffer";
const RBAC_FILTER: &str = "envoy.filters.network.rbac";

/// Reads the ClientHello, so chains can match `transport_protocol`.
pub(super) fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(&TlsInspector::default()))),
        ..Default::default()
    }
}

/// The caller's identity for the app: `x-forwarded-client-cert` with the peer certificate's subject, URI and DNS
/// SANs appended to what the caller sent (istiod's inbound setting).
pub(super) fn forward_client_cert(hcm: &mut HttpConnectionManager) {
    use http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails};
    hcm.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
    hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
        subject: Some(BoolValue { value: true }),
        dns: true,
        uri: true,
        ..Default::default()
    });
}

fn matching(mut c: FilterChain, port: Option<u16>, transport: Option<&str>) -> FilterChain {
    c.filter_chain_match = Some(FilterChainMatch {
        destination_port: port.map(|p| UInt32Value { value: u32::from(p) }),
        transport_protocol: transport.unwrap_or_default().to_string(),
        ..Default::default()
    });
    c
}

fn with_mtls(mut c: FilterChain, http: bool) -> FilterChain {
    c.transport_socket = Some(tls::downstream_socket(&tls::downstream(http)));
    c
}

/// A chain that takes the connection and lets nothing through: plaintext where mTLS is STRICT. Network RBAC with
/// no policy allowed (counted in `STAT.rbac.denied`), then a TCP proxy to `BlackHoleCluster` (Envoy needs a
/// terminal filter; it has no endpoints, so even without the RBAC nothing would reach the app).
fn refused(stat: &str) -> FilterChain {
    let rules = RbacRules { action: rbac::Action::Allow as i32, ..Default::default() };
    let deny = Rbac { rules: Some(rules), stat_prefix: stat.to_string(), ..Default::default() };
    let mut c = chain(RBAC_FILTER, pack(&deny));
    let blackhole = chain(TCP_PROXY_FILTER, pack(&tcp_proxy(stat, naming::BLACKHOLE_CLUSTER)));
    c.filters.extend(blackhole.filters);
    c
}

/// The chains of inbound port `port`, given the plaintext chain that serves it (`plain`, no match yet).
pub(super) fn port_chains(
    model: &Model,
    proxy: &ProxyInfo,
    port: u16,
    http: bool,
    plain: FilterChain,
) -> Vec<FilterChain> {
    let mode = model.peer_policies(&proxy.namespace, &proxy.labels).port_mode(port);
    let stat = format!("inbound_0.0.0.0_{port}_plaintext_refused");
    match mode {
        MtlsMode::Disable => vec![matching(plain, Some(port), None)],
        MtlsMode::Permissive | MtlsMode::Unset => vec![
            matching(with_mtls(plain.clone(), http), Some(port), Some(TLS)),
            matching(plain, Some(port), Some(RAW)),
        ],
        MtlsMode::Strict => {
            vec![
                matching(with_mtls(plain, http), Some(port), Some(TLS)),
                matching(refused(&stat), Some(port), Some(RAW)),
            ]
        }
    }
}

/// The chains for ports no inbound port names, and the listener's default chain, given the plaintext passthrough.
pub(super) fn passthrough(model: &Model, proxy: &ProxyInfo, plain: FilterChain) -> (Vec<FilterChain>, FilterChain) {
    match model.peer_policies(&proxy.namespace, &proxy.labels).workload_mode() {
        MtlsMode::Strict => {
            let tcp = matching(with_mtls(plain, false), None, Some(TLS));
            (vec![tcp], refused("inbound_passthrough_plaintext_refused"))
        }
        _ => (Vec::new(), plain),
    }
}
