//! The tonic services: ADS (SotW and Delta), the per-type CDS/EDS/LDS/RDS services and CSDS, on one gRPC server.

use super::delta::Delta;
use super::queue;
use super::resource::TypeKind;
use super::sotw::Sotw;
use super::stream::{Protocol, StreamCtx, run};
use super::trust::Trust;
use super::wire::{self, Requests, Responses};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

/// Every xDS service, sharing one [`StreamCtx`].
#[derive(Clone)]
pub struct Xds {
    ctx: StreamCtx,
    /// Set on the mTLS port: every stream must carry a client certificate identity, which scopes what it sees.
    trust: Option<Arc<Trust>>,
}

impl Xds {
    /// The plaintext services: no identity, every namespace visible.
    pub fn new(ctx: StreamCtx) -> Self {
        Self { ctx, trust: None }
    }

    /// The mTLS services: a stream without a SPIFFE identity from its certificate is refused.
    pub fn mtls(ctx: StreamCtx, trust: Arc<Trust>) -> Self {
        Self { ctx, trust: Some(trust) }
    }

    /// Starts the task of a new stream, or refuses it (no identity on the mTLS port; past `--max-streams`).
    fn spawn<P: Protocol>(&self, req: http::Request<Body>, only: Option<TypeKind>) -> Result<Responses, Status> {
        wire::check_encoding(req.headers())?;
        let (parts, body) = req.into_parts();
        let head = tonic::Request::from_http(http::Request::from_parts(parts, ()));
        let peer = self.trust.as_ref().map(|t| t.peer(&head)).transpose()?;
        let identity = peer.as_ref().map(|p| p.identity.to_string());
        let who = super::limits::Peer::of(identity.as_deref(), head.remote_addr());
        let slot = self.ctx.slots.acquire(&self.ctx.limits, who).inspect_err(|status| {
            tracing::warn!(%status, remote = ?head.remote_addr(), "refusing stream");
        })?;
        let (tx, rx) = queue::channel(self.ctx.limits.send_queue, self.ctx.limits.send_queue_bytes);
        let inbound = Requests::<P::Req>::new(body, self.ctx.limits.max_request_bytes);
        tokio::spawn(run::<P>(self.ctx.clone(), inbound, tx, only, peer, slot));
        Ok(Responses::new(rx))
    }

    /// Answers one call of service `service` (a gRPC service name) by its method, the last path segment.
    fn call(&self, service: &str, req: http::Request<Body>) -> http::Response<Body> {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
        let (only, suffix) = match service {
            ADS => (None, "AggregatedResources"),
            CDS => (Some(TypeKind::Cluster), "Clusters"),
            EDS => (Some(TypeKind::Endpoint), "Endpoints"),
            LDS => (Some(TypeKind::Listener), "Listeners"),
            _ => (Some(TypeKind::Route), "Routes"),
        };
        let result = match method.strip_suffix(suffix) {
            Some("Stream") => self.spawn::<Sotw>(req, only),
            Some("Delta") => self.spawn::<Delta>(req, only),
            Some("Fetch") => Err(Status::unimplemented("REST/unary fetch is not served; use a gRPC stream")),
            _ => Err(Status::unimplemented(format!("{service} has no method {method}"))),
        };
        match result {
            Ok(responses) => wire::response(responses),
            Err(status) => status.into_http(),
        }
    }

    /// Adds every xDS service to a tonic router. CSDS (every proxy's config status) is left off the mTLS port: a
    /// proxy certificate would otherwise read other namespaces' config through it. The request size limit is
    /// applied by [`Requests`], the response limit by the stream task before it queues a response.
    pub fn add_to(self, router: tonic::service::RoutesBuilder) -> tonic::service::RoutesBuilder {
        let mut router = router;
        if self.trust.is_none() {
            let csds = super::csds::Csds::new(self.ctx.registry.clone(), self.ctx.snapshots.clone());
            router.add_service(csds.server().max_decoding_message_size(self.ctx.limits.max_request_bytes));
        }
        router
            .add_service(Named::<AdsName>::new(self.clone()))
            .add_service(Named::<CdsName>::new(self.clone()))
            .add_service(Named::<EdsName>::new(self.clone()))
            .add_service(Named::<LdsName>::new(self.clone()))
            .add_service(Named::<RdsName>::new(self));
        router
    }
}

const ADS: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const CDS: &str = "envoy.service.cluster.v3.ClusterDiscoveryService";
const EDS: &str = "envoy.service.endpoint.v3.EndpointDiscoveryService";
const LDS: &str = "envoy.service.listener.v3.ListenerDiscoveryService";
const RDS: &str = "envoy.service.route.v3.RouteDiscoveryService";

/// A gRPC service name, as a type (tonic's router routes by [`NamedService::NAME`]).
pub trait ServiceName: Send + Sync + 'static {
    const NAME: &'static str;
}

macro_rules! service_name {
    ($($ty:ident = $name:ident),*) => {$(
        #[doc(hidden)]
        pub struct $ty;
        impl ServiceName for $ty {
            const NAME: &'static str = $name;
        }
    )*};
}
service_name!(AdsName = ADS, CdsName = CDS, EdsName = EDS, LdsName = LDS, RdsName = RDS);

/// One xDS gRPC service (ADS or a per-type one), answered by [`Xds`] with its own framing (see `wire`).
pub struct Named<N> {
    xds: Xds,
    _name: std::marker::PhantomData<fn() -> N>,
}

impl<N> Named<N> {
    fn new(xds: Xds) -> Self {
        Self { xds, _name: std::marker::PhantomData }
    }
}

impl<N> Clone for Named<N> {
    fn clone(&self) -> Self {
        Self::new(self.xds.clone())
    }
}

impl<N: ServiceName> NamedService for Named<N> {
    const NAME: &'static str = N::NAME;
}

impl<N: ServiceName> Service<http::Request<Body>> for Named<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let resp = self.xds.call(N::NAME, req);
        Box::pin(async move { Ok(resp) })
    }
}
