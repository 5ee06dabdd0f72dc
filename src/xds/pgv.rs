//! Envoy's own constraints on its API, read from the protoc-gen-validate annotations in the descriptor set that
//! `envoy-types` ships (`(validate.rules)`, `(validate.required)` on oneofs), checked on the resources Sluice
//! generates: what Envoy would refuse with "Proto constraint validation failed" is found here, with its path,
//! before a proxy sees it. No list of Envoy's rules is kept by hand.
//!
//! ```text
//!  resource bytes ─▶ DynamicMessage ─walk─▶ per field: its rules (compiled once per message type, cached)
//!                                           string len/bytes/header names, numbers, enums, required messages,
//!                                           repeated/map sizes and items, durations, Any (decoded and walked)
//!                                           per oneof: required ─▶ [Violation { path, rule }]
//! ```
//! Not checked: `pattern` regexes, `timestamp`, `email`/`hostname`/`ip`-style well-known strings other than HTTP
//! header names and values, and `lt_now`/`within` time rules.

use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value,
};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// One broken constraint: where (`virtual_hosts[0].routes[2].match.headers[0].name`) and which rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.rule)
    }
}

/// Checks an encoded message of `type_name` (`envoy.config.route.v3.RouteConfiguration`).
pub fn check(type_name: &str, bytes: &[u8]) -> Vec<Violation> {
    let pool = crate::envoy_json::pool();
    let Some(desc) = pool.get_message_by_name(type_name) else {
        return vec![Violation { path: String::new(), rule: format!("unknown message type {type_name}") }];
    };
    match DynamicMessage::decode(desc, bytes) {
        Ok(msg) => {
            let mut out = Vec::new();
            walk(&msg, &Path::Root, &mut out);
            out
        }
        Err(e) => vec![Violation { path: String::new(), rule: format!("does not decode: {e}") }],
    }
}

/// A typed message.
pub fn check_message<M: prost::Message + prost::Name>(msg: &M) -> Vec<Violation> {
    check(&M::full_name(), &msg.encode_to_vec())
}

/// The compiled rules of one message type.
struct MessageRules {
    disabled: bool,
    fields: Vec<(FieldDescriptor, Option<Rules>)>,
    /// Oneofs that must have a field set: their name and members' numbers.
    required_oneofs: Vec<(String, Vec<u32>)>,
}

fn rules_of(desc: &MessageDescriptor) -> Arc<MessageRules> {
    // Per thread: the checks run on every core, and a shared lock per message was contended.
    thread_local! {
        static CACHE: std::cell::RefCell<HashMap<String, Arc<MessageRules>>> = Default::default();
    }
    CACHE.with_borrow_mut(|cache| match cache.get(desc.full_name()) {
        Some(r) => r.clone(),
        None => cache.entry(desc.full_name().to_string()).or_insert_with(|| Arc::new(compile(desc))).clone(),
    })
}

struct Extensions {
    rules: ExtensionDescriptor,
    oneof_required: ExtensionDescriptor,
    disabled: ExtensionDescriptor,
}

fn extensions(pool: &DescriptorPool) -> Option<&'static Extensions> {
    static EXT: OnceLock<Option<Extensions>> = OnceLock::new();
    EXT.get_or_init(|| {
        let find = |n: &str| pool.all_extensions().find(|e| e.full_name() == n && e.number() == 1071);
        let oneof = pool.all_extensions().find(|e| e.full_name() == "validate.required");
        Some(Extensions {
            rules: find("validate.rules")?,
            oneof_required: oneof?,
            disabled: find("validate.disabled")?,
        })
    })
    .as_ref()
}

fn compile(desc: &MessageDescriptor) -> MessageRules {
    let Some(ext) = extensions(desc.parent_pool()) else {
        return MessageRules { disabled: true, fields: Vec::new(), required_oneofs: Vec::new() };
    };
    let opts = desc.options();
    let disabled = opts.has_extension(&ext.disabled) && opts.get_extension(&ext.disabled).as_bool() == Some(true);
    let fields = desc
        .fields()
        .map(|f| {
            let o = f.options();
            let rules = o.has_extension(&ext.rules).then(|| o.get_extension(&ext.rules).as_message().map(Rules::from));
            (f, rules.flatten())
        })
        .collect();
    let required_oneofs = desc
        .oneofs()
        .filter(|o| {
            let opts = o.options();
            opts.has_extension(&ext.oneof_required) && opts.get_extension(&ext.oneof_required).as_bool() == Some(true)
        })
        .map(|o| (o.name().to_string(), o.fields().map(|f| f.number()).collect()))
        .collect();
    MessageRules { disabled, fields, required_oneofs }
}

/// One field's rules, read from a `validate.FieldRules` message.
#[derive(Clone, Debug, Default)]
struct Rules {
    required: bool,
    ignore_empty: bool,
    /// Bounds on a number (any numeric kind, compared as f64), or a string's or bytes' length.
    lt: Option<f64>,
    lte: Option<f64>,
    gt: Option<f64>,
    gte: Option<f64>,
    konst: Option<f64>,
    in_list: Vec<f64>,
    not_in: Vec<f64>,
    min_len: Option<u64>,
    max_len: Option<u64>,
    min_bytes: Option<u64>,
    max_bytes: Option<u64>,
    /// `Some(strict)` for an HTTP header name; the same for a header value.
    header_name: Option<bool>,
    header_value: Option<bool>,
    defined_only: bool,
    min_items: Option<u64>,
    max_items: Option<u64>,
    items: Option<Box<Rules>>,
    /// Duration bounds, in nanoseconds.
    dur_lt: Option<i128>,
    dur_lte: Option<i128>,
    dur_gt: Option<i128>,
    dur_gte: Option<i128>,
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => Some(f64::from(*x)),
        Value::F64(x) => Some(*x),
        Value::I32(x) => Some(f64::from(*x)),
        Value::I64(x) => Some(*x as f64),
        Value::U32(x) => Some(f64::from(*x)),
        Value::U64(x) => Some(*x as f64),
        Value::EnumNumber(x) => Some(f64::from(*x)),
        _ => None,
    }
}

fn duration_nanos(v: &Value) -> Option<i128> {
    let m = v.as_message()?;
    let secs = m.get_field_by_name("seconds").and_then(|s| s.as_i64()).unwrap_or(0);
    let nanos = m.get_field_by_name("nanos").and_then(|n| n.as_i32()).unwrap_or(0);
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

impl From<&DynamicMessage> for Rules {
    fn from(field_rules: &DynamicMessage) -> Self {
        let mut r = Rules::default();
        for (sub, value) in field_rules.fields() {
            let Some(m) = value.as_message() else { continue };
            let get = |name: &str| m.has_field_by_name(name).then(|| m.get_field_by_name(name)).flatten();
            let number = |name: &str| get(name).and_then(|v| num(&v));
            let unsigned = |name: &str| get(name).and_then(|v| v.as_u64());
            let flag = |name: &str| get(name).and_then(|v| v.as_bool()) == Some(true);
            let list = |name: &str| {
                get(name).and_then(|v| v.as_list().map(|l| l.iter().filter_map(num).collect())).unwrap_or_default()
            };
            match sub.name() {
                "message" => r.required |= flag("required"),
                "string" | "bytes" => {
                    (r.min_len, r.max_len) = (unsigned("min_len").or(unsigned("len")), unsigned("max_len"));
                    (r.min_bytes, r.max_bytes) = (unsigned("min_bytes"), unsigned("max_bytes"));
                    r.ignore_empty |= flag("ignore_empty");
                    if let Some(w) = get("well_known_regex").and_then(|v| v.as_enum_number()) {
                        let strict = get("strict").and_then(|v| v.as_bool()).unwrap_or(true);
                        match w {
                            1 => r.header_name = Some(strict),
                            2 => r.header_value = Some(strict),
                            _ => {}
                        }
                    }
                }
                "enum" => {
                    r.defined_only = flag("defined_only");
                    (r.in_list, r.not_in, r.konst) = (list("in"), list("not_in"), number("const"));
                }
                "repeated" | "map" => {
                    let (min, max) =
                        if sub.name() == "map" { ("min_pairs", "max_pairs") } else { ("min_items", "max_items") };
                    (r.min_items, r.max_items) = (unsigned(min), unsigned(max));
                    r.ignore_empty |= flag("ignore_empty");
                    let items = get(if sub.name() == "map" { "values" } else { "items" });
                    r.items = items.and_then(|v| v.as_message().map(|m| Box::new(Rules::from(m))));
                }
                "duration" => {
                    r.required |= flag("required");
                    let d = |name: &str| get(name).and_then(|v| duration_nanos(&v));
                    (r.dur_lt, r.dur_lte, r.dur_gt, r.dur_gte) = (d("lt"), d("lte"), d("gt"), d("gte"));
                }
                "any" => r.required |= flag("required"),
                _ => {
                    (r.lt, r.lte, r.gt, r.gte) = (number("lt"), number("lte"), number("gt"), number("gte"));
                    (r.konst, r.in_list, r.not_in) = (number("const"), list("in"), list("not_in"));
                    r.ignore_empty |= flag("ignore_empty");
                }
            }
        }
        r
    }
}

const WRAPPERS: [&str; 6] = [
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
];

/// Where a value sits in the checked message: made text only for a violation (formatting every field's path
/// was most of the walk).
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a MapKey),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Path::Key(parent, k) => write!(f, "{parent}[{}]", key(k)),
        }
    }
}

fn walk(msg: &DynamicMessage, path: &Path, out: &mut Vec<Violation>) {
    let desc = msg.descriptor();
    if desc.full_name() == "google.protobuf.Any" {
        return walk_any(msg, path, out);
    }
    let rules = rules_of(&desc);
    if rules.disabled {
        return;
    }
    for (oneof, numbers) in &rules.required_oneofs {
        if !numbers.iter().any(|n| msg.has_field_by_number(*n)) {
            let path = Path::Field(path, oneof).to_string();
            out.push(Violation { path, rule: "one of its fields must be set".into() });
        }
    }
    for (field, rule) in &rules.fields {
        let here = Path::Field(path, field.name());
        let present = msg.has_field(field);
        // A oneof member that is not the one set is not checked (as PGV generates it); an absent field without
        // rules has nothing to check.
        if !present && (rule.is_none() || field.containing_oneof().is_some()) {
            continue;
        }
        let value = msg.get_field(field);
        if let Some(r) = rule {
            check_field(field, r, present, &value, &here, out);
        }
        if present {
            descend(field, &value, &here, out);
        }
    }
}

/// Into the messages a field holds (one, a list, or a map's values).
fn descend(field: &FieldDescriptor, value: &Value, path: &Path, out: &mut Vec<Violation>) {
    if !matches!(field.kind(), Kind::Message(_)) {
        return;
    }
    match value {
        Value::Message(m) => walk(m, path, out),
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(m) = item.as_message() {
                    walk(m, &Path::Index(path, i), out);
                }
            }
        }
        Value::Map(map) => {
            for (k, v) in map {
                if let Some(m) = v.as_message() {
                    walk(m, &Path::Key(path, k), out);
                }
            }
        }
        _ => {}
    }
}

fn key(k: &MapKey) -> String {
    match k {
        MapKey::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn walk_any(msg: &DynamicMessage, path: &Path, out: &mut Vec<Violation>) {
    let url = msg.get_field_by_name("type_url").and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let bytes = msg.get_field_by_name("value").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
    let name = url.rsplit('/').next().unwrap_or_default();
    // A type Envoy's API does not define (an extension of another project) is not Envoy's to check.
    let Some(desc) = msg.descriptor().parent_pool().get_message_by_name(name) else { return };
    match DynamicMessage::decode(desc, bytes) {
        Ok(inner) => walk(&inner, path, out),
        Err(e) => out.push(Violation { path: path.to_string(), rule: format!("{name} does not decode: {e}") }),
    }
}

fn check_field(
    field: &FieldDescriptor,
    r: &Rules,
    present: bool,
    value: &Value,
    path: &Path,
    out: &mut Vec<Violation>,
) {
    let mut fail = |rule: String| out.push(Violation { path: path.to_string(), rule });
    if field.is_list() || field.is_map() {
        let len = value.as_list().map(|l| l.len()).or_else(|| value.as_map().map(|m| m.len())).unwrap_or(0) as u64;
        if r.ignore_empty && len == 0 {
            return;
        }
        if r.min_items.is_some_and(|m| len < m) {
            fail(format!("needs at least {} items, has {len}", r.min_items.unwrap_or_default()));
        }
        if r.max_items.is_some_and(|m| len > m) {
            fail(format!("holds at most {} items, has {len}", r.max_items.unwrap_or_default()));
        }
        if let Some(items) = &r.items {
            let values: Vec<Value> = match value {
                Value::List(l) => l.clone(),
                Value::Map(m) => m.values().cloned().collect(),
                _ => Vec::new(),
            };
            for (i, v) in values.iter().enumerate() {
                check_value(field, items, true, v, &Path::Index(path, i), out);
            }
        }
        return;
    }
    check_value(field, r, present, value, path, out);
}

/// One value against scalar, string, message, duration and enum rules.
fn check_value(
    field: &FieldDescriptor,
    r: &Rules,
    present: bool,
    value: &Value,
    path: &Path,
    out: &mut Vec<Violation>,
) {
    let mut fail = |rule: String| out.push(Violation { path: path.to_string(), rule });
    if let Kind::Message(m) = field.kind() {
        if r.required && !present {
            fail("is required".into());
        }
        if !present {
            return;
        }
        if m.full_name() == "google.protobuf.Duration" {
            let Some(n) = duration_nanos(value) else { return };
            if r.dur_lt.is_some_and(|b| n >= b) || r.dur_lte.is_some_and(|b| n > b) {
                fail(format!("duration {n} ns is too long"));
            }
            if r.dur_gt.is_some_and(|b| n <= b) || r.dur_gte.is_some_and(|b| n < b) {
                fail(format!("duration {n} ns is too short"));
            }
            return;
        }
        if WRAPPERS.contains(&m.full_name())
            && let Some(v) = value.as_message().and_then(|w| w.get_field_by_name("value")).and_then(|v| num(&v))
        {
            number_rules(r, v, &mut fail);
        }
        return;
    }
    if let Some(s) = value.as_str() {
        if r.ignore_empty && s.is_empty() {
            return;
        }
        let (chars, bytes) = (s.chars().count() as u64, s.len() as u64);
        if r.min_len.is_some_and(|m| chars < m) || r.min_bytes.is_some_and(|m| bytes < m) {
            fail(format!("`{s}` is too short"));
        }
        if r.max_len.is_some_and(|m| chars > m) || r.max_bytes.is_some_and(|m| bytes > m) {
            fail(format!("is {bytes} bytes, too long"));
        }
        if let Some(strict) = r.header_name
            && !header_name_ok(s, strict)
        {
            fail(format!("`{s}` is not an HTTP header name"));
        }
        if r.header_value.is_some_and(|strict| !header_value_ok(s, strict)) {
            fail("is not an HTTP header value".into());
        }
        return;
    }
    if let Some(b) = value.as_bytes() {
        let len = b.len() as u64;
        if r.min_len.is_some_and(|m| len < m) || r.max_len.is_some_and(|m| len > m) {
            fail(format!("{len} bytes: out of range"));
        }
        return;
    }
    if let (Kind::Enum(e), Some(n)) = (field.kind(), value.as_enum_number())
        && r.defined_only
        && e.get_value(n).is_none()
    {
        fail(format!("{n} is not a value of {}", e.full_name()));
    }
    if let Some(v) = num(value) {
        if r.ignore_empty && v == 0.0 {
            return;
        }
        number_rules(r, v, &mut fail);
    }
}

fn number_rules(r: &Rules, v: f64, fail: &mut impl FnMut(String)) {
    if r.konst.is_some_and(|c| v != c) {
        fail(format!("must be {}", r.konst.unwrap_or_default()));
    }
    if r.lt.is_some_and(|b| v >= b) || r.lte.is_some_and(|b| v > b) {
        fail(format!("{v} is too large"));
    }
    if r.gt.is_some_and(|b| v <= b) || r.gte.is_some_and(|b| v < b) {
        fail(format!("{v} is too small"));
    }
    if !r.in_list.is_empty() && !r.in_list.contains(&v) {
        fail(format!("{v} is not one of {:?}", r.in_list));
    }
    if r.not_in.contains(&v) {
        fail(format!("{v} is not allowed"));
    }
}

/// PGV's HTTP_HEADER_NAME: strict `^:?[0-9a-zA-Z!#$%&'*+-.^_|~\x60]+$`; loose: no NUL, CR or LF.
fn header_name_ok(s: &str, strict: bool) -> bool {
    if !strict {
        return !s.chars().any(|c| matches!(c, '\0' | '\r' | '\n'));
    }
    let rest = s.strip_prefix(':').unwrap_or(s);
    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_|~`".contains(c))
}

/// PGV's HTTP_HEADER_VALUE: strict forbids control characters but tab; loose forbids NUL, CR and LF.
fn header_value_ok(s: &str, strict: bool) -> bool {
    if strict {
        !s.chars().any(|c| (c.is_ascii_control() && c != '\t') || c == '\u{7f}')
    } else {
        !s.chars().any(|c| matches!(c, '\0' | '\r' | '\n'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::route::v3::{
        HeaderMatcher, RouteConfiguration, RouteMatch, VirtualHost, header_matcher, route_match,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

    #[test]
    fn envoys_annotations_are_read_and_broken_ones_named() {
        let header = |name: &str, prefix: &str| HeaderMatcher {
            name: name.into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Prefix(prefix.into())),
                ignore_case: false,
            })),
            ..Default::default()
        };
        let route = |headers| envoy_types::pb::envoy::config::route::v3::Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                headers,
                ..Default::default()
            }),
            action: Some(envoy_types::pb::envoy::config::route::v3::route::Action::DirectResponse(
                envoy_types::pb::envoy::config::route::v3::DirectResponseAction { status: 200, ..Default::default() },
            )),
            ..Default::default()
        };
        let config = |headers| RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![VirtualHost {
                name: "vh".into(),
                domains: vec!["*".into()],
                routes: vec![route(headers)],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(check_message(&config(vec![header("x-user", "a")])), []);
        let bad = check_message(&config(vec![header("x user", ""), header("", "b")]));
        let paths: Vec<String> = bad.iter().map(|v| v.to_string()).collect();
        assert!(
            paths.iter().any(|p| p.starts_with("virtual_hosts[0].routes[0].match.headers[0].string_match.prefix")),
            "an empty prefix: {paths:?}"
        );
        assert!(paths.iter().any(|p| p.contains("headers[1].name")), "an empty header name: {paths:?}");
        let no_domains = RouteConfiguration {
            virtual_hosts: vec![VirtualHost { name: "vh".into(), ..Default::default() }],
            ..Default::default()
        };
        let said: Vec<String> = check_message(&no_domains).iter().map(|v| v.path.clone()).collect();
        assert_eq!(said, ["virtual_hosts[0].domains"], "min_items: 1");
        let nameless = Cluster::default();
        assert!(check_message(&nameless).iter().any(|v| v.path == "name"), "a cluster needs a name");
    }
}
