//! The pod an agent runs in, as its environment and the downward API describe it (pure).

use std::collections::BTreeMap;
use std::net::IpAddr;

/// What the agent knows of its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub ip: Option<IpAddr>,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub inbound_ports: Vec<u16>,
}

impl Pod {
    /// Istio's sidecar node id, `sidecar~IP~POD.NS~NS.svc.cluster.local`, so tools that read Istio's carry over
    /// (Sluice reads the namespace from it).
    pub fn node_id(&self) -> String {
        self.node_id_of("sidecar")
    }

    /// Istio's gateway node id, `router~IP~POD.NS~NS.svc.cluster.local` (`sluice proxy --gateway`).
    pub fn router_node_id(&self) -> String {
        self.node_id_of("router")
    }

    fn node_id_of(&self, kind: &str) -> String {
        let ip = self.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into());
        let (name, ns, domain) = (&self.name, &self.namespace, crate::model::CLUSTER_DOMAIN);
        format!("{kind}~{ip}~{name}.{ns}~{ns}.svc.{domain}")
    }
}

/// The downward API's labels file: one `key="value"` per line, the value a quoted string with `\"` and `\\`
/// escapes (as Kubernetes writes it).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (key, value) = line.split_once('=').ok_or_else(|| format!("line {}: not key=\"value\"", i + 1))?;
        let value = value.trim();
        let quoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
        let raw = quoted.ok_or_else(|| format!("line {}: the value is not quoted", i + 1))?;
        let mut unescaped = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => unescaped.push('\n'),
                    Some(other) => unescaped.push(other),
                    None => return Err(format!("line {}: a lone backslash", i + 1)),
                }
            } else {
                unescaped.push(c);
            }
        }
        out.insert(key.trim().to_string(), unescaped);
    }
    Ok(out)
}

/// A comma-separated port list, as a pod spec's environment gives it (empty: none).
pub fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    let ports = text.split(',').map(str::trim).filter(|p| !p.is_empty());
    ports
        .map(|p| p.parse().ok().filter(|n: &u16| *n != 0).ok_or_else(|| format!("`{p}` is not a port (1-65535)")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_api_labels_parse() {
        let text = "app=\"reviews\"\npod-template-hash=\"7d9f\"\nversion=\"v3\"\nnote=\"a \\\"b\\\"\"\n";
        let labels = parse_labels(text).unwrap();
        assert_eq!(labels["app"], "reviews");
        assert_eq!(labels["version"], "v3");
        assert_eq!(labels["note"], "a \"b\"");
        assert!(parse_labels("app=reviews").unwrap_err().contains("not quoted"));
    }

    #[test]
    fn port_lists_may_be_empty() {
        assert_eq!(parse_ports(""), Ok(vec![]));
        assert_eq!(parse_ports("9080, 9443,"), Ok(vec![9080, 9443]));
        assert!(parse_ports("http").unwrap_err().contains("`http` is not a port"));
        assert!(parse_ports("0").is_err());
    }

    #[test]
    fn the_node_id_is_istios() {
        let pod = Pod {
            name: "reviews-v3-abc".into(),
            namespace: "shop".into(),
            ip: Some("10.1.0.5".parse().unwrap()),
            service_account: "bookinfo-reviews".into(),
            labels: BTreeMap::new(),
            inbound_ports: vec![9080],
        };
        assert_eq!(pod.node_id(), "sidecar~10.1.0.5~reviews-v3-abc.shop~shop.svc.cluster.local");
    }
}
