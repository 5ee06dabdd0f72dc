//! Checks of the routes a snapshot generates, reported and never blocking: Envoy's API rules (`xds::pgv`) on every
//! configuration and virtual host, and routes naming a cluster that does not exist. Either is a translate bug.

use super::resource::ResourceSet;
use crate::translate;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};

/// Fewer virtual hosts than this are encoded and checked on the calling thread.
pub(super) const PARALLEL_VHOSTS: usize = 256;

/// Checks route configurations against Envoy's API rules: each configuration without its virtual hosts, then
/// the virtual hosts on every core (the check decodes each message again; at 10,000 Services it was as long as
/// translating the routes).
pub(super) fn check_routes(configs: &mut [RouteConfiguration]) {
    for config in configs.iter_mut() {
        // The configuration without its virtual hosts (taken out and put back: no copy of them).
        let vhosts = std::mem::take(&mut config.virtual_hosts);
        report_violations(std::iter::once((config.name.clone(), super::pgv::check_message(&*config))));
        config.virtual_hosts = vhosts;
    }
    let vhosts: Vec<(&str, &VirtualHost)> =
        configs.iter().flat_map(|c| c.virtual_hosts.iter().map(|v| (c.name.as_str(), v))).collect();
    let found = crate::parallel::runs(&vhosts, PARALLEL_VHOSTS, |run| {
        let checked = run.iter().map(|(config, v)| (config, v, super::pgv::check_message(*v)));
        checked
            .filter(|(.., bad)| !bad.is_empty())
            .map(|(c, v, bad)| (format!("{c}/{}", v.name), bad))
            .collect::<Vec<_>>()
    });
    report_violations(found.into_iter().flatten());
}

/// Route configurations that break a constraint of Envoy's API (its protoc-gen-validate annotations) would be
/// NACKed: say which and where, and count them (`sluice_invalid_resources_total{type}`). They are sent anyway, and
/// a proxy's NACK is contained to the refused virtual host (see `contain`); input validation should have stopped
/// what produced them, so each one is a bug worth a report.
pub(super) fn report_violations(checked: impl Iterator<Item = (String, Vec<super::pgv::Violation>)>) {
    for (name, violations) in checked.filter(|(_, v)| !v.is_empty()) {
        for v in &violations {
            tracing::error!(route_config = %name, violation = %v, "generated a route Envoy's API refuses");
        }
        metrics::counter!(crate::telemetry::names::INVALID_RESOURCES, "type" => "rds").increment(1);
    }
}

/// A route naming a missing cluster is a translate bug: say so loudly (tests assert it never happens). In intercept
/// mode the catch-all virtual host names `PassthroughCluster`, which is per proxy (`translate::proxy_clusters`).
pub(super) fn warn_dangling(routes: &ResourceSet, clusters: &ResourceSet, passthrough: bool) {
    let exists = |c: &str| clusters.contains_key(c) || (passthrough && c == translate::PASSTHROUGH_CLUSTER);
    for r in routes.values() {
        for c in r.refs.iter().filter(|c| !exists(c)) {
            tracing::error!(route = %r.name, cluster = %c, "route names a cluster that does not exist");
        }
    }
}
