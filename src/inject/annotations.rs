//! The pod annotations istiod users already write, read for injection (pure). A supported annotation with a value
//! that makes no sense refuses the pod, naming the annotation (the user sees it in `kubectl apply`'s answer); an
//! Istio annotation Sluice does not honour is reported back as an admission warning and counted, never silently
//! dropped.

use serde_json::{Map, Value};

pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
pub const STATS_PREFIXES: &str = "sidecar.istio.io/statsInclusionPrefixes";
pub const STATS_SUFFIXES: &str = "sidecar.istio.io/statsInclusionSuffixes";
pub const STATS_REGEXPS: &str = "sidecar.istio.io/statsInclusionRegexps";
/// Istio's injection templates, comma-separated: `sidecar` (the default) or `gateway` ([`super::gateway`]).
pub const TEMPLATES: &str = "inject.istio.io/templates";
/// The interception annotations: they mean nothing to a gateway, which intercepts nothing.
pub const INTERCEPTION: [&str; 7] = [
    INCLUDE_INBOUND_PORTS,
    EXCLUDE_INBOUND_PORTS,
    INCLUDE_OUTBOUND_IP_RANGES,
    EXCLUDE_OUTBOUND_IP_RANGES,
    INCLUDE_OUTBOUND_PORTS,
    EXCLUDE_OUTBOUND_PORTS,
    INTERCEPTION_MODE,
];

/// Istio's injection annotations that Sluice does not honour (each present one becomes a warning).
pub const UNSUPPORTED: [&str; 13] = [
    "sidecar.istio.io/rewriteAppHTTPProbers",
    "sidecar.istio.io/logLevel",
    "sidecar.istio.io/componentLogLevel",
    "sidecar.istio.io/agentLogLevel",
    "sidecar.istio.io/userVolume",
    "sidecar.istio.io/userVolumeMount",
    "sidecar.istio.io/bootstrapOverride",
    "sidecar.istio.io/extraStatTags",
    "sidecar.istio.io/discoveryAddress",
    "sidecar.istio.io/enableCoreDump",
    "status.sidecar.istio.io/port",
    "traffic.sidecar.istio.io/kubevirtInterfaces",
    "proxy.istio.io/overrides",
];

/// What the annotations change; `None`/empty: the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `*` or a port list, for `sluice iptables -b`.
    pub include_inbound_ports: Option<String>,
    pub exclude_inbound_ports: Vec<u16>,
    /// `*` or a CIDR list, for `-i`.
    pub include_outbound_ip_ranges: Option<String>,
    pub exclude_outbound_ip_ranges: Vec<String>,
    pub include_outbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub drain_seconds: Option<u64>,
    pub concurrency: Option<u32>,
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
    pub image: Option<String>,
    pub stats_prefixes: Option<String>,
    pub stats_suffixes: Option<String>,
    pub stats_regexps: Option<String>,
    /// `inject.istio.io/templates` names `gateway`: the pod is a gateway, not a workload.
    pub gateway: bool,
    /// Annotations present that Sluice does not honour, as admission warnings.
    pub warnings: Vec<String>,
}

/// An annotation whose value cannot be honoured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {message}")]
pub struct BadAnnotation {
    pub key: String,
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> BadAnnotation {
    BadAnnotation { key: key.to_string(), message: message.into() }
}

/// Reads the pod's annotations (`metadata.annotations`, possibly absent).
pub fn parse(annotations: Option<&Map<String, Value>>) -> Result<Overrides, BadAnnotation> {
    let empty = Map::new();
    let a = annotations.unwrap_or(&empty);
    let get = |key: &str| a.get(key).and_then(Value::as_str).map(str::trim);
    let mut o = Overrides::default();
    if let Some(v) = get(INCLUDE_INBOUND_PORTS) {
        o.include_inbound_ports = Some(if v == "*" { v.to_string() } else { join(&ports(INCLUDE_INBOUND_PORTS, v)?) });
    }
    if let Some(v) = get(EXCLUDE_INBOUND_PORTS) {
        o.exclude_inbound_ports = ports(EXCLUDE_INBOUND_PORTS, v)?;
    }
    if let Some(v) = get(INCLUDE_OUTBOUND_IP_RANGES) {
        o.include_outbound_ip_ranges =
            Some(if v == "*" { v.to_string() } else { cidrs(INCLUDE_OUTBOUND_IP_RANGES, v)?.join(",") });
    }
    if let Some(v) = get(EXCLUDE_OUTBOUND_IP_RANGES) {
        o.exclude_outbound_ip_ranges = cidrs(EXCLUDE_OUTBOUND_IP_RANGES, v)?;
    }
    if let Some(v) = get(INCLUDE_OUTBOUND_PORTS) {
        o.include_outbound_ports = ports(INCLUDE_OUTBOUND_PORTS, v)?;
    }
    if let Some(v) = get(EXCLUDE_OUTBOUND_PORTS) {
        o.exclude_outbound_ports = ports(EXCLUDE_OUTBOUND_PORTS, v)?;
    }
    if let Some(v) = get(PROXY_CONFIG) {
        proxy_config(v, &mut o)?;
    }
    for (key, slot) in [
        (PROXY_CPU, &mut o.cpu_request),
        (PROXY_MEMORY, &mut o.memory_request),
        (PROXY_CPU_LIMIT, &mut o.cpu_limit),
        (PROXY_MEMORY_LIMIT, &mut o.memory_limit),
    ] {
        if let Some(v) = get(key) {
            if !is_quantity(v) {
                return Err(bad(key, format!("`{v}` is not a Kubernetes quantity (e.g. 100m, 128Mi)")));
            }
            *slot = Some(v.to_string());
        }
    }
    if let Some(v) = get(PROXY_IMAGE) {
        if v.is_empty() || v.contains(char::is_whitespace) {
            return Err(bad(PROXY_IMAGE, format!("`{v}` is not an image reference")));
        }
        o.image = Some(v.to_string());
    }
    if let Some(v) = get(INTERCEPTION_MODE)
        && v != "REDIRECT"
    {
        return Err(bad(INTERCEPTION_MODE, format!("`{v}` is not supported: only REDIRECT")));
    }
    o.stats_prefixes = get(STATS_PREFIXES).map(str::to_string);
    o.stats_suffixes = get(STATS_SUFFIXES).map(str::to_string);
    if let Some(v) = get(STATS_REGEXPS) {
        for re in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            crate::model::pattern::check_regex(re).map_err(|e| bad(STATS_REGEXPS, e.to_string()))?;
        }
        o.stats_regexps = Some(v.to_string());
    }
    if let Some(v) = get(TEMPLATES) {
        let names = template_names(v);
        if names.contains(&"gateway") && names.contains(&"sidecar") {
            return Err(bad(TEMPLATES, format!("`{v}`: a pod is a workload (sidecar) or a gateway, not both")));
        }
        o.gateway = names.contains(&"gateway");
        o.warnings.extend(names.iter().filter(|n| !["sidecar", "gateway"].contains(n)).map(|n| {
            format!("annotation {TEMPLATES}: template {n} is not supported by Sluice's injector and was ignored")
        }));
    }
    o.warnings.extend(
        UNSUPPORTED
            .iter()
            .filter(|k| a.contains_key(**k))
            .map(|k| format!("annotation {k} is not supported by Sluice's injector and was ignored")),
    );
    Ok(o)
}

/// The template names of an `inject.istio.io/templates` value (Istio's: comma-separated, blanks trimmed).
pub fn template_names(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).filter(|n| !n.is_empty()).collect()
}

/// `proxy.istio.io/config` (a ProxyConfig in YAML or JSON): `terminationDrainDuration` and `concurrency` are
/// honoured; any other field becomes a warning.
fn proxy_config(text: &str, o: &mut Overrides) -> Result<(), BadAnnotation> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| bad(PROXY_CONFIG, format!("not YAML or JSON: {e}")))?;
    let serde_yaml::Value::Mapping(map) = value else {
        return Err(bad(PROXY_CONFIG, "not a ProxyConfig object"));
    };
    for (k, v) in &map {
        let key = k.as_str().unwrap_or_default();
        match key {
            "terminationDrainDuration" => {
                let text = v.as_str().ok_or_else(|| bad(PROXY_CONFIG, "terminationDrainDuration: not a duration"))?;
                let secs = go_duration_secs(text).ok_or_else(|| {
                    bad(PROXY_CONFIG, format!("terminationDrainDuration: `{text}` is not a duration such as 5s"))
                })?;
                o.drain_seconds = Some(secs);
            }
            "concurrency" => {
                let n = v.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| (1..=256).contains(n));
                o.concurrency = Some(n.ok_or_else(|| bad(PROXY_CONFIG, "concurrency: not a number from 1 to 256"))?);
            }
            other => o.warnings.push(format!("{PROXY_CONFIG}: field {other} is not supported and was ignored")),
        }
    }
    Ok(())
}

/// A Go duration (`5s`, `1m30s`, `500ms`) in whole seconds, rounded up.
fn go_duration_secs(text: &str) -> Option<u64> {
    let mut millis: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = ["ms", "h", "m", "s"].iter().find(|u| rest.starts_with(**u)).map(|u| (*u, u.len()))?;
        let factor = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            _ => 3_600_000,
        };
        millis = millis.checked_add(n.checked_mul(factor)?)?;
        rest = &rest[len..];
    }
    Some(millis.div_ceil(1000))
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix (`100m`, `1.5`, `128Mi`, `1e3`).
fn is_quantity(v: &str) -> bool {
    let body = v.strip_prefix(['+', '-']).unwrap_or(v);
    let number_end = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_end);
    let number_ok = !number.is_empty() && number != "." && number.matches('.').count() <= 1;
    let suffix_ok = matches!(suffix, "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "n" | "u")
        || matches!(suffix, "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei")
        || (suffix.len() > 1
            && suffix.starts_with(['e', 'E'])
            && suffix[1..].strip_prefix(['+', '-']).unwrap_or(&suffix[1..]).chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

fn ports(key: &str, text: &str) -> Result<Vec<u16>, BadAnnotation> {
    crate::agent::pod::parse_ports(text).map_err(|e| bad(key, e))
}

fn cidrs(key: &str, text: &str) -> Result<Vec<String>, BadAnnotation> {
    crate::iptables::cidrs(text).map_err(|v| bad(key, format!("`{v}` is not an IPv4 CIDR")))
}

fn join(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(v: Value) -> Result<Overrides, BadAnnotation> {
        parse(v.as_object())
    }

    #[test]
    fn every_supported_annotation_is_read() {
        let o = of(json!({
            INCLUDE_INBOUND_PORTS: "9080, 9443",
            EXCLUDE_INBOUND_PORTS: "8081",
            INCLUDE_OUTBOUND_IP_RANGES: "10.96.0.0/12",
            EXCLUDE_OUTBOUND_IP_RANGES: "169.254.169.254/32,10.0.0.1",
            INCLUDE_OUTBOUND_PORTS: "3306",
            EXCLUDE_OUTBOUND_PORTS: "5432,6379",
            PROXY_CONFIG: "terminationDrainDuration: 1m30s\nconcurrency: 4\nholdApplicationUntilProxyStarts: true",
            PROXY_CPU: "250m", PROXY_MEMORY: "256Mi", PROXY_CPU_LIMIT: "1", PROXY_MEMORY_LIMIT: "1Gi",
            PROXY_IMAGE: "registry.local/sluice:1.2",
            "sidecar.istio.io/rewriteAppHTTPProbers": "true",
        }))
        .unwrap();
        assert_eq!(o.include_inbound_ports.as_deref(), Some("9080,9443"));
        assert_eq!(o.exclude_inbound_ports, [8081]);
        assert_eq!(o.exclude_outbound_ip_ranges, ["169.254.169.254/32", "10.0.0.1/32"]);
        assert_eq!((o.drain_seconds, o.concurrency), (Some(90), Some(4)));
        assert_eq!(o.memory_limit.as_deref(), Some("1Gi"));
        assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);
        assert!(o.warnings.iter().any(|w| w.contains("holdApplicationUntilProxyStarts")));
        assert!(o.warnings.iter().any(|w| w.contains("rewriteAppHTTPProbers")));
    }

    #[test]
    fn a_bad_value_names_its_annotation() {
        for (key, value, wanted) in [
            (EXCLUDE_OUTBOUND_PORTS, "http", "`http` is not a port"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33", "`10.0.0.0/33` is not an IPv4 CIDR"),
            (PROXY_CPU, "lots", "not a Kubernetes quantity"),
            (PROXY_CONFIG, "terminationDrainDuration: soon", "terminationDrainDuration"),
            (INTERCEPTION_MODE, "TPROXY", "only REDIRECT"),
            (STATS_REGEXPS, "a(b", "sidecar.istio.io/statsInclusionRegexps"),
        ] {
            let err = of(json!({ key: value })).unwrap_err();
            assert!(err.to_string().contains(key) && err.to_string().contains(wanted), "{key}: {err}");
        }
    }

    #[test]
    fn the_template_annotation_picks_the_gateway_and_warns_about_others() {
        let o = of(json!({ TEMPLATES: " gateway " })).unwrap();
        assert!(o.gateway && o.warnings.is_empty(), "{o:?}");
        let o = of(json!({ TEMPLATES: "sidecar,grpc-agent" })).unwrap();
        assert!(!o.gateway);
        assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
        assert!(o.warnings[0].contains("template grpc-agent is not supported"), "{:?}", o.warnings);
        let err = of(json!({ TEMPLATES: "sidecar,gateway" })).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn quantities_and_durations() {
        for q in ["100m", "1", "0.5", "128Mi", "1Gi", "2e3", "1.5G"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "m", "1.2.3", "12 Mi", "1MB", "e3"] {
            assert!(!is_quantity(q), "{q}");
        }
        assert_eq!(go_duration_secs("5s"), Some(5));
        assert_eq!(go_duration_secs("500ms"), Some(1));
        assert_eq!(go_duration_secs("1h2m3s"), Some(3723));
        assert_eq!(go_duration_secs("5"), None);
    }
}
