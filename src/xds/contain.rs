//! NACK containment: when a proxy refuses a response, find the part it refuses and hold only that part back, so
//! every other change keeps reaching it (one bad rule must never freeze a proxy's routes).
//!
//! ```text
//!  NACK ─▶ suspects = the units the refused response changed (a resource; for routes, one virtual host)
//!          one suspect ──────────────▶ refused: held back at the proxy's last good content until it changes
//!          several ─▶ split in halves ─▶ offer the first half only (the rest held back)
//!                                         ACK  ─▶ that half was fine: offer the next group
//!                                         NACK ─▶ the culprit is in it: split again
//!  desired = target, with every refused unit and every group not on trial at the proxy's held content
//! ```
//! A unit leaves containment as soon as its content in the snapshot changes (new config gets its own try). The
//! state is per stream: a proxy that NACKs on purpose holds back only its own config. While anything is held back
//! the proxy does not hold its target, so it never counts as synced (release gates wait for it).

use super::resource::{Resource, ResourceSet, TypeKind};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use prost::Message;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// A part of a type's config a proxy can refuse on its own: a whole resource, or one virtual host of a route
/// configuration (all services of a port share one route configuration, so a resource would be too coarse).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Unit {
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_host: Option<String>,
}

impl Unit {
    /// Whether this part is the Service with FQDN `service`'s: one of its virtual hosts (`fqdn:port`) or clusters
    /// and assignments (`outbound|port|subset|fqdn`).
    pub fn belongs_to(&self, service: &str) -> bool {
        let vhost = self.route_parts().1.and_then(|v| v.strip_prefix(service)).is_some_and(|p| p.starts_with(':'));
        vhost || self.resource.rsplit('|').next() == Some(service)
    }

    /// The route configuration and virtual host this unit is, if it is one: a virtual host of a whole route
    /// configuration, or a VHDS resource (`9080/reviews.default.svc.cluster.local:9080`; no other resource name
    /// Sluice serves has a `/`).
    fn route_parts(&self) -> (&str, Option<&str>) {
        match (&self.virtual_host, self.resource.rsplit_once('/')) {
            (Some(vh), _) => (&self.resource, Some(vh)),
            (None, Some((config, vh))) => (config, Some(vh)),
            (None, None) => (&self.resource, None),
        }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.route_parts() {
            (config, Some(vh)) => write!(f, "{config} (virtual host {vh})"),
            (resource, None) => f.write_str(resource),
        }
    }
}

/// A unit's content: a hash of its bytes; `None` when the unit is absent.
type Content = Option<u64>;

/// A unit the proxy refused, with what it refused and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Refused {
    pub unit: Unit,
    #[serde(skip)]
    content: Content,
    pub reason: String,
    /// The version of the response it refused.
    pub version: String,
    /// The resource holding the unit, as the refused response had it (for CSDS's `failed_configuration`).
    #[serde(skip)]
    pub rejected: Option<Arc<Resource>>,
    /// For a virtual host: the Services (FQDN) its refused routes send to. A gateway's virtual host is named after
    /// an outside host (`bookinfo.example.com:8080`), so its name says nothing of the Services behind it.
    #[serde(skip)]
    pub routes_to: Box<[String]>,
    #[serde(skip)]
    pub at: std::time::SystemTime,
}

impl Refused {
    /// Whether refusing this part keeps the proxy from the Service with FQDN `service`'s current config: the part
    /// is that Service's (see [`Unit::belongs_to`]), or is a virtual host routing to it.
    pub fn concerns(&self, service: &str) -> bool {
        self.unit.belongs_to(service) || self.routes_to.iter().any(|s| s == service)
    }
}

/// One stream's containment state for one type.
#[derive(Debug, Default)]
pub(crate) struct Containment {
    refused: BTreeMap<Unit, Refused>,
    /// Groups of suspects still to try, each unit with the content under suspicion; the first group is on trial.
    queue: VecDeque<BTreeMap<Unit, Content>>,
}

impl Containment {
    pub fn is_empty(&self) -> bool {
        self.refused.is_empty() && self.queue.is_empty()
    }

    pub fn refused(&self) -> impl Iterator<Item = &Refused> {
        self.refused.values()
    }

    /// The proxy refused `sent` (response `version`) while holding `held`. Returns the units found guilty.
    pub fn nack(
        &mut self,
        kind: TypeKind,
        sent: &ResourceSet,
        held: &ResourceSet,
        version: &str,
        reason: &str,
    ) -> Vec<Unit> {
        let (sent_units, held_units) = (units(kind, sent), units(kind, held));
        let mut changed: BTreeMap<Unit, Content> = BTreeMap::new();
        for (u, c) in &sent_units {
            if held_units.get(u) != Some(c) {
                changed.insert(u.clone(), Some(*c));
            }
        }
        for u in held_units.keys().filter(|u| !sent_units.contains_key(*u)) {
            changed.insert(u.clone(), None);
        }
        // Units refused before at this content were held back: they are not what this response changed.
        changed.retain(|u, c| self.refused.get(u).is_none_or(|r| r.content != *c));
        for group in &mut self.queue {
            group.retain(|u, _| !changed.contains_key(u));
        }
        self.queue.retain(|g| !g.is_empty());
        match changed.len() {
            0 => Vec::new(),
            1 => {
                let (unit, content) = changed.into_iter().next().expect("one");
                let rejected = sent.get(&unit.resource).cloned();
                let routes_to = match (&unit.virtual_host, &rejected) {
                    (Some(vh), Some(r)) => routed_services(r, vh),
                    (None, Some(r)) if kind == TypeKind::VirtualHost => services_of(&r.refs),
                    _ => Box::default(),
                };
                let refused = Refused {
                    unit: unit.clone(),
                    content,
                    reason: reason.to_string(),
                    version: version.to_string(),
                    rejected,
                    routes_to,
                    at: std::time::SystemTime::now(),
                };
                self.refused.insert(unit.clone(), refused);
                vec![unit]
            }
            n => {
                let mut first = changed;
                let second = first.split_off(&first.keys().nth(n / 2).expect("a middle key").clone());
                self.queue.push_front(second);
                self.queue.push_front(first);
                Vec::new()
            }
        }
    }

    /// The proxy accepted what it was sent: suspects it now holds at their suspected content were fine.
    pub fn ack(&mut self, kind: TypeKind, held: &ResourceSet) {
        if self.queue.is_empty() {
            return;
        }
        let held = units(kind, held);
        for group in &mut self.queue {
            group.retain(|u, c| held.get(u).copied() != *c);
        }
        self.queue.retain(|g| !g.is_empty());
    }

    /// `target` with every refused unit, and every suspect not on trial, at the proxy's `held` content. A unit
    /// whose content in `target` is no longer the one refused or suspected leaves containment.
    pub fn apply(&mut self, kind: TypeKind, target: ResourceSet, held: &ResourceSet) -> ResourceSet {
        if self.is_empty() {
            return target;
        }
        let now = units(kind, &target);
        let current = |u: &Unit| now.get(u).copied();
        self.refused.retain(|u, r| current(u) == r.content);
        for group in &mut self.queue {
            group.retain(|u, c| current(u) == *c);
        }
        self.queue.retain(|g| !g.is_empty());
        let held_back: Vec<&Unit> =
            self.refused.keys().chain(self.queue.iter().skip(1).flat_map(|g| g.keys())).collect();
        if held_back.is_empty() {
            return target;
        }
        pin(kind, target, held, &held_back)
    }
}

/// `target` with `units` as `held` has them (or absent where `held` has none).
fn pin(kind: TypeKind, mut target: ResourceSet, held: &ResourceSet, units: &[&Unit]) -> ResourceSet {
    let mut by_resource: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for u in units {
        match &u.virtual_host {
            None => {
                match held.get(&u.resource) {
                    Some(r) => target.insert(u.resource.clone(), r.clone()),
                    None => target.remove(&u.resource),
                };
            }
            Some(vh) => by_resource.entry(&u.resource).or_default().push(vh),
        }
    }
    for (name, vhosts) in by_resource {
        let (Some(new), old) = (target.get(name).and_then(|r| decode(r)), held.get(name).and_then(|r| decode(r)))
        else {
            continue;
        };
        let mut config = new;
        for vh in vhosts {
            let previous = old.as_ref().and_then(|o| o.virtual_hosts.iter().find(|v| v.name == vh)).cloned();
            let at = config.virtual_hosts.iter().position(|v| v.name == vh);
            match (at, previous) {
                (Some(i), Some(p)) => config.virtual_hosts[i] = p,
                (Some(i), None) => {
                    config.virtual_hosts.remove(i);
                }
                (None, Some(p)) => config.virtual_hosts.push(p),
                (None, None) => {}
            }
        }
        config.virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
        debug_assert_eq!(kind, TypeKind::Route);
        target.insert(name.to_string(), Arc::new(Resource::route(&config)));
    }
    target
}

/// The Services (FQDN, sorted) the virtual host `vhost` of route configuration `r` sends to or mirrors to.
fn routed_services(r: &Resource, vhost: &str) -> Box<[String]> {
    let Some(config) = decode(r) else { return Box::default() };
    let virtual_hosts = config.virtual_hosts.into_iter().filter(|v| v.name == vhost).collect();
    let only = RouteConfiguration { virtual_hosts, ..Default::default() };
    services_of(&super::resource::route_refs(&only))
}

/// The Services (FQDN, sorted) of these clusters.
fn services_of(clusters: &[String]) -> Box<[String]> {
    let mut services: Vec<String> = clusters
        .iter()
        .filter(|c| c.starts_with("outbound|"))
        .filter_map(|c| c.rsplit('|').next())
        .map(str::to_string)
        .collect();
    services.sort();
    services.dedup();
    services.into_boxed_slice()
}

fn decode(r: &Resource) -> Option<RouteConfiguration> {
    RouteConfiguration::decode(r.body.clone()).ok()
}

/// Every unit of a set with its content hash: resources, or for routes each virtual host (a route configuration
/// without virtual hosts is one unit of its own).
fn units(kind: TypeKind, set: &ResourceSet) -> BTreeMap<Unit, u64> {
    let mut out = BTreeMap::new();
    for (name, r) in set.iter() {
        let vhosts = (kind == TypeKind::Route).then(|| decode(r)).flatten().map(|c| c.virtual_hosts);
        match vhosts {
            Some(vhosts) if !vhosts.is_empty() => {
                for vh in vhosts {
                    let unit = Unit { resource: name.clone(), virtual_host: Some(vh.name.clone()) };
                    out.insert(unit, hash_vhost(&vh));
                }
            }
            _ => {
                out.insert(Unit { resource: name.clone(), virtual_host: None }, xxhash_rust::xxh3::xxh3_64(&r.body));
            }
        }
    }
    out
}

fn hash_vhost(vh: &VirtualHost) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&vh.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::Route;

    fn config(vhosts: &[(&str, &str)]) -> Arc<Resource> {
        let virtual_hosts = vhosts
            .iter()
            .map(|(name, route)| VirtualHost {
                name: name.to_string(),
                domains: vec![name.to_string()],
                routes: vec![Route { name: route.to_string(), ..Default::default() }],
                ..Default::default()
            })
            .collect();
        Arc::new(Resource::route(&RouteConfiguration { name: "9080".into(), virtual_hosts, ..Default::default() }))
    }

    fn set(vhosts: &[(&str, &str)]) -> ResourceSet {
        ResourceSet::from_iter([("9080".to_string(), config(vhosts))])
    }

    fn routes_of(s: &ResourceSet) -> Vec<(String, String)> {
        let c = decode(&s["9080"]).unwrap();
        c.virtual_hosts.iter().map(|v| (v.name.clone(), v.routes[0].name.clone())).collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn one_changed_virtual_host_is_refused_and_the_others_flow() {
        let mut c = Containment::default();
        let held = set(&[("a", "a1"), ("b", "b1")]);
        let bad = set(&[("a", "a-bad"), ("b", "b1")]);
        let guilty = c.nack(TypeKind::Route, &bad, &held, "v2", "invalid regex");
        assert_eq!(guilty, [Unit { resource: "9080".into(), virtual_host: Some("a".into()) }]);
        // A later change to b is offered, a stays at its good content.
        let next = c.apply(TypeKind::Route, set(&[("a", "a-bad"), ("b", "b2")]), &held);
        assert_eq!(routes_of(&next), pairs(&[("a", "a1"), ("b", "b2")]));
        // A new content for a leaves containment.
        let fixed = c.apply(TypeKind::Route, set(&[("a", "a2"), ("b", "b2")]), &held);
        assert_eq!(routes_of(&fixed), pairs(&[("a", "a2"), ("b", "b2")]));
        assert!(c.is_empty());
    }

    #[test]
    fn several_changes_are_bisected_down_to_the_bad_one() {
        let mut c = Containment::default();
        let names = ["a", "b", "c", "d"];
        let mut held = set(&names.map(|n| (n, "1")));
        let target = set(&[("a", "2"), ("b", "2"), ("c", "bad"), ("d", "2")]);
        assert!(c.nack(TypeKind::Route, &target, &held, "v2", "no").is_empty(), "four suspects: no verdict yet");
        let mut rounds = 0;
        let guilty = loop {
            rounds += 1;
            assert!(rounds < 10, "bisect ends");
            let offer = c.apply(TypeKind::Route, target.clone(), &held);
            let offered = routes_of(&offer);
            if offered.iter().any(|(_, r)| r == "bad") {
                let found = c.nack(TypeKind::Route, &offer, &held, "v3", "no");
                if !found.is_empty() {
                    break found;
                }
            } else {
                held = offer;
                c.ack(TypeKind::Route, &held);
            }
        };
        assert_eq!(guilty[0].virtual_host.as_deref(), Some("c"));
        let settled = c.apply(TypeKind::Route, target.clone(), &held);
        assert_eq!(routes_of(&settled), pairs(&[("a", "2"), ("b", "2"), ("c", "1"), ("d", "2")]));
        assert_eq!(c.refused().map(|r| r.reason.as_str()).collect::<Vec<_>>(), ["no"]);
    }

    #[test]
    fn a_refused_gateway_virtual_host_concerns_the_services_it_routes_to() {
        use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
        use envoy_types::pb::envoy::config::route::v3::{RouteAction, WeightedCluster, route, route_action};
        let split = |bad: &str| {
            let weighted = WeightedCluster {
                clusters: ["v1", "v2"]
                    .map(|v| ClusterWeight {
                        name: format!("outbound|9080|{v}|productpage.default.svc.cluster.local"),
                        ..Default::default()
                    })
                    .to_vec(),
                ..Default::default()
            };
            let action = RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(weighted)),
                ..Default::default()
            };
            let vh = VirtualHost {
                name: "bookinfo.example.com:8080".into(),
                domains: vec!["bookinfo.example.com".into()],
                routes: vec![Route {
                    name: bad.into(),
                    action: Some(route::Action::Route(action)),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let config = RouteConfiguration { name: "http.8080".into(), virtual_hosts: vec![vh], ..Default::default() };
            ResourceSet::from_iter([("http.8080".to_string(), Arc::new(Resource::route(&config)))])
        };
        let mut c = Containment::default();
        let guilty = c.nack(TypeKind::Route, &split("bad"), &split("good"), "v2", "invalid");
        assert_eq!(guilty[0].virtual_host.as_deref(), Some("bookinfo.example.com:8080"));
        let refused = c.refused().next().expect("refused");
        assert!(!refused.unit.belongs_to("productpage.default.svc.cluster.local"), "the name is the outside host's");
        assert!(refused.concerns("productpage.default.svc.cluster.local"), "its routes go to productpage");
        assert!(!refused.concerns("reviews.default.svc.cluster.local"));
    }

    #[test]
    fn whole_resources_for_other_types() {
        let cluster =
            |v: &str| Arc::new(Resource::new(TypeKind::Cluster, "c1".into(), v.as_bytes().to_vec(), Vec::new()));
        let mut c = Containment::default();
        let held = ResourceSet::from_iter([("c1".to_string(), cluster("good"))]);
        let bad = ResourceSet::from_iter([("c1".to_string(), cluster("bad"))]);
        assert_eq!(c.nack(TypeKind::Cluster, &bad, &held, "v2", "x").len(), 1);
        let kept = c.apply(TypeKind::Cluster, bad.clone(), &held);
        assert_eq!(kept["c1"].version, held["c1"].version);
    }
}
