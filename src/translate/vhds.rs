//! The VHDS form of route configurations: a weight change costs one virtual host, not the whole port's table.
//!
//! ```text
//!  RouteConfiguration "9080" { vhosts: [details…, reviews…, allow_any] }          (SotW, proxyless, gateways)
//!        │ split
//!        ▼
//!  RouteConfiguration "9080" { vhds: ADS }                                          (RDS: never changes)
//!  VirtualHost "9080/reviews.default.svc.cluster.local:9080" { domains, routes }   (VHDS: one resource per host)
//! ```
//!
//! Envoy subscribes to the VHDS namespace of each route configuration that carries `vhds` (the resource name
//! `9080`, matched against the prefix before the last `/`), merges the virtual hosts it receives into that table,
//! and removes one by its resource name: so a virtual host's `name` is its resource name. Envoy takes VHDS over
//! Delta xDS only; SotW streams, proxyless gRPC clients (no VHDS) and gateways keep the whole configurations.

use super::ads_config_source;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, Vhds, VirtualHost};

/// Route configurations without their virtual hosts (each says `vhds`), and every virtual host renamed
/// `<configuration>/<virtual host>`; both in the order given (names sorted when the configurations are). A
/// configuration without virtual hosts stays whole: Envoy would wait for a first VHDS answer that names none of
/// its virtual hosts (up to its 15 s initial fetch timeout) before warming the listener that uses it.
pub fn split(configs: &[RouteConfiguration]) -> (Vec<RouteConfiguration>, Vec<VirtualHost>) {
    let vhosts = configs.iter().flat_map(|c| c.virtual_hosts.iter().map(|v| named(&c.name, v.clone()))).collect();
    (configs.iter().cloned().map(header).collect(), vhosts)
}

/// A route configuration's VHDS form: without its virtual hosts, saying `vhds` (one without virtual hosts stays
/// whole).
pub fn header(mut config: RouteConfiguration) -> RouteConfiguration {
    if !config.virtual_hosts.is_empty() {
        config.virtual_hosts = Vec::new();
        config.vhds = Some(Vhds { config_source: Some(ads_config_source()) });
    }
    config
}

/// A virtual host of configuration `config` as a VHDS resource: named `<configuration>/<virtual host>`.
pub fn named(config: &str, mut vhost: VirtualHost) -> VirtualHost {
    vhost.name = resource_name(config, &vhost.name);
    vhost
}

/// `<configuration>/<virtual host>`: the VHDS resource naming Envoy's namespace matching expects.
pub fn resource_name(config: &str, vhost: &str) -> String {
    format!("{config}/{vhost}")
}

/// The route configuration (the VHDS namespace) a virtual host resource belongs to.
pub fn namespace_of(resource: &str) -> &str {
    resource.rsplit_once('/').map_or("", |(ns, _)| ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vhost(name: &str, domain: &str) -> VirtualHost {
        VirtualHost { name: name.into(), domains: vec![domain.into()], ..Default::default() }
    }

    #[test]
    fn each_virtual_host_leaves_its_configuration_under_a_namespaced_name() {
        let configs = vec![
            RouteConfiguration {
                name: "9080".into(),
                virtual_hosts: vec![vhost("a:9080", "a"), vhost("b:9080", "b")],
                ..Default::default()
            },
            RouteConfiguration {
                name: "9090".into(),
                virtual_hosts: vec![vhost("a:9090", "a:9090")],
                ..Default::default()
            },
            RouteConfiguration { name: "sluice-listen".into(), ..Default::default() },
        ];
        let (headers, vhosts) = split(&configs);
        assert!(headers[..2].iter().all(|h| h.virtual_hosts.is_empty() && h.vhds.is_some()));
        assert_eq!(headers[2], configs[2], "an empty configuration stays whole: no VHDS answer to wait for");
        let names: Vec<&str> = vhosts.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["9080/a:9080", "9080/b:9080", "9090/a:9090"]);
        assert_eq!(namespace_of(names[1]), "9080");
        assert_eq!(vhosts[2].domains, ["a:9090"], "only the name changes");
    }
}
