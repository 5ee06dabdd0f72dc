//! What Envoy accepts in the matchers Sluice writes, checked where a user writes them (API 400, `file:line`,
//! `sluice validate`, a cluster object's status), so no proxy is ever sent a route it must refuse: one refused
//! route configuration would freeze every later route change on that proxy.
//!
//! ```text
//!  regex  ─▶ RE2 (the engine Envoy runs, crates/re2) ─▶ compiles? program size ≤ 100 (Envoy's default limit)?
//!  header name ─▶ Envoy's HTTP_HEADER_NAME rule      prefix ─▶ not empty (StringMatcher.prefix: min_len 1)
//! ```
//! A rule's cookie condition becomes a regex over the whole `cookie` header ([`cookie_regex`], here so validation
//! checks the pattern Envoy will actually compile, with the user's regex inside it).

/// Envoy refuses a regex whose RE2 program is larger than this (`re2.max_program_size.error_level`, default 100).
pub const ENVOY_MAX_PROGRAM_SIZE: u32 = 100;

use super::{MatchKind, StringMatch};

/// Longest pattern quoted back in an error message.
const QUOTED: usize = 80;

/// `Err(why)` when Envoy would refuse `pattern` as a `safe_regex`: RE2 does not compile it (look-arounds,
/// back-references, repetitions past 1000, unbalanced groups, …) or its program is larger than Envoy's limit.
pub fn check_regex(pattern: &str) -> Result<(), String> {
    match sluice_re2::compile(pattern) {
        Err(e) => Err(format!("`{}` is not a regular expression Envoy's RE2 accepts: {e}", quoted(pattern))),
        Ok(c) if c.program_size > ENVOY_MAX_PROGRAM_SIZE => Err(format!(
            "`{}` is too large for Envoy: its RE2 program has {} instructions, more than Envoy's limit of \
             {ENVOY_MAX_PROGRAM_SIZE} (runtime key re2.max_program_size.error_level); use a shorter pattern, or \
             exact/prefix matches",
            quoted(pattern),
            c.program_size
        )),
        Ok(_) => Ok(()),
    }
}

/// `Err(why)` when Envoy would refuse `name` as a header name in a matcher (its `HTTP_HEADER_NAME` rule, not
/// strict: an optional leading `:`, then RFC 7230 token characters).
pub fn check_header_name(name: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_|~`".contains(c);
    let rest = name.strip_prefix(':').unwrap_or(name);
    if rest.is_empty() || !rest.chars().all(token) {
        return Err(format!("`{}` is not a header name (letters, digits and !#$%&'*+-.^_|~`)", quoted(name)));
    }
    Ok(())
}

/// `Err(why)` for an empty `prefix` (Envoy's `StringMatcher.prefix` must not be empty; to match any value, use
/// `present`, or `regex: ".*"`).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty (Envoy refuses an empty prefix; to match any value use present)".into());
    }
    Ok(())
}

/// A regex over the whole `cookie` header that holds when one cookie is exactly `NAME=VALUE` (VALUE as the match
/// says): the cookie starts the header or follows `;` and optional spaces, and ends at `;` or the end.
pub fn cookie_regex(c: &StringMatch) -> Option<String> {
    let value = match c.kind()? {
        MatchKind::Exact(v) => escape(v),
        MatchKind::Prefix(v) => format!("{}[^;]*", escape(v)),
        MatchKind::Regex(re) => format!("(?:{re})"),
        MatchKind::Present => "[^;]*".to_string(),
    };
    Some(whole_cookie(&c.name, &value))
}

/// The whole-header pattern for one cookie named `name` whose value matches the pattern `value`.
pub fn whole_cookie(name: &str, value: &str) -> String {
    format!("(?:.*;\\s*)?{}={value}\\s*(?:;.*)?", escape(name))
}

/// Escapes RE2 metacharacters so the text matches literally.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if "\\.+*?()|[]{}^$".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn quoted(s: &str) -> String {
    if s.len() <= QUOTED {
        return s.to_string();
    }
    let cut = (0..=QUOTED).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    format!("{}…", &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_envoy_refuses_are_refused() {
        for bad in ["(?=x)", "(?<!x)y", "(a)\\1", "(ab", "a{1000}{1000}", "a{1001}", "[a-z]{200}"] {
            assert!(check_regex(bad).is_err(), "{bad}");
        }
        let words: Vec<String> = (0..40).map(|i| format!("w{i}x{i}")).collect();
        let long = check_regex(&words.join("|")).unwrap_err();
        assert!(long.contains("too large for Envoy") && long.contains('…'), "{long}");
        for good in ["jason", "^/api/v[0-9]+/.*", ".*(?:Chrome/[0-9.]+ (?:Mobile )?Safari/[0-9.]+|CriOS/.*)"] {
            assert_eq!(check_regex(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn header_names_and_prefixes() {
        assert!(check_header_name("end-user").is_ok() && check_header_name(":authority").is_ok());
        for bad in ["", ":", "x y", "a:b", "é"] {
            assert!(check_header_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_prefix("").is_err() && check_prefix("a").is_ok());
    }
}
