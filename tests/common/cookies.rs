//! A cookie jar for one simulated browser: keeps `name=value` from each `set-cookie` and sends them back.

use hyper::HeaderMap;
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct CookieJar {
    cookies: BTreeMap<String, String>,
}

impl CookieJar {
    /// A jar that already holds `name=value` (a cookie from an earlier visit).
    pub fn with(name: &str, value: &str) -> Self {
        let mut jar = Self::default();
        jar.cookies.insert(name.to_string(), value.to_string());
        jar
    }

    /// Keeps every cookie the response sets (attributes such as Path or Max-Age are ignored); returns the
    /// `name=value` pairs it set, in order.
    pub fn store(&mut self, headers: &HeaderMap) -> Vec<(String, String)> {
        let mut set = Vec::new();
        for value in headers.get_all("set-cookie") {
            let text = value.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default().trim();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.insert(name.to_string(), value.to_string());
                set.push((name.to_string(), value.to_string()));
            }
        }
        set
    }

    /// The value of one cookie.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// The `cookie` request header for everything held, or `None` when empty.
    pub fn header(&self) -> Option<String> {
        (!self.cookies.is_empty())
            .then(|| self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }
}
