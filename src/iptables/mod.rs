//! `sluice iptables`: a pod's traffic interception, as an init container installs it (istiod's `istio-iptables`,
//! whose flags it takes where they exist). The rules are built as data first (`rules`, pure) and the dry run
//! prints exactly what would be applied; applying reads the nat table (`iptables-save -t nat`), replaces Sluice's
//! own chains and jumps in it, and writes it back in one `iptables-restore`, so running it twice leaves the same
//! table and `--cleanup` restores the one found.
//!
//! ```text
//!  flags ─▶ rules::Config ─▶ rules::rules ─▶ --dry-run: print
//!                                        └─▶ iptables-save -t nat ─merge─▶ iptables-restore -t nat
//! ```
//! IPv4 only (`iptables`); a dual-stack pod's IPv6 traffic is not intercepted.

pub mod rules;

use rules::Config;
use std::io::Write;
use std::process::{Command, ExitCode, Stdio};

/// `sluice iptables` flags (istio-iptables' names and letters where they exist).
#[derive(Clone, Debug, clap::Args)]
pub struct IptablesArgs {
    /// Port outbound traffic is redirected to (Envoy's outbound listener).
    #[arg(short = 'p', long = "envoy-port", env = "SLUICE_ENVOY_PORT", default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port inbound traffic is redirected to (Envoy's inbound listener).
    #[arg(short = 'z', long = "inbound-capture-port", env = "SLUICE_INBOUND_CAPTURE_PORT", default_value_t = 15006)]
    pub inbound_port: u16,
    /// The proxy's uid: its connections are never redirected.
    #[arg(short = 'u', long = "proxy-uid", env = "SLUICE_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// The proxy's gid: its connections are never redirected.
    #[arg(short = 'g', long = "proxy-gid", env = "SLUICE_PROXY_GID", default_value_t = 1337)]
    pub proxy_gid: u32,
    /// Inbound interception mode; only REDIRECT.
    #[arg(short = 'm', long = "inbound-interception-mode", default_value = "REDIRECT", value_parser = ["REDIRECT"])]
    pub mode: String,
    /// Inbound ports to redirect, comma-separated, or `*` for all.
    #[arg(short = 'b', long = "inbound-ports", env = "SLUICE_INBOUND_PORTS_INTERCEPT", default_value = "*")]
    pub inbound_ports: String,
    /// Inbound ports never redirected, comma-separated (the agent's health port 15021, Envoy's 15090, 15020).
    #[arg(
        short = 'd',
        long = "local-exclude-ports",
        env = "SLUICE_LOCAL_EXCLUDE_PORTS",
        default_value = "15020,15021,15090"
    )]
    pub exclude_inbound_ports: String,
    /// Outbound CIDRs to redirect, comma-separated, or `*` for all.
    #[arg(short = 'i', long = "service-cidr", env = "SLUICE_SERVICE_CIDR", default_value = "*")]
    pub include_cidrs: String,
    /// Outbound CIDRs never redirected, comma-separated.
    #[arg(short = 'x', long = "service-exclude-cidr", env = "SLUICE_SERVICE_EXCLUDE_CIDR", default_value = "")]
    pub exclude_cidrs: String,
    /// Outbound ports never redirected, comma-separated.
    #[arg(
        short = 'o',
        long = "local-outbound-ports-exclude",
        env = "SLUICE_OUTBOUND_PORTS_EXCLUDE",
        default_value = ""
    )]
    pub exclude_outbound_ports: String,
    /// Outbound ports always redirected, whatever the destination, comma-separated.
    #[arg(short = 'q', long = "outbound-ports", env = "SLUICE_OUTBOUND_PORTS_INCLUDE", default_value = "")]
    pub include_outbound_ports: String,
    /// Print the rules that would be applied, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove Sluice's rules and chains (the rest of the table stays as it is).
    #[arg(long)]
    pub cleanup: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("--{flag}: `{value}` is not {what}")]
    Flag { flag: &'static str, value: String, what: &'static str },
    #[error("{command}: {message}")]
    Command { command: String, message: String },
}

fn ports(flag: &'static str, text: &str) -> Result<Vec<u16>, IptablesError> {
    list(text).map(|p| p.parse().map_err(|_| IptablesError::Flag { flag, value: p.into(), what: "a port" })).collect()
}

fn cidrs_flag(flag: &'static str, text: &str) -> Result<Vec<String>, IptablesError> {
    cidrs(text).map_err(|value| IptablesError::Flag { flag, value, what: "an IPv4 CIDR" })
}

/// A comma-separated list of IPv4 CIDRs (a bare address is a /32), normalized to `ip/len`; `Err`: the bad item.
pub fn cidrs(text: &str) -> Result<Vec<String>, String> {
    list(text)
        .map(|c| {
            let (ip, len) = c.split_once('/').unwrap_or((c, "32"));
            let ok = ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32);
            if ok { Ok(format!("{ip}/{len}")) } else { Err(c.to_string()) }
        })
        .collect()
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl IptablesArgs {
    /// The flags as a [`Config`], each value checked.
    pub fn config(&self) -> Result<Config, IptablesError> {
        let all = |t: &str| t.trim() == "*";
        Ok(Config {
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
            inbound_ports: if all(&self.inbound_ports) {
                None
            } else {
                Some(ports("inbound-ports", &self.inbound_ports)?)
            },
            exclude_inbound_ports: ports("local-exclude-ports", &self.exclude_inbound_ports)?,
            include_cidrs: if all(&self.include_cidrs) {
                None
            } else {
                Some(cidrs_flag("service-cidr", &self.include_cidrs)?)
            },
            exclude_cidrs: cidrs_flag("service-exclude-cidr", &self.exclude_cidrs)?,
            exclude_outbound_ports: ports("local-outbound-ports-exclude", &self.exclude_outbound_ports)?,
            include_outbound_ports: ports("outbound-ports", &self.include_outbound_ports)?,
        })
    }
}

/// `sluice iptables`: prints, applies or removes the rules.
pub fn command(args: &IptablesArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice iptables: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &IptablesArgs) -> Result<(), IptablesError> {
    let config = args.config()?;
    let ours = rules::rules(&config);
    if args.dry_run {
        let mut out = std::io::stdout().lock();
        let text = format!("*nat\n{}\nCOMMIT\n", ours.join("\n"));
        return out.write_all(text.as_bytes()).map_err(|e| io_error("stdout", e));
    }
    let saved = iptables_save()?;
    let table = rules::merge(&saved, (!args.cleanup).then_some(ours.as_slice()));
    iptables_restore(&table)
}

fn io_error(command: &str, e: std::io::Error) -> IptablesError {
    IptablesError::Command { command: command.into(), message: e.to_string() }
}

fn iptables_save() -> Result<String, IptablesError> {
    let out = Command::new("iptables-save").args(["-t", "nat"]).output().map_err(|e| IptablesError::Command {
        command: "iptables-save".into(),
        message: format!("{e} (is iptables installed?)"),
    })?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(IptablesError::Command { command: "iptables-save -t nat".into(), message });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn iptables_restore(table: &str) -> Result<(), IptablesError> {
    let mut child = Command::new("iptables-restore")
        .args(["-w", "5"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io_error("iptables-restore", e))?;
    child
        .stdin
        .take()
        .map(|mut s| s.write_all(table.as_bytes()))
        .transpose()
        .map_err(|e| io_error("iptables-restore", e))?;
    let out = child.wait_with_output().map_err(|e| io_error("iptables-restore", e))?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(IptablesError::Command { command: "iptables-restore".into(), message });
    }
    Ok(())
}
