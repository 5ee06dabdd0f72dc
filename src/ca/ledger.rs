//! What the CA issued, by the address that asked, so `/debug/syncz` and `sluice proxy-status` can show each
//! proxy's certificate: a pod asks from its own IP, and its node id carries that IP (Istio's
//! `sidecar~IP~POD.NS~NS.svc.cluster.local`). A NAT between pods and Sluice would hide this (then nothing shows).
//!
//! Bounded: at most [`MAX_ENTRIES`] addresses; expired entries go first when it is full.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Addresses remembered at most (a mesh of this many pods fits; past it the oldest expiry goes).
pub const MAX_ENTRIES: usize = 100_000;

/// The last certificate issued to one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub identity: String,
    pub serial: String,
    /// RFC 3339.
    pub not_after: String,
    #[serde(skip)]
    pub expires: SystemTime,
}

/// Shared between the CA (writes) and the registry's readers (syncz, CSDS).
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    inner: Arc<Mutex<BTreeMap<IpAddr, Entry>>>,
}

impl Ledger {
    pub fn record(&self, ip: IpAddr, entry: Entry) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(&ip) {
            let now = SystemTime::now();
            map.retain(|_, e| e.expires > now);
            if map.len() >= MAX_ENTRIES
                && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.expires).map(|(ip, _)| *ip)
            {
                map.remove(&oldest);
            }
        }
        map.insert(ip, entry);
    }

    pub fn get(&self, ip: IpAddr) -> Option<Entry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).get(&ip).cloned()
    }

    /// The certificate of the proxy whose node id is `node_id` (Istio's form), if the CA issued one to its IP.
    pub fn for_node(&self, node_id: &str) -> Option<Entry> {
        self.get(node_ip(node_id)?)
    }
}

/// The IP in an Istio-style node id (`TYPE~IP~ID~DOMAIN`).
pub fn node_ip(node_id: &str) -> Option<IpAddr> {
    let mut parts = node_id.split('~');
    let (_, ip) = (parts.next()?, parts.next()?);
    ip.parse().ok()
}

/// An entry for a certificate valid until `not_after`.
pub fn entry(identity: String, serial: String, not_after: SystemTime) -> Entry {
    let at = time::OffsetDateTime::from(not_after);
    let text = at
        .replace_nanosecond(0)
        .unwrap_or(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Entry { identity, serial, not_after: text, expires: not_after }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_node_id_finds_the_certificate_issued_to_its_address() {
        let ledger = Ledger::default();
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        ledger.record("10.88.0.10".parse().unwrap(), entry("spiffe://td/ns/a/sa/b".into(), "0a".into(), until));
        let got = ledger.for_node("sidecar~10.88.0.10~productpage.default~default.svc.cluster.local").unwrap();
        assert_eq!((got.serial.as_str(), got.not_after.as_str()), ("0a", "2027-01-15T08:00:00Z"));
        assert!(ledger.for_node("sidecar~10.88.0.11~x.default~default.svc.cluster.local").is_none());
        assert!(ledger.for_node("envoy-1").is_none(), "a node id without an address");
    }
}
