//! The agent's SDS server (istio-agent's): Envoy asks over a Unix socket in the pod for the secrets `default` (the
//! workload's key and chain) and `ROOTCA` (the mesh's trust bundle), and gets each new certificate pushed on the
//! open stream when the agent renews it. Envoy never restarts for a rotation.
//!
//! ```text
//!  cert::CaClient::keep ─▶ watch<Issued> ─┬─▶ StreamSecrets (SotW): a response per change of what the stream named
//!                                         └─▶ FetchSecrets (unary)
//!  Envoy ─ pipe sds.sock (mode 0600, owned by Envoy's uid) ─▶ tonic
//! ```
//! A stream that names no known secret gets nothing until it does; before the first certificate arrives, requests
//! wait (Envoy's listeners that need `default` stay warming, so no connection is served without it).

use super::cert::Issued;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use prost::Message;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// The workload's key and chain.
pub const DEFAULT: &str = "default";
/// The trust bundle.
pub const ROOTCA: &str = "ROOTCA";
pub const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

type Current = watch::Receiver<Option<Arc<Issued>>>;

/// The secrets `names` asks for, as Envoy's `Secret` resources (unknown names are left out).
pub fn secrets(issued: &Issued, names: &[String]) -> Vec<Secret> {
    let inline = |s: &str| {
        Some(DataSource { specifier: Some(Specifier::InlineBytes(s.as_bytes().to_vec())), ..Default::default() })
    };
    names
        .iter()
        .filter_map(|name| {
            let kind = match name.as_str() {
                DEFAULT => secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(&issued.chain_pem),
                    private_key: inline(&issued.key_pem),
                    ..Default::default()
                }),
                ROOTCA => secret::Type::ValidationContext(CertificateValidationContext {
                    trusted_ca: inline(&issued.root_pem),
                    ..Default::default()
                }),
                _ => return None,
            };
            Some(Secret { name: name.clone(), r#type: Some(kind) })
        })
        .collect()
}

fn response(issued: &Issued, names: &[String], nonce: u64) -> DiscoveryResponse {
    let resources = secrets(issued, names)
        .into_iter()
        .map(|s| envoy_types::pb::google::protobuf::Any { type_url: SECRET_TYPE.into(), value: s.encode_to_vec() })
        .collect();
    DiscoveryResponse {
        // The serial names the certificate: a rotation is a new version.
        version_info: issued.serial.clone(),
        resources,
        type_url: SECRET_TYPE.into(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// The SDS service over the current certificate.
pub struct Sds {
    current: Current,
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponses = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = DeltaResponses;
    type StreamSecretsStream = Responses;

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponses>, Status> {
        Err(Status::unimplemented("this SDS server speaks State-of-the-World (StreamSecrets)"))
    }

    async fn stream_secrets(&self, req: Request<Streaming<DiscoveryRequest>>) -> Result<Response<Responses>, Status> {
        let mut requests = req.into_inner();
        let mut current = self.current.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut names: Vec<String> = Vec::new();
            let mut sent: Option<(String, Vec<String>)> = None;
            let mut nonce = 0u64;
            loop {
                let cert = current.borrow_and_update().clone();
                if let Some(cert) = cert {
                    let wanted = (cert.serial.clone(), names.clone());
                    if !names.is_empty() && sent.as_ref() != Some(&wanted) {
                        nonce += 1;
                        if tx.send(Ok(response(&cert, &names, nonce))).await.is_err() {
                            return;
                        }
                        sent = Some(wanted);
                    }
                }
                tokio::select! {
                    message = requests.message() => match message {
                        Ok(Some(r)) => {
                            if let Some(e) = &r.error_detail {
                                tracing::warn!(names = ?r.resource_names, error = %e.message, "Envoy refused a secret");
                            }
                            names = r.resource_names;
                        }
                        _ => return,
                    },
                    changed = current.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn fetch_secrets(&self, req: Request<DiscoveryRequest>) -> Result<Response<DiscoveryResponse>, Status> {
        let names = req.into_inner().resource_names;
        let mut current = self.current.clone();
        let cert = current.wait_for(Option::is_some).await.map_err(|_| Status::unavailable("the agent is stopping"))?;
        let cert = cert.clone().ok_or_else(|| Status::unavailable("no certificate yet"))?;
        Ok(Response::new(response(&cert, &names, 1)))
    }
}

/// Serves SDS on the Unix socket `path` (replaced if a previous run left it), readable by `owner` only when given.
pub async fn serve(path: &Path, owner: Option<(u32, u32)>, current: Current) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let service = SecretDiscoveryServiceServer::new(Sds { current });
    let served = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming);
    tokio::spawn(async move {
        if let Err(e) = served.await {
            tracing::error!(error = %e, "the SDS server stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn issued(serial: &str) -> Issued {
        Issued {
            chain_pem: "CHAIN".into(),
            key_pem: "KEY".into(),
            root_pem: "ROOT".into(),
            serial: serial.into(),
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn default_is_the_key_and_chain_rootca_the_bundle_and_unknown_names_are_left_out() {
        let names: Vec<String> = ["default", "ROOTCA", "file-cert:/x"].map(String::from).to_vec();
        let got = secrets(&issued("01"), &names);
        assert_eq!(got.len(), 2);
        let Some(secret::Type::TlsCertificate(tls)) = &got[0].r#type else { panic!("{got:?}") };
        let bytes = |d: &Option<DataSource>| match d.as_ref().and_then(|d| d.specifier.clone()) {
            Some(Specifier::InlineBytes(b)) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!((bytes(&tls.certificate_chain), bytes(&tls.private_key)), ("CHAIN".into(), "KEY".into()));
        let Some(secret::Type::ValidationContext(v)) = &got[1].r#type else { panic!("{got:?}") };
        assert_eq!(bytes(&v.trusted_ca), "ROOT");
        let r = response(&issued("0a"), &names, 3);
        assert_eq!((r.version_info.as_str(), r.nonce.as_str(), r.resources.len()), ("0a", "3", 2));
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_pushed_on_the_open_stream() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sds.sock");
        let (tx, rx) = watch::channel(None);
        serve(&sock, None, rx).await.unwrap();
        let channel = tonic::transport::Endpoint::from_static("http://sds")
            .connect_with_connector(tower::service_fn({
                let sock = sock.clone();
                move |_| {
                    let sock = sock.clone();
                    async move { tokio::net::UnixStream::connect(sock).await.map(hyper_util::rt::TokioIo::new) }
                }
            }))
            .await
            .unwrap();
        use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
        let (req_tx, req_rx) = mpsc::channel(4);
        let first = DiscoveryRequest {
            resource_names: vec!["default".into()],
            type_url: SECRET_TYPE.into(),
            ..Default::default()
        };
        req_tx.send(first).await.unwrap();
        let mut client = SecretDiscoveryServiceClient::new(channel);
        let mut stream =
            client.stream_secrets(tokio_stream::wrappers::ReceiverStream::new(req_rx)).await.unwrap().into_inner();
        tx.send(Some(Arc::new(issued("01")))).unwrap();
        let r1 = stream.message().await.unwrap().unwrap();
        assert_eq!(r1.version_info, "01");
        tx.send(Some(Arc::new(issued("02")))).unwrap();
        let r2 = stream.message().await.unwrap().unwrap();
        assert_eq!((r2.version_info.as_str(), r2.resources.len()), ("02", 1));
        assert_ne!(r1.nonce, r2.nonce);
    }
}
