//! The pod's interception rules as data: flags in, `iptables-restore` lines out (pure, golden-tested). The shell
//! (`iptables::apply`) only reads the table, merges these in and writes it back.
//!
//! ```text
//!  nat PREROUTING ─▶ SLUICE_INBOUND ─ excluded port? RETURN ─ inbound port? ─▶ SLUICE_IN_REDIRECT ─▶ :15006
//!  nat OUTPUT ────▶ SLUICE_OUTPUT ── excluded port? RETURN   from 127.0.0.6 (inbound passthrough)? RETURN
//!                                    the proxy (uid/gid) to its own pod over lo ─▶ SLUICE_IN_REDIRECT (:15006)
//!                                    the app over lo, or the proxy anywhere else ─▶ RETURN (never looped back)
//!                                    to 127.0.0.1, or an excluded CIDR ─▶ RETURN
//!                                    an included CIDR (and port) ─▶ SLUICE_REDIRECT ─▶ :15001
//! ```
//! Every chain and jump Sluice adds is named `SLUICE_*`, so the merge can find and replace exactly its own.

use std::fmt::Write;

use crate::translate::INBOUND_PASSTHROUGH_SOURCE as PASSTHROUGH_SOURCE;

/// The chains Sluice owns in the nat table.
pub const CHAINS: [&str; 4] = ["SLUICE_INBOUND", "SLUICE_IN_REDIRECT", "SLUICE_OUTPUT", "SLUICE_REDIRECT"];

/// What to intercept, as `sluice iptables` (and istio-iptables) flags say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Outbound capture port (Envoy's `virtualOutbound`).
    pub outbound_port: u16,
    /// Inbound capture port (Envoy's `virtualInbound`).
    pub inbound_port: u16,
    /// The proxy's uid and gid: its own connections are never redirected.
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    /// Inbound ports to redirect (`None`: all).
    pub inbound_ports: Option<Vec<u16>>,
    /// Inbound ports never redirected (the agent's health port, Envoy's metrics).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destinations to redirect (`None`: all).
    pub include_cidrs: Option<Vec<String>>,
    /// Outbound destinations never redirected.
    pub exclude_cidrs: Vec<String>,
    /// Outbound ports never redirected.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound ports redirected even to an address outside `include_cidrs`.
    pub include_outbound_ports: Vec<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid: 1337,
            proxy_gid: 1337,
            inbound_ports: None,
            exclude_inbound_ports: vec![15020, 15021, 15090],
            include_cidrs: None,
            exclude_cidrs: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            include_outbound_ports: Vec::new(),
        }
    }
}

/// The nat table lines that install the interception (`*nat` ... `COMMIT` not included), spelled as
/// `iptables-save` prints them, so what the dry run shows is what a saved table holds.
pub fn rules(c: &Config) -> Vec<String> {
    let mut out: Vec<String> = CHAINS.iter().map(|chain| format!(":{chain} - [0:0]")).collect();
    let mut add = |line: String| out.push(line);
    add(format!("-A SLUICE_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}", c.inbound_port));
    add(format!("-A SLUICE_REDIRECT -p tcp -j REDIRECT --to-ports {}", c.outbound_port));

    // Inbound: what arrives for the pod goes to the inbound listener, but for the excluded ports.
    add("-A PREROUTING -p tcp -j SLUICE_INBOUND".into());
    for p in &c.exclude_inbound_ports {
        add(format!("-A SLUICE_INBOUND -p tcp -m tcp --dport {p} -j RETURN"));
    }
    match &c.inbound_ports {
        None => add("-A SLUICE_INBOUND -p tcp -j SLUICE_IN_REDIRECT".into()),
        Some(ports) => {
            for p in ports {
                add(format!("-A SLUICE_INBOUND -p tcp -m tcp --dport {p} -j SLUICE_IN_REDIRECT"));
            }
        }
    }

    // Outbound: what the pod sends goes to the outbound listener, but the proxy's own connections.
    add("-A OUTPUT -p tcp -j SLUICE_OUTPUT".into());
    for p in &c.exclude_outbound_ports {
        add(format!("-A SLUICE_OUTPUT -p tcp -m tcp --dport {p} -j RETURN"));
    }
    // The proxy's inbound passthrough connects from this address to the pod's own (see `translate::intercept`).
    add(format!("-A SLUICE_OUTPUT -s {PASSTHROUGH_SOURCE}/32 -o lo -j RETURN"));
    for (owner, id) in [("--uid-owner", c.proxy_uid), ("--gid-owner", c.proxy_gid)] {
        // The proxy calling its own pod's address over lo (a service that routes back to this pod): that is
        // inbound traffic, so it goes through the inbound listener.
        add(format!("-A SLUICE_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner {owner} {id} -j SLUICE_IN_REDIRECT"));
        // The app talking to itself over lo is not mesh traffic.
        add(format!("-A SLUICE_OUTPUT -o lo -m owner ! {owner} {id} -j RETURN"));
        // The proxy's own connections (to apps, upstreams and Sluice) are never looped back into it.
        add(format!("-A SLUICE_OUTPUT -m owner {owner} {id} -j RETURN"));
    }
    add("-A SLUICE_OUTPUT -d 127.0.0.1/32 -j RETURN".into());
    for p in &c.include_outbound_ports {
        add(format!("-A SLUICE_OUTPUT -p tcp -m tcp --dport {p} -j SLUICE_REDIRECT"));
    }
    for cidr in &c.exclude_cidrs {
        add(format!("-A SLUICE_OUTPUT -d {cidr} -j RETURN"));
    }
    match &c.include_cidrs {
        None => add("-A SLUICE_OUTPUT -j SLUICE_REDIRECT".into()),
        Some(cidrs) => {
            for cidr in cidrs {
                add(format!("-A SLUICE_OUTPUT -d {cidr} -j SLUICE_REDIRECT"));
            }
        }
    }
    out
}

/// `saved` (an `iptables-save` dump of the nat table) with every Sluice chain and jump removed, then `ours`
/// added (none: cleanup). Applying the result twice gives the same table; other rules are kept as they were.
pub fn merge(saved: &str, ours: Option<&[String]>) -> String {
    let mine = |line: &str| CHAINS.iter().any(|c| line.contains(c));
    let mut out = String::new();
    let mut in_nat = false;
    let mut seen_nat = false;
    for line in saved.lines() {
        if line.starts_with('*') {
            in_nat = line == "*nat";
            seen_nat |= in_nat;
        }
        if in_nat && line == "COMMIT" {
            push_ours(&mut out, ours);
        }
        if in_nat && mine(line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !seen_nat {
        out.push_str("*nat\n");
        push_ours(&mut out, ours);
        out.push_str("COMMIT\n");
    }
    out
}

fn push_ours(out: &mut String, ours: Option<&[String]>) {
    for line in ours.unwrap_or_default() {
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_redirect_everything_but_the_proxy_and_its_ports() {
        let r = rules(&Config::default());
        assert!(r.contains(&"-A SLUICE_INBOUND -p tcp -m tcp --dport 15021 -j RETURN".to_string()));
        assert!(r.contains(&"-A SLUICE_OUTPUT -m owner --uid-owner 1337 -j RETURN".to_string()));
        assert_eq!(r.last().map(String::as_str), Some("-A SLUICE_OUTPUT -j SLUICE_REDIRECT"));
        let redirect = r.iter().position(|l| l == "-A SLUICE_OUTPUT -j SLUICE_REDIRECT").unwrap();
        let own = r.iter().position(|l| l == "-A SLUICE_OUTPUT -m owner --uid-owner 1337 -j RETURN").unwrap();
        assert!(own < redirect, "the proxy's exemption comes before the redirect");
    }

    #[test]
    fn merging_is_idempotent_and_keeps_other_rules() {
        let saved = "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n\
                     :OUTPUT ACCEPT [0:0]\n-A OUTPUT -d 10.9.9.9/32 -j RETURN\nCOMMIT\n";
        let ours = rules(&Config::default());
        let once = merge(saved, Some(&ours));
        let twice = merge(&once, Some(&ours));
        assert_eq!(once, twice);
        assert!(once.contains("-A OUTPUT -d 10.9.9.9/32 -j RETURN"), "{once}");
        assert!(once.contains("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT"), "{once}");
        let cleaned = merge(&once, None);
        assert_eq!(cleaned, saved, "cleanup restores the table as it was");
        assert!(!cleaned.contains("SLUICE"));
        let empty = merge("", Some(&ours));
        assert!(empty.starts_with("*nat\n:SLUICE_INBOUND - [0:0]") && empty.ends_with("COMMIT\n"), "{empty}");
    }
}
