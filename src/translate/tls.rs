//! Workload mTLS in Envoy's terms, as istiod writes it: the client side of a cluster and the server side of an
//! inbound chain. Only for proxies that opt in (`ProxyInfo::mtls`, node metadata `SLUICE_MTLS`): their agent serves
//! the SDS secrets `default` (the workload's key and chain) and `ROOTCA` (the trust bundle) over the bootstrap
//! cluster `sds-grpc`.
//!
//! ```text
//!  client (cluster)                                      server (inbound chain)
//!  ISTIO_MUTUAL ─▶ UpstreamTlsContext                    STRICT/PERMISSIVE ─▶ DownstreamTlsContext
//!    cert: SDS default                                     cert: SDS default, require_client_certificate
//!    validation: ROOTCA + SAN = the destination's          validation: ROOTCA
//!      service accounts (spiffe://TD/ns/NS/sa/SA)          ALPN h2, http/1.1 (TCP: istio-peer-exchange first)
//!    SNI outbound_.PORT_.SUBSET_.FQDN
//!    ALPN istio-peer-exchange, istio (+ h2 for HTTP/2)
//!  auto mTLS: transport_socket_matches tlsMode-istio (endpoints labelled security.istio.io/tlsMode: istio)
//!             then tlsMode-disabled (raw buffer)
//!  SIMPLE / MUTUAL ─▶ UpstreamTlsContext from files (caCertificates, clientCertificate, privateKey, sni, SANs)
//! ```

use super::pack;
use crate::model::mesh::{ClientTls, ClientTlsMode};
use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, DataSource, GrpcService, TransportSocket, api_config_source,
    config_source, data_source, grpc_service, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
    TlsCertificate, TlsParameters, UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
    tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value};

/// The SDS secret with the workload's key and certificate chain.
pub const SDS_DEFAULT: &str = "default";
/// The SDS secret with the mesh's trust bundle.
pub const SDS_ROOT: &str = "ROOTCA";
/// The endpoint metadata filter the transport socket matches read (Envoy's).
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const RAW_SOCKET: &str = "envoy.transport_sockets.raw_buffer";
/// Client ALPN to a mesh workload (istiod's `ALPNInMeshWithMxc`), and for HTTP/2 clusters (`ALPNInMeshH2WithMxc`).
const ALPN_IN_MESH: [&str; 2] = ["istio-peer-exchange", "istio"];
const ALPN_IN_MESH_H2: [&str; 3] = ["istio-peer-exchange", "istio", "h2"];
/// Server ALPN of an inbound HTTP chain (istiod's `ALPNDownstream`) and of a TCP one (`ALPNDownstreamWithMxc`).
const ALPN_DOWNSTREAM: [&str; 2] = ["h2", "http/1.1"];
const ALPN_DOWNSTREAM_TCP: [&str; 3] = ["istio-peer-exchange", "h2", "http/1.1"];

/// The SDS source every mesh secret comes from: the agent's socket, behind the bootstrap cluster `sds-grpc`.
fn sds(name: &str) -> SdsSecretConfig {
    let grpc = GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
            cluster_name: crate::bootstrap::SDS_CLUSTER.to_string(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let api = ApiConfigSource {
        api_type: api_config_source::ApiType::Grpc as i32,
        transport_api_version: ApiVersion::V3 as i32,
        grpc_services: vec![grpc],
        set_node_on_first_message_only: true,
        ..Default::default()
    };
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(api)),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn exact(value: &str) -> StringMatcher {
    StringMatcher { match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_string())), ignore_case: false }
}

/// A SAN match: `spiffe://` identities as URI SANs; anything else a user writes as a DNS name.
fn san(name: &str) -> SubjectAltNameMatcher {
    use subject_alt_name_matcher::SanType;
    let san_type = if name.starts_with("spiffe://") { SanType::Uri } else { SanType::Dns };
    SubjectAltNameMatcher { san_type: san_type as i32, matcher: Some(exact(name)), ..Default::default() }
}

/// TLS 1.2 to 1.3, as istiod's clients.
fn client_params() -> TlsParameters {
    TlsParameters {
        tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
        ..Default::default()
    }
}

/// The mesh identity (SDS `default`) with the mesh trust bundle (SDS `ROOTCA`), peers' SANs matched against
/// `sans` (none: any certificate of the mesh CA).
fn mesh_common(sans: &[String], alpn: &[&str]) -> CommonTlsContext {
    let validation = common_tls_context::CombinedCertificateValidationContext {
        default_validation_context: Some(CertificateValidationContext {
            match_typed_subject_alt_names: sans.iter().map(|s| san(s)).collect(),
            ..Default::default()
        }),
        validation_context_sds_secret_config: Some(sds(SDS_ROOT)),
        ..Default::default()
    };
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(SDS_DEFAULT)],
        validation_context_type: Some(common_tls_context::ValidationContextType::CombinedValidationContext(validation)),
        alpn_protocols: strings(alpn),
        ..Default::default()
    }
}

/// The client side of mesh mTLS (`ISTIO_MUTUAL`): `sni` as istiod's `outbound_.PORT_.SUBSET_.FQDN`, the
/// destination's service accounts as the SANs a server certificate must carry.
pub(super) fn istio_mutual(sni: &str, sans: &[String], http2: bool) -> UpstreamTlsContext {
    let alpn: &[&str] = if http2 { &ALPN_IN_MESH_H2 } else { &ALPN_IN_MESH };
    let mut common = mesh_common(sans, alpn);
    common.tls_params = Some(client_params());
    UpstreamTlsContext { common_tls_context: Some(common), sni: sni.to_string(), ..Default::default() }
}

fn file(path: &str) -> DataSource {
    DataSource { specifier: Some(data_source::Specifier::Filename(path.to_string())), ..Default::default() }
}

/// `SIMPLE` / `MUTUAL` from a DestinationRule: files the client's Envoy reads; SNI the rule's, else the
/// destination's FQDN (istiod's `simpleTLSSni`).
pub(super) fn from_files(tls: &ClientTls, default_sni: &str, http2: bool) -> UpstreamTlsContext {
    let validation = CertificateValidationContext {
        trusted_ca: tls.ca_certificates.as_deref().map(file),
        match_typed_subject_alt_names: tls.subject_alt_names.iter().map(|s| san(s)).collect(),
        ..Default::default()
    };
    let certificates = match (tls.mode, &tls.client_certificate, &tls.private_key) {
        (ClientTlsMode::Mutual, Some(cert), Some(key)) => vec![TlsCertificate {
            certificate_chain: Some(file(cert)),
            private_key: Some(file(key)),
            ..Default::default()
        }],
        _ => Vec::new(),
    };
    let common = CommonTlsContext {
        tls_params: Some(client_params()),
        tls_certificates: certificates,
        validation_context_type: Some(common_tls_context::ValidationContextType::ValidationContext(validation)),
        alpn_protocols: if http2 { strings(&["h2"]) } else { Vec::new() },
        ..Default::default()
    };
    let sni = tls.sni.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| default_sni.to_string());
    UpstreamTlsContext { common_tls_context: Some(common), sni, ..Default::default() }
}

/// The server side of mesh mTLS: the workload's identity, a client certificate from the mesh CA required.
pub(super) fn downstream(http: bool) -> DownstreamTlsContext {
    let alpn: &[&str] = if http { &ALPN_DOWNSTREAM } else { &ALPN_DOWNSTREAM_TCP };
    let mut common = mesh_common(&[], alpn);
    common.tls_params =
        Some(TlsParameters { tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32, ..Default::default() });
    DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    }
}

/// An ingress gateway server's `SIMPLE` TLS: its certificate and key from files Envoy reads (as istiod writes a
/// file-mounted gateway certificate), HTTP/2 and HTTP/1.1 offered by ALPN, no client certificate asked.
pub(super) fn gateway_server(certificate: &str, key: &str) -> DownstreamTlsContext {
    gateway_server_from(file(certificate), file(key))
}

/// A gateway server's context with the certificate and key inline (from a Secret). Envoy's admin `config_dump`
/// redacts inline keys, and so does Sluice's `/debug/config_dump`.
pub(super) fn gateway_server_inline(chain_pem: &str, key_pem: &str) -> DownstreamTlsContext {
    let inline = |s: &str| DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_string())),
        ..Default::default()
    };
    gateway_server_from(inline(chain_pem), inline(key_pem))
}

fn gateway_server_from(chain: DataSource, key: DataSource) -> DownstreamTlsContext {
    let common = CommonTlsContext {
        tls_certificates: vec![TlsCertificate {
            certificate_chain: Some(chain),
            private_key: Some(key),
            ..Default::default()
        }],
        alpn_protocols: strings(&["h2", "http/1.1"]),
        ..Default::default()
    };
    DownstreamTlsContext { common_tls_context: Some(common), ..Default::default() }
}

pub(super) fn upstream_socket(ctx: &UpstreamTlsContext) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(ctx))),
    }
}

pub(super) fn downstream_socket(ctx: &DownstreamTlsContext) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(ctx))),
    }
}

fn raw_socket() -> TransportSocket {
    TransportSocket {
        name: RAW_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&RawBuffer::default()))),
    }
}

/// `{tlsMode: istio}`: the match and the endpoint metadata it reads.
pub(super) fn tls_mode_istio() -> Struct {
    let istio = Value { kind: Some(value::Kind::StringValue(crate::model::TLS_MODE_ISTIO.to_string())) };
    Struct { fields: [("tlsMode".to_string(), istio)].into() }
}

/// Auto mTLS (istiod's): mTLS to endpoints that have a sidecar, plaintext to the others.
pub(super) fn auto_mtls(socket: TransportSocket) -> Vec<TransportSocketMatch> {
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".to_string(),
            r#match: Some(tls_mode_istio()),
            transport_socket: Some(socket),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".to_string(),
            r#match: Some(Struct::default()),
            transport_socket: Some(raw_socket()),
        },
    ]
}

/// istiod's SNI of a mesh cluster: `outbound_.9080_.v1_.reviews.default.svc.cluster.local` (its
/// `BuildDNSSrvSubsetKey`; a cluster name's `|` is not allowed in a server name).
pub(super) fn mesh_sni(port: u16, subset: &str, fqdn: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{fqdn}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sni_is_istiods_and_sans_are_typed() {
        assert_eq!(
            mesh_sni(9080, "v1", "reviews.default.svc.cluster.local"),
            "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
        );
        assert_eq!(
            san("spiffe://cluster.local/ns/default/sa/reviews").san_type,
            subject_alt_name_matcher::SanType::Uri as i32
        );
        assert_eq!(san("reviews.example.com").san_type, subject_alt_name_matcher::SanType::Dns as i32);
        let ctx = istio_mutual("s", &["spiffe://td/ns/a/sa/b".into()], false);
        let common = ctx.common_tls_context.expect("common");
        assert_eq!(common.alpn_protocols, ["istio-peer-exchange", "istio"]);
        assert_eq!(common.tls_certificate_sds_secret_configs[0].name, SDS_DEFAULT);
    }
}
