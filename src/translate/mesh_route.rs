//! VirtualService `http` routes (and HTTPRoutes, converted by `gamma`) → the routes of a service's virtual host,
//! with a release policy's split applied inside them.
//!
//! ```text
//!  http[i] ─ match[j] (kept if port, sourceLabels, sourceNamespace fit) ─▶ Route "name[.matchName]"
//!            route[] ─▶ cluster | weighted_clusters  (outbound|P|subset|host; weights as written)
//!            redirect ─▶ RedirectAction    rewrite, timeout, retries, mirror, hash policy ─▶ RouteAction
//!            fault, corsPolicy ─▶ typed_per_filter_config      headers ─▶ route / cluster weight headers
//!  + ReleasePolicy on the service: its rules first (the route's match AND the rule's, to the rule's version),
//!    then the route itself with its destinations to the service replaced by the policy's stable/canary split.
//! ```

use super::cluster::{subset_exists, subsets_of};
use super::mesh_match::{and, route_match};
use super::naming;
use super::route::{PolicyTraffic, RouteScope, policy_traffic};
use super::traffic_policy::{hash_policy, proto_duration};
use super::{mesh_filters as filters, pack};
use crate::model::mesh::{Destination, Headers, HttpRoute, Percent, service_of_host};
use crate::model::{Model, ObjectKey, Service, ServicePort, TOTAL_WEIGHT};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent, header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, Route, RouteAction, RouteMatch, WeightedCluster, redirect_action, route,
    route_action, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::UInt32Value;
use std::collections::BTreeMap;

/// One `http` route and where it came from: the object (for `sourceLabels` scoping), its namespace (short
/// hosts resolve there), and its index.
pub(crate) struct MeshRule {
    pub origin: ObjectKey,
    pub index: usize,
    pub http: HttpRoute,
    /// Converted from a Gateway API HTTPRoute, whose spec answers 500 where no backend can take a request.
    pub gateway_api: bool,
}

/// The rules that route `key`: its VirtualService's, else its HTTPRoutes' (GAMMA); `None` when neither exists.
pub(crate) fn rules_for(model: &Model, key: &ObjectKey) -> Option<Vec<MeshRule>> {
    if let Some((origin, vs)) = model.virtual_service_for(key) {
        let rules = vs.spec.http.iter().enumerate();
        return Some(
            rules
                .map(|(index, http)| MeshRule { origin: origin.clone(), index, http: http.clone(), gateway_api: false })
                .collect(),
        );
    }
    let rules = super::gamma::rules_for(model, key);
    (!rules.is_empty()).then_some(rules)
}

/// What every route of one rule shares: the service whose release policy applies inside it (`key`, `port`) and the
/// port a `match.port` is compared with (the service port at a sidecar, the server port at a gateway).
struct Host<'a> {
    model: &'a Model,
    scope: &'a RouteScope,
    key: &'a ObjectKey,
    port: &'a ServicePort,
    match_port: u16,
    policy: Option<PolicyTraffic>,
}

/// The routes of the virtual host of `svc`'s `port`, from its mesh rules.
pub(crate) fn routes(
    model: &Model,
    scope: &RouteScope,
    rules: &[MeshRule],
    key: &ObjectKey,
    port: &ServicePort,
) -> Vec<Route> {
    let policy = model.policy_for(key).map(|p| policy_traffic(model, scope, key, p, port));
    let host = Host { model, scope, key, port, match_port: port.port, policy };
    let mut out = Vec::new();
    for rule in rules {
        push_rule(&host, rule, &mut out);
    }
    out
}

/// The Service and port a destination of a gateway route names (its host seen from `namespace`; the port it
/// names, else the Service's first), or `None` when there is no such Service or port.
pub(crate) fn resolve<'m>(
    model: &'m Model,
    d: &Destination,
    namespace: &str,
) -> Option<(ObjectKey, &'m Service, &'m ServicePort)> {
    let key = service_of_host(&d.host, namespace)?;
    let svc = model.services.get(&key)?;
    let port = match d.port.as_ref().map(|p| p.number) {
        Some(p) => svc.ports.iter().find(|sp| sp.port == p)?,
        None => svc.ports.first()?,
    };
    Some((key, svc, port))
}

/// The routes of a gateway's virtual host from the `http` rules of the VirtualServices bound to it, on server port
/// `server_port`: the same routes a sidecar gets, each with the release policy of the first service among its
/// destinations that has one applied inside it (so a ReleasePolicy splits and matches at the gateway too).
pub(crate) fn gateway_routes(model: &Model, scope: &RouteScope, rules: &[MeshRule], server_port: u16) -> Vec<Route> {
    let mut out = Vec::new();
    for rule in rules {
        let ns = &rule.origin.namespace;
        let resolved: Vec<(ObjectKey, &ServicePort)> = rule
            .http
            .route
            .iter()
            .filter_map(|d| resolve(model, &d.destination, ns).map(|(key, _, port)| (key, port)))
            .collect();
        let governed = resolved.iter().find(|(k, _)| model.policy_for(k).is_some()).or(resolved.first());
        // A rule whose destinations name nothing answers 503 (or redirects): its port only names the route.
        let fallback = ServicePort {
            name: String::new(),
            port: server_port,
            target_port: crate::model::TargetPort::Number(server_port),
            app_protocol: None,
        };
        let (key, port) = match governed {
            Some((k, p)) => (k.clone(), *p),
            None => (rule.origin.clone(), &fallback),
        };
        let policy = model.policy_for(&key).map(|p| policy_traffic(model, scope, &key, p, port));
        let host = Host { model, scope, key: &key, port, match_port: server_port, policy };
        push_rule(&host, rule, &mut out);
    }
    out
}

/// One rule's routes: the governing policy's rules (the route's match AND each rule's), then one per match.
fn push_rule(host: &Host<'_>, rule: &MeshRule, out: &mut Vec<Route>) {
    let matches = emitted_matches(host, rule);
    let governed = host.policy.as_ref().filter(|_| rule.http.redirect.is_none() && host.targets_self(rule));
    if let Some(policy) = governed {
        for (rule_name, rule_matches, version) in &policy.rules {
            for (name, m) in &matches {
                for rm in rule_matches {
                    let split = [(version.clone(), TOTAL_WEIGHT)];
                    let name = if name.is_empty() { rule_name.clone() } else { format!("{name}.{rule_name}") };
                    out.push(host.route(rule, name, and(m, rm), Some(&split)));
                }
            }
        }
    }
    for (name, m) in matches {
        out.push(host.route(rule, name, m, governed.map(|p| p.split.as_slice())));
    }
}

/// The route matches of a rule that apply on this port and to this proxy, each with its route name.
fn emitted_matches(host: &Host<'_>, rule: &MeshRule) -> Vec<(String, RouteMatch)> {
    let name = &rule.http.name;
    if rule.http.matches.is_empty() {
        return vec![(name.clone(), route_match(&Default::default()))];
    }
    let mut out = Vec::new();
    for (j, m) in rule.http.matches.iter().enumerate() {
        let port_ok = m.port.is_none_or(|p| p == host.match_port);
        let labels_ok =
            m.source_labels.is_empty() || host.scope.mesh_sources.contains(&(rule.origin.clone(), rule.index, j));
        let ns_ok = m.source_namespace.as_ref().is_none_or(|ns| *ns == host.scope.namespace);
        if port_ok && labels_ok && ns_ok {
            let full = if m.name.is_empty() { name.clone() } else { format!("{name}.{}", m.name) };
            out.push((full, route_match(m)));
        }
    }
    out
}

/// A resolved destination: the service, the port, the subset.
struct Resolved<'a> {
    key: ObjectKey,
    svc: &'a Service,
    port: u16,
    subset: Option<String>,
}

impl<'a> Host<'a> {
    fn targets_self(&self, rule: &MeshRule) -> bool {
        rule.http
            .route
            .iter()
            .any(|d| self.resolve(&rule.origin.namespace, &d.destination).is_some_and(|r| &r.key == self.key))
    }

    /// The service, port and subset a destination names; `None` when any of them does not exist.
    fn resolve(&self, namespace: &str, d: &Destination) -> Option<Resolved<'a>> {
        let key = service_of_host(&d.host, namespace)?;
        let svc = self.model.services.get(&key)?;
        let port = match d.port.as_ref().map(|p| p.number) {
            Some(p) => svc.ports.iter().find(|sp| sp.port == p)?.port,
            None if svc.ports.len() == 1 => svc.ports[0].port,
            None => svc.ports.iter().find(|sp| sp.port == self.port.port).or(svc.ports.first())?.port,
        };
        if let Some(s) = &d.subset
            && !subset_exists(self.model, &key, s)
        {
            return None;
        }
        Some(Resolved { key, svc, port, subset: d.subset.clone() })
    }

    fn route(&self, rule: &MeshRule, name: String, m: RouteMatch, split: Option<&[(String, u32)]>) -> Route {
        let http = &rule.http;
        let mut out = Route { name, r#match: Some(m), ..Default::default() };
        let action = match &http.redirect {
            Some(r) => route::Action::Redirect(redirect(r)),
            None => match self.action(rule, split, &mut out) {
                Some(a) => route::Action::Route(a),
                // Nothing it names exists (validation reports it), or every weight is 0: a VirtualService answers as
                // Envoy does an unknown cluster (503); an HTTPRoute as Gateway API says (and istiod does), 500.
                None => {
                    let status = if rule.gateway_api { 500 } else { 503 };
                    route::Action::DirectResponse(DirectResponseAction { status, ..Default::default() })
                }
            },
        };
        out.action = Some(action);
        if let Some(h) = &http.headers {
            add_headers(h, &mut out.request_headers_to_add, &mut out.request_headers_to_remove, true);
            add_headers(h, &mut out.response_headers_to_add, &mut out.response_headers_to_remove, false);
        }
        if let Some(f) = &http.fault {
            out.typed_per_filter_config.insert(filters::FAULT.into(), pack(&filters::fault(f)));
        }
        if let Some(c) = &http.cors_policy {
            out.typed_per_filter_config.insert(filters::CORS.into(), pack(&filters::cors(c)));
        }
        out
    }

    /// The route action; `split` replaces destinations to the governed service by `(version, basis points)`.
    fn action(&self, rule: &MeshRule, split: Option<&[(String, u32)]>, route: &mut Route) -> Option<RouteAction> {
        let http = &rule.http;
        let ns = &rule.origin.namespace;
        let mut weights: BTreeMap<String, (u32, Option<&Headers>)> = BTreeMap::new();
        let mut hashes = Vec::new();
        let single = http.route.len() == 1;
        for d in &http.route {
            let Some(r) = self.resolve(ns, &d.destination) else { continue };
            let w = d.weight.unwrap_or(if single { 100 } else { 0 });
            let parts: Vec<(Option<String>, u32)> = match split.filter(|_| &r.key == self.key) {
                Some(split) => split.iter().map(|(v, bp)| (Some(v.clone()), w * bp)).collect(),
                None => vec![(r.subset.clone(), w * TOTAL_WEIGHT)],
            };
            // Per destination, not per part: `subsets_of` scans the mesh VirtualServices.
            let subsets = subsets_of(self.model, &r.key);
            let base = self.model.destination_rule_for(&r.key).and_then(|dr| dr.traffic_policy());
            for (subset, weight) in parts {
                let policy = subset.as_ref().and_then(|s| subsets.get(s)).map(|(_, p)| p.as_ref()).unwrap_or(base);
                hashes.push(hash_policy(policy));
                let cluster = naming::outbound_cluster(r.svc, r.port, subset.as_deref().unwrap_or(""));
                let entry = weights.entry(cluster).or_insert((0, d.headers.as_ref()));
                entry.0 += weight;
            }
        }
        // Only destinations with weight take traffic; with none (all weights 0), nothing does.
        weights.retain(|_, (w, _)| *w > 0);
        if weights.is_empty() {
            return None;
        }
        let mut action = RouteAction::default();
        if weights.len() == 1 {
            let (cluster, (_, headers)) = weights.into_iter().next()?;
            if let Some(h) = headers {
                add_headers(h, &mut route.request_headers_to_add, &mut route.request_headers_to_remove, true);
                add_headers(h, &mut route.response_headers_to_add, &mut route.response_headers_to_remove, false);
            }
            action.cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(cluster));
        } else {
            let clusters = weights.into_iter().map(|(name, (w, headers))| cluster_weight(name, w, headers)).collect();
            let weighted = WeightedCluster { clusters, ..Default::default() };
            action.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(weighted));
        }
        if hashes.windows(2).all(|w| w[0] == w[1]) {
            action.hash_policy = hashes.into_iter().next().unwrap_or_default();
        }
        self.action_options(rule, split.is_some(), &mut action);
        Some(action)
    }

    /// Rewrite, timeout, retries and mirroring (the policy's mirror when the route has none of its own).
    fn action_options(&self, rule: &MeshRule, governed: bool, action: &mut RouteAction) {
        let http = &rule.http;
        if let Some(rw) = &http.rewrite {
            if let Some(uri) = &rw.uri {
                action.prefix_rewrite = uri.clone();
            }
            if let Some(a) = &rw.authority {
                action.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(a.clone()));
            }
            if let Some(re) = &rw.uri_regex_rewrite {
                action.regex_rewrite = Some(RegexMatchAndSubstitute {
                    pattern: Some(RegexMatcher { regex: re.pattern.clone(), engine_type: None }),
                    substitution: re.rewrite.clone(),
                });
            }
        }
        let hashed = http.route.len() == 1 && !action.hash_policy.is_empty();
        let timeout = http.timeout.as_deref().and_then(proto_duration);
        super::defaults::route_action(action, timeout, http.retries.as_ref(), hashed);
        if let Some(m) = &http.mirror {
            if let Some(r) = self.resolve(&rule.origin.namespace, m) {
                let cluster = naming::outbound_cluster(r.svc, r.port, r.subset.as_deref().unwrap_or(""));
                action.request_mirror_policies.push(mirror(cluster, http.mirror_percentage));
            }
        } else if let Some((version, percent)) =
            self.policy.as_ref().and_then(|p| p.mirror.clone()).filter(|_| governed)
            && let Some(svc) = self.model.services.get(self.key)
        {
            let cluster = naming::outbound_cluster(svc, self.port.port, &version);
            action.request_mirror_policies.push(mirror(cluster, Some(Percent { value: f64::from(percent) })));
        }
    }
}

/// Istio percentages have four decimals: `12.5` → 125000 per million.
pub(crate) fn fraction(p: Option<Percent>) -> FractionalPercent {
    let value = p.map_or(100.0, |p| p.value.clamp(0.0, 100.0));
    FractionalPercent { numerator: (value * 10_000.0).round() as u32, denominator: DenominatorType::Million as i32 }
}

fn mirror(cluster: String, percent: Option<Percent>) -> route_action::RequestMirrorPolicy {
    route_action::RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(fraction(percent)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cluster_weight(name: String, weight: u32, headers: Option<&Headers>) -> ClusterWeight {
    let mut c = ClusterWeight { name, weight: Some(UInt32Value { value: weight }), ..Default::default() };
    if let Some(h) = headers {
        add_headers(h, &mut c.request_headers_to_add, &mut c.request_headers_to_remove, true);
        add_headers(h, &mut c.response_headers_to_add, &mut c.response_headers_to_remove, false);
    }
    c
}

/// `set` overwrites, `add` appends, `remove` removes; of the request or the response part.
fn add_headers(h: &Headers, add: &mut Vec<HeaderValueOption>, remove: &mut Vec<String>, request: bool) {
    use header_value_option::HeaderAppendAction as A;
    let Some(ops) = (if request { &h.request } else { &h.response }) else { return };
    let option = |(k, v): (&String, &String), action: A| HeaderValueOption {
        header: Some(HeaderValue { key: k.clone(), value: v.clone(), ..Default::default() }),
        append_action: action as i32,
        ..Default::default()
    };
    add.extend(ops.set.iter().map(|kv| option(kv, A::OverwriteIfExistsOrAdd)));
    add.extend(ops.add.iter().map(|kv| option(kv, A::AppendIfExistsOrAdd)));
    remove.extend(ops.remove.iter().cloned());
}

fn redirect(r: &crate::model::mesh::HttpRedirect) -> RedirectAction {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode as Code, SchemeRewriteSpecifier};
    let code = match r.redirect_code.unwrap_or(301) {
        302 => Code::Found,
        303 => Code::SeeOther,
        307 => Code::TemporaryRedirect,
        308 => Code::PermanentRedirect,
        _ => Code::MovedPermanently,
    };
    RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        port_redirect: r.port.map_or(0, u32::from),
        response_code: code as i32,
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: r.uri.clone().map(PathRewriteSpecifier::PathRedirect),
        ..Default::default()
    }
}
