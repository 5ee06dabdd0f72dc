//! Route configurations: one virtual host per HTTP service port; routes from the release policy.
//!
//! ```text
//!  no policy ──────────────▶ [ / → outbound|P||fqdn ]
//!  Split{weight, rules} ───▶ [ rule 0 → subset(to) , rule 1 → ... ,
//!                              (stickiness) cookie NAME=stable → subset(stable), cookie NAME=canary → subset(canary),
//!                              / → {stable: 10000-w, canary: w} (+ mirror) (+ set-cookie NAME=<picked version>) ]
//!  All(v) / Only(v) ───────▶ [ / → outbound|P|v|fqdn ]
//! ```
//!
//! Route configurations depend on the model and a [`RouteScope`] only, so proxies that share a scope (same
//! namespace, same mode family, same matching `sourceLabels` rules) share the encoded resources.

use super::endpoint::has_ready;
use super::matchers::{cookie_is, prefix_all, rule_matches};
use super::naming;
use crate::model::{
    InterceptionMode, Model, ObjectKey, ProxyInfo, ReleasePolicy, Routing, Rule, Service, ServicePort, Stickiness,
    TOTAL_WEIGHT, Target, parse_duration,
};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent, header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, route, route_action,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::UInt32Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What route configurations depend on besides the model: proxies with equal scopes get identical routes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteScope {
    /// The proxy's namespace: short host names resolve here.
    pub namespace: String,
    /// Listen mode (one `sluice-listen` configuration) rather than one configuration per port.
    pub listen: bool,
    /// Intercept mode: each port's configuration ends with a catch-all virtual host to `PassthroughCluster`, so
    /// an HTTP call to a host the mesh does not know still reaches it (istiod's `allow_any`).
    pub passthrough: bool,
    /// With `passthrough`: a Sidecar says `REGISTRY_ONLY`, so the catch-all is `block_all` (502) instead.
    pub registry_only: bool,
    /// The `sourceLabels` rules this proxy's labels satisfy: `(policy key, rule index)`. Rules without
    /// `sourceLabels` apply everywhere and are not listed.
    pub source_rules: BTreeSet<(ObjectKey, usize)>,
    /// The VirtualService matches with `sourceLabels` this proxy's labels satisfy: `(VirtualService key, http
    /// index, match index)`. Matches without `sourceLabels` apply everywhere and are not listed.
    pub mesh_sources: BTreeSet<(ObjectKey, usize, usize)>,
    /// A gateway proxy: the Gateways that configure it (its route configurations are theirs alone).
    pub gateways: Option<super::gateway::Selected>,
    /// A proxyless gRPC client: routes in the form gRPC reads (see `grpc`).
    pub proxyless: bool,
}

/// The scope of one proxy.
pub fn route_scope(model: &Model, proxy: &ProxyInfo) -> RouteScope {
    let mut source_rules = BTreeSet::new();
    for (key, policy) in &model.policies {
        for (i, rule) in policy.spec.traffic.rules.iter().enumerate() {
            let wanted = &rule.matches.source_labels;
            if !wanted.is_empty() && wanted.iter().all(|(k, v)| proxy.labels.get(k) == Some(v)) {
                source_rules.insert((key.clone(), i));
            }
        }
    }
    let mut mesh_sources = BTreeSet::new();
    for (key, vs) in &model.virtual_services {
        for (i, http) in vs.spec.http.iter().enumerate() {
            for (j, m) in http.matches.iter().enumerate() {
                let wanted = &m.source_labels;
                if !wanted.is_empty() && wanted.iter().all(|(k, v)| proxy.labels.get(k) == Some(v)) {
                    mesh_sources.insert((key.clone(), i, j));
                }
            }
        }
    }
    let listen = matches!(proxy.mode, InterceptionMode::Listen(_));
    let passthrough = proxy.mode == InterceptionMode::Intercept;
    let registry_only = passthrough && proxy.visibility.registry_only();
    let gateways = match &proxy.mode {
        InterceptionMode::Gateway(role) => Some(super::gateway::selected(model, role, proxy)),
        _ => None,
    };
    RouteScope {
        namespace: proxy.namespace.clone(),
        listen,
        passthrough,
        registry_only,
        source_rules,
        mesh_sources,
        gateways,
        proxyless: proxy.mode == InterceptionMode::Proxyless,
    }
}

/// Route configurations for a scope, sorted by name: `sluice-listen` in listen mode (always, even empty, since
/// the listener names it), a gateway's own (see `gateway`), else one per HTTP port number.
pub fn route_configs(model: &Model, scope: &RouteScope) -> Vec<RouteConfiguration> {
    if let Some(gateways) = &scope.gateways {
        return super::gateway::route_configs(model, scope, gateways);
    }
    let mut by_config: BTreeMap<String, Vec<VirtualHost>> = BTreeMap::new();
    if scope.listen {
        by_config.insert(naming::LISTEN_ROUTE_CONFIG.to_string(), Vec::new());
    }
    for (config, vhost) in super::per_service(model, |key| service_virtual_hosts(model, scope, key)) {
        by_config.entry(config).or_default().push(vhost);
    }
    by_config
        .into_iter()
        .map(|(name, virtual_hosts)| {
            let mut virtual_hosts = super::sorted_by_name(virtual_hosts, |v| &v.name);
            if scope.passthrough {
                virtual_hosts.push(if scope.registry_only { super::registry_only::block_all() } else { allow_any() });
            }
            let mut config = RouteConfiguration { name, virtual_hosts, ..Default::default() };
            debug_assert!(repeated_domain(&config).is_none(), "{:?}", repeated_domain(&config));
            if scope.proxyless {
                super::grpc::routes_for_grpc(&mut config);
            }
            config
        })
        .collect()
}

/// One Service's virtual hosts in a sidecar scope (not a gateway's), each with the route configuration it belongs
/// to: one per HTTP port. What [`route_configs`] puts together, and what a change to that Service's routing alone
/// re-derives.
pub fn service_virtual_hosts(model: &Model, scope: &RouteScope, key: &ObjectKey) -> Vec<(String, VirtualHost)> {
    let Some(svc) = model.services.get(key) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, port) in svc.ports.iter().filter(|p| p.is_http()).enumerate() {
        let (config, bare) = if scope.listen {
            // One configuration holds every port: port-less names go to the first port only.
            (naming::LISTEN_ROUTE_CONFIG.to_string(), i == 0)
        } else {
            (naming::port_route_config(port.port), true)
        };
        out.push((config, virtual_host(model, scope, key, svc, port, bare)));
    }
    out
}

/// The first domain that appears twice in a configuration; Envoy rejects such a configuration.
pub(crate) fn repeated_domain(config: &RouteConfiguration) -> Option<&str> {
    let mut seen = BTreeSet::new();
    config.virtual_hosts.iter().flat_map(|v| &v.domains).find(|d| !seen.insert(d.as_str())).map(String::as_str)
}

/// The last virtual host of an intercept-mode configuration: any host no service claims goes where the client
/// was connecting (no timeout, no retries, as istiod's `allow_any`).
fn allow_any() -> VirtualHost {
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(naming::PASSTHROUGH_CLUSTER.into())),
        timeout: Some(super::seconds(0)),
        ..Default::default()
    };
    let route = Route {
        name: "allow_any".into(),
        r#match: Some(prefix_all()),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    };
    VirtualHost { name: "allow_any".into(), domains: vec!["*".into()], routes: vec![route], ..Default::default() }
}

fn virtual_host(
    model: &Model,
    scope: &RouteScope,
    key: &ObjectKey,
    svc: &Service,
    port: &ServicePort,
    bare: bool,
) -> VirtualHost {
    let mut domains = Vec::new();
    // A client that calls the Service by its cluster IP sends it as the Host.
    let ip = svc.cluster_ip.map(|ip| match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    });
    for host in naming::host_names(svc, &scope.namespace).into_iter().chain(ip) {
        domains.push(format!("{host}:{}", port.port));
        if bare {
            domains.push(host);
        }
    }
    let routes = match (super::mesh_route::rules_for(model, key), model.policy_for(key)) {
        (Some(rules), _) => super::mesh_route::routes(model, scope, &rules, key, port),
        (None, None) => {
            let mut action = to(naming::outbound_cluster(svc, port.port, ""));
            let dr_policy = model.destination_rule_for(key).and_then(|r| r.traffic_policy());
            action.hash_policy = super::traffic_policy::hash_policy(dr_policy);
            vec![route("default".into(), prefix_all(), action)]
        }
        (None, Some(policy)) => policy_routes(model, scope, key, policy, svc, port),
    };
    VirtualHost { name: naming::virtual_host(svc, port.port), domains, routes, ..Default::default() }
}

fn policy_routes(
    model: &Model,
    scope: &RouteScope,
    key: &ObjectKey,
    policy: &ReleasePolicy,
    svc: &Service,
    port: &ServicePort,
) -> Vec<Route> {
    let spec = &policy.spec;
    let subset = |v: &str| naming::outbound_cluster(svc, port.port, v);
    let default_name = format!("{}.default", policy.name);
    let (canary_weight, rules) = match policy.routing() {
        Routing::All(v) | Routing::Only(v) => {
            return vec![route(default_name, prefix_all(), to(subset(v)))];
        }
        Routing::Split { canary_weight, rules } => (canary_weight, rules),
    };
    let ready = Ready::of(model, key, policy, port);
    let mut routes = rule_routes(scope, policy, rules, &ready, &subset);
    let canary = ready.canary_weight(canary_weight.min(TOTAL_WEIGHT));
    let split = [(spec.stable.as_str(), TOTAL_WEIGHT - canary), (spec.canary.as_str(), canary)];
    routes.extend(split_routes(policy, split, &subset));
    routes
}

impl Ready {
    /// Which of a policy's two versions has a ready endpoint on `port`.
    fn of(model: &Model, key: &ObjectKey, policy: &ReleasePolicy, port: &ServicePort) -> Self {
        let (endpoints, spec) = (model.endpoints_of(key), &policy.spec);
        let label = spec.version_label();
        Ready {
            stable: has_ready(endpoints, port.port, label, &spec.stable),
            canary: has_ready(endpoints, port.port, label, &spec.canary),
        }
    }
}

/// What a release policy asks of a route it governs from inside a VirtualService or HTTPRoute route (see
/// `mesh_route`): its rules as `(route name, matches, version)`, the split as `(version, basis points)`, and its
/// mirror as `(version, percent)`.
pub(crate) struct PolicyTraffic {
    pub rules: Vec<(String, Vec<RouteMatch>, String)>,
    pub split: Vec<(String, u32)>,
    pub mirror: Option<(String, u32)>,
}

/// [`PolicyTraffic`] of a policy on one port, with the same readiness rules as [`policy_routes`].
pub(crate) fn policy_traffic(
    model: &Model,
    scope: &RouteScope,
    key: &ObjectKey,
    policy: &ReleasePolicy,
    port: &ServicePort,
) -> PolicyTraffic {
    let spec = &policy.spec;
    let (canary_weight, rules) = match policy.routing() {
        Routing::All(v) | Routing::Only(v) => {
            return PolicyTraffic { rules: Vec::new(), split: vec![(v.to_string(), TOTAL_WEIGHT)], mirror: None };
        }
        Routing::Split { canary_weight, rules } => (canary_weight, rules),
    };
    let ready = Ready::of(model, key, policy, port);
    let policy_key = ObjectKey::new(&policy.namespace, &policy.name);
    let mut out_rules = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let scoped = rule.matches.source_labels.is_empty() || scope.source_rules.contains(&(policy_key.clone(), i));
        let Some(matches) = rule_matches(&rule.matches).filter(|_| scoped) else { continue };
        let version = match ready.target(rule.to) {
            Target::Stable => spec.stable.clone(),
            Target::Canary => spec.canary.clone(),
        };
        let name = if rule.name.is_empty() { i.to_string() } else { rule.name.clone() };
        out_rules.push((format!("{}.{name}", policy.name), matches, version));
    }
    let canary = ready.canary_weight(canary_weight.min(TOTAL_WEIGHT));
    let split = vec![(spec.stable.clone(), TOTAL_WEIGHT - canary), (spec.canary.clone(), canary)];
    let mirror = spec.traffic.mirror.as_ref().filter(|m| m.percent > 0).map(|m| (spec.canary.clone(), m.percent));
    PolicyTraffic { rules: out_rules, split, mirror }
}

/// The operator's rules (those in scope and well formed), in order, each to its side's subset.
fn rule_routes(
    scope: &RouteScope,
    policy: &ReleasePolicy,
    rules: &[Rule],
    ready: &Ready,
    subset: &dyn Fn(&str) -> String,
) -> Vec<Route> {
    let spec = &policy.spec;
    let policy_key = ObjectKey::new(&policy.namespace, &policy.name);
    let mut routes = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let scoped = rule.matches.source_labels.is_empty() || scope.source_rules.contains(&(policy_key.clone(), i));
        let Some(matches) = rule_matches(&rule.matches).filter(|_| scoped) else {
            continue;
        };
        let version = match ready.target(rule.to) {
            Target::Stable => &spec.stable,
            Target::Canary => &spec.canary,
        };
        let name = if rule.name.is_empty() { i.to_string() } else { rule.name.clone() };
        for m in matches {
            routes.push(route(format!("{}.{name}", policy.name), m, to(subset(version))));
        }
    }
    routes
}

/// The sticky routes (if the policy asks for stickiness) and the weighted default route, for `split`:
/// `[(stable, weight), (canary, weight)]` as served now.
fn split_routes(policy: &ReleasePolicy, split: [(&str, u32); 2], subset: &dyn Fn(&str) -> String) -> Vec<Route> {
    let spec = &policy.spec;
    let mirror =
        spec.traffic.mirror.as_ref().filter(|m| m.percent > 0).map(|m| mirror_to(subset(&spec.canary), m.percent));
    let mut clusters: Vec<ClusterWeight> = split.iter().map(|(v, w)| cluster_weight(subset(v), *w)).collect();
    let mut routes = Vec::new();
    if let Some(cookie) = spec.traffic.stickiness.as_ref().and_then(StickyCookie::new) {
        // Stickiness lives in the route configuration, not in Envoy's stateful_session filter: that filter pins a
        // host inside one cluster, and the pick between versions is a weighted-cluster pick that happens before
        // it, so it cannot keep a client on a version. Instead the split sets a cookie naming the version it
        // picked, and one route per version sends that cookie straight to the version's subset. A version at
        // weight 0 (no ready endpoint, or canaryWeight 0 / 10000) gets no such route: its pinned clients fall
        // through to the split and are re-pinned, which is what "sticky while weights are not lowered" allows.
        for (version, _) in split.into_iter().filter(|(_, w)| *w > 0) {
            let mut action = to(subset(version));
            if version == spec.stable {
                // Pinned stable clients are still part of the split's traffic: they keep being mirrored.
                action.request_mirror_policies.extend(mirror.clone());
            }
            let name = format!("{}.sticky-{version}", policy.name);
            routes.push(route(name, cookie_is(cookie.name, version), action));
        }
        for (cluster, (version, _)) in clusters.iter_mut().zip(split) {
            cluster.response_headers_to_add.push(cookie.set_cookie(version));
        }
    }
    let mut action = weighted(clusters);
    action.request_mirror_policies.extend(mirror);
    routes.push(route(format!("{}.default", policy.name), prefix_all(), action));
    routes
}

/// A policy's sticky cookie, as the split sets it.
struct StickyCookie<'a> {
    name: &'a str,
    max_age_secs: u64,
}

impl<'a> StickyCookie<'a> {
    /// `None` when the TTL is malformed (validation refuses it): stickiness is then left out rather than given
    /// a lifetime nobody wrote.
    fn new(s: &'a Stickiness) -> Option<Self> {
        let ttl = match &s.ttl {
            None => DEFAULT_STICKY_TTL,
            Some(text) => parse_duration(text)?,
        };
        // Max-Age counts whole seconds; round up so a sub-second TTL does not become 0 (delete the cookie).
        let max_age_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        Some(Self { name: &s.cookie, max_age_secs })
    }

    /// `set-cookie: NAME=VERSION; ...`, appended so an application's own Set-Cookie headers are kept.
    fn set_cookie(&self, version: &str) -> HeaderValueOption {
        let value = format!("{}={version}; Path=/; Max-Age={}; HttpOnly", self.name, self.max_age_secs);
        HeaderValueOption {
            header: Some(HeaderValue { key: "set-cookie".into(), value, ..Default::default() }),
            append_action: header_value_option::HeaderAppendAction::AppendIfExistsOrAdd as i32,
            ..Default::default()
        }
    }
}

/// How long a sticky cookie lives when the policy gives no `ttl`.
const DEFAULT_STICKY_TTL: Duration = Duration::from_secs(3600);

/// Which side of a release has a ready endpoint on this port.
struct Ready {
    stable: bool,
    canary: bool,
}

impl Ready {
    /// A side without a ready endpoint gets no weight: its share goes to the other (if neither is ready, the
    /// weights stay as written).
    fn canary_weight(&self, written: u32) -> u32 {
        match (self.stable, self.canary) {
            (true, false) => 0,
            (false, true) => TOTAL_WEIGHT,
            _ => written,
        }
    }

    /// A rule aimed at a side without a ready endpoint goes to the other side, if that one is ready.
    fn target(&self, to: Target) -> Target {
        match (to, self.stable, self.canary) {
            (Target::Canary, true, false) => Target::Stable,
            (Target::Stable, false, true) => Target::Canary,
            _ => to,
        }
    }
}

/// An inbound catch-all route (prefix `/`) to the local app, as istiod writes it: no timeout, the client's
/// `grpc-timeout` honoured as sent, and a request reset before it reached the app retried (twice).
pub(crate) fn inbound_to_cluster(name: &str, cluster: &str) -> Route {
    let mut action = to(cluster.to_string());
    action.timeout = Some(super::seconds(0));
    action.max_stream_duration = Some(route_action::MaxStreamDuration {
        max_stream_duration: Some(super::seconds(0)),
        grpc_timeout_header_max: Some(super::seconds(0)),
        ..Default::default()
    });
    action.retry_policy = Some(super::defaults::inbound_retry_policy());
    Route {
        name: name.to_string(),
        r#match: Some(prefix_all()),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

/// An outbound route with istiod's defaults for what the policy leaves unset: no timeout, its default retries
/// (see `defaults`).
fn route(name: String, matches: RouteMatch, mut action: RouteAction) -> Route {
    let hashed = !action.hash_policy.is_empty();
    super::defaults::route_action(&mut action, None, None, hashed);
    Route { name, r#match: Some(matches), action: Some(route::Action::Route(action)), ..Default::default() }
}

fn to(cluster: String) -> RouteAction {
    RouteAction { cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)), ..Default::default() }
}

fn cluster_weight(name: String, weight: u32) -> ClusterWeight {
    ClusterWeight { name, weight: Some(UInt32Value { value: weight }), ..Default::default() }
}

fn weighted(clusters: Vec<ClusterWeight>) -> RouteAction {
    let weighted = WeightedCluster { clusters, ..Default::default() };
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(weighted)),
        ..Default::default()
    }
}

fn mirror_to(cluster: String, percent: u32) -> route_action::RequestMirrorPolicy {
    let fraction = FractionalPercent { numerator: percent.min(100), denominator: DenominatorType::Hundred as i32 };
    route_action::RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(RuntimeFractionalPercent { default_value: Some(fraction), ..Default::default() }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unready_side_loses_its_weight_and_its_rules() {
        let only_stable = Ready { stable: true, canary: false };
        assert_eq!(only_stable.canary_weight(2000), 0);
        assert_eq!(only_stable.target(Target::Canary), Target::Stable);
        let only_canary = Ready { stable: false, canary: true };
        assert_eq!(only_canary.canary_weight(2000), TOTAL_WEIGHT);
        assert_eq!(only_canary.target(Target::Stable), Target::Canary);
        let neither = Ready { stable: false, canary: false };
        assert_eq!(neither.canary_weight(2000), 2000);
        assert_eq!(neither.target(Target::Canary), Target::Canary);
    }

    fn sticky_policy(ttl: Option<&str>) -> ReleasePolicy {
        let mut spec = crate::model::ReleasePolicySpec {
            service: "reviews".into(),
            stable: "v1".into(),
            canary: "v3".into(),
            ..Default::default()
        };
        spec.traffic.stickiness = Some(Stickiness { cookie: "s".into(), ttl: ttl.map(Into::into) });
        ReleasePolicy { name: "r".into(), namespace: "default".into(), spec, state: Default::default() }
    }

    fn names(routes: &[Route]) -> Vec<&str> {
        routes.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn only_versions_with_weight_get_a_sticky_route() {
        let p = sticky_policy(None);
        let subset = |v: &str| v.to_string();
        let both = split_routes(&p, [("v1", 5000), ("v3", 5000)], &subset);
        assert_eq!(names(&both), ["r.sticky-v1", "r.sticky-v3", "r.default"]);
        let stable_only = split_routes(&p, [("v1", 10000), ("v3", 0)], &subset);
        assert_eq!(names(&stable_only), ["r.sticky-v1", "r.default"]);
        let canary_only = split_routes(&p, [("v1", 0), ("v3", 10000)], &subset);
        assert_eq!(names(&canary_only), ["r.sticky-v3", "r.default"]);
    }

    #[test]
    fn the_split_sets_the_cookie_of_the_version_it_picked() {
        let routes = split_routes(&sticky_policy(Some("90s")), [("v1", 8000), ("v3", 2000)], &|v: &str| v.into());
        let Some(route::Action::Route(action)) = &routes[2].action else { panic!("a route action") };
        let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = &action.cluster_specifier else {
            panic!("weighted clusters")
        };
        let cookies: Vec<&str> = w
            .clusters
            .iter()
            .flat_map(|c| &c.response_headers_to_add)
            .map(|h| h.header.as_ref().map_or("", |h| h.value.as_str()))
            .collect();
        assert_eq!(cookies, ["s=v1; Path=/; Max-Age=90; HttpOnly", "s=v3; Path=/; Max-Age=90; HttpOnly"]);
        let no_sticky = split_routes(&sticky_policy(Some("bad")), [("v1", 8000), ("v3", 2000)], &|v: &str| v.into());
        assert_eq!(names(&no_sticky), ["r.default"], "a malformed TTL leaves stickiness out");
    }

    #[test]
    fn repeated_domains_are_found() {
        let vh = |d: &str| VirtualHost { domains: vec![d.into()], ..Default::default() };
        let config = RouteConfiguration { virtual_hosts: vec![vh("a"), vh("b"), vh("a")], ..Default::default() };
        assert_eq!(repeated_domain(&config), Some("a"));
    }
}
