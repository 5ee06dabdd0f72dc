//! Table tests of the matchers against real User-Agent strings and cookie headers, with the `regex` crate
//! (RE2-compatible for the subset used) and Envoy's whole-value semantics (`^(?:re)$`).

use super::*;
use ClientOs::*;

fn full(re: &str) -> regex::Regex {
    regex::Regex::new(&format!("^(?:{re})$")).expect("regex compiles")
}

#[rustfmt::skip]
const AGENTS: &[(&str, Option<ClientOs>, Option<Browser>)] = &[
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Some(Windows), Some(Browser::Chrome)),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Some(MacOs), Some(Browser::Chrome)),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Some(Linux), Some(Browser::Chrome)),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36", Some(Android), Some(Browser::Chrome)),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1", Some(Ios), Some(Browser::Chrome)),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91", Some(Windows), Some(Browser::Edge)),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91", Some(MacOs), Some(Browser::Edge)),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 EdgA/120.0.0.0", Some(Android), Some(Browser::Edge)),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 EdgiOS/120.2210.126 Mobile/15E148 Safari/605.1.15", Some(Ios), Some(Browser::Edge)),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19045", Some(Windows), Some(Browser::Edge)),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0", Some(Windows), Some(Browser::Firefox)),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.2; rv:121.0) Gecko/20100101 Firefox/121.0", Some(MacOs), Some(Browser::Firefox)),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", Some(Linux), Some(Browser::Firefox)),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", Some(Linux), Some(Browser::Firefox)),
    ("Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0", Some(Android), Some(Browser::Firefox)),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/121.0 Mobile/15E148 Safari/605.1.15", Some(Ios), Some(Browser::Firefox)),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15", Some(MacOs), Some(Browser::Safari)),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1", Some(Ios), Some(Browser::Safari)),
    ("Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1", Some(Ios), Some(Browser::Safari)),
    ("Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko", Some(Windows), Some(Browser::Ie)),
    ("Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)", Some(Windows), Some(Browser::Ie)),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0", Some(Windows), None),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0", Some(MacOs), None),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0", Some(Linux), None),
    ("Mozilla/5.0 (Linux; Android 10; VOG-L29) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36 OPR/79.5.4195.76954", Some(Android), None),
    ("curl/8.5.0", None, None),
];

const ALL_OS: [ClientOs; 5] = [Windows, MacOs, Ios, Android, Linux];
const ALL_BROWSERS: [Browser; 5] = [Browser::Chrome, Browser::Firefox, Browser::Safari, Browser::Edge, Browser::Ie];

#[test]
fn user_agents_match_exactly_their_os() {
    for os in ALL_OS {
        let re = full(&os_list_regex(&[os]));
        for (ua, want, _) in AGENTS {
            assert_eq!(re.is_match(ua), *want == Some(os), "{os:?} vs {ua}");
        }
    }
}

#[test]
fn user_agents_match_exactly_their_browser() {
    for b in ALL_BROWSERS {
        let re = full(browser_regex(b));
        for (ua, _, want) in AGENTS {
            assert_eq!(re.is_match(ua), *want == Some(b), "{b:?} vs {ua}");
        }
    }
}

#[test]
fn an_os_list_matches_any_of_its_values() {
    let re = full(&os_list_regex(&[Linux, Ios]));
    let hits: Vec<_> = AGENTS.iter().filter(|(ua, ..)| re.is_match(ua)).map(|(_, os, _)| os.unwrap()).collect();
    assert!(hits.iter().all(|os| matches!(os, Linux | Ios)));
    assert_eq!(hits.len(), 9);
}

#[test]
fn each_browser_gets_its_own_match() {
    let m = RuleMatch { browser: vec![Browser::Chrome, Browser::Safari], client_os: vec![Ios], ..Default::default() };
    let matches = rule_matches(&m).expect("valid");
    assert_eq!(matches.len(), 2);
    assert!(matches.iter().all(|r| r.headers.len() == 2));
}

fn cookie(name: &str, set: impl FnOnce(&mut StringMatch)) -> regex::Regex {
    let mut m = StringMatch { name: name.into(), ..Default::default() };
    set(&mut m);
    full(&cookie_regex(&m).expect("valid match"))
}

#[test]
fn cookie_exact_finds_one_whole_cookie() {
    let re = cookie("group", |m| m.exact = Some("be.ta".into()));
    for yes in ["group=be.ta", "a=1; group=be.ta", "a=1;group=be.ta; b=2", "group=be.ta;b=2"] {
        assert!(re.is_match(yes), "{yes}");
    }
    for no in ["group=beXta", "group=be.tax", "xgroup=be.ta", "a=group=be.ta", "group=", "a=1"] {
        assert!(!re.is_match(no), "{no}");
    }
}

#[test]
fn cookie_prefix_regex_and_present() {
    let re = cookie("g", |m| m.prefix = Some("be".into()));
    assert!(re.is_match("a=1; g=beta; b=2") && !re.is_match("g=alpha; b=beta"));
    let re = cookie("g", |m| m.regex = Some("v[0-9]+".into()));
    assert!(re.is_match("g=v12") && !re.is_match("g=v1x"));
    let re = cookie("g", |m| m.present = Some(true));
    assert!(re.is_match("a=1; g=") && re.is_match("g=x") && !re.is_match("gg=x"));
}

#[test]
fn malformed_matches_drop_the_rule() {
    let bad = StringMatch { name: "x".into(), ..Default::default() };
    let m = RuleMatch { headers: vec![bad], ..Default::default() };
    assert_eq!(rule_matches(&m), None);
}

#[test]
fn escape_makes_metacharacters_literal() {
    assert_eq!(escape("a.b*c"), "a\\.b\\*c");
    assert!(full(&escape("1+1=(2)")).is_match("1+1=(2)"));
}

#[test]
fn sticky_cookie_match_needs_the_whole_cookie() {
    let m = cookie_is("sluice-reviews", "v1");
    assert_eq!(m.headers.len(), 1);
    assert_eq!(m.headers[0].name, "cookie");
    let Some(header_matcher::HeaderMatchSpecifier::StringMatch(sm)) = &m.headers[0].header_match_specifier else {
        panic!("a string match")
    };
    let Some(string_matcher::MatchPattern::SafeRegex(re)) = &sm.match_pattern else { panic!("a regex") };
    let re = full(&re.regex);
    for yes in ["sluice-reviews=v1", "a=1; sluice-reviews=v1", "sluice-reviews=v1; a=2"] {
        assert!(re.is_match(yes), "{yes}");
    }
    for no in ["sluice-reviews=v10", "sluice-reviews=v3", "xsluice-reviews=v1", "a=sluice-reviews=v1"] {
        assert!(!re.is_match(no), "{no}");
    }
}
