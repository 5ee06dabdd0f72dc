//! `sluice proxy-status`: what each connected proxy holds, read from CSDS on the xDS port (as
//! `istioctl proxy-status` reads istiod's).
//!
//! ```text
//!  sluice proxy-status ──gRPC FetchClientStatus──▶ Sluice :15010 ──▶ one row per proxy:
//!  NODE            CDS        EDS        LDS        RDS        VHDS
//!  reviews-v1-abc  SYNCED 5   SYNCED 5   SYNCED 1   SYNCED 1   STALE 1/4
//! ```
//! A type's cell is its worst resource status (ERROR > STALE > NOT SENT > SYNCED) with how many resources have it,
//! of how many; `-`: the proxy holds none of that type (VHDS: a SotW or proxyless client, or `--no-vhds`). With Sluice's CA, a last column says when each proxy's workload certificate ends (`-`: none issued
//! to its address). `-o json` prints the CSDS response as Envoy JSON. Errors exit 1.

use crate::xds::TypeKind;
use anyhow::Context;
use clap::ValueEnum;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{ClientConfig, ClientStatusRequest, ConfigStatus};
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher, string_matcher::MatchPattern};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ProxyStatusArgs {
    /// The Sluice xDS address (where CSDS is served).
    #[arg(long, env = "SLUICE_XDS_SERVER", default_value = "http://127.0.0.1:15010")]
    pub xds: String,
    /// Only proxies whose node id starts with this.
    pub node_prefix: Option<String>,
    /// `table`, or `json` (the CSDS response, with each resource).
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub async fn run(args: ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    let channel = tonic::transport::Endpoint::from_shared(args.xds.clone())
        .with_context(|| format!("--xds `{}` is not a URL", args.xds))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.xds))?;
    let mut client = ClientStatusDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let node_matchers = args
        .node_prefix
        .iter()
        .map(|p| NodeMatcher {
            node_id: Some(StringMatcher { match_pattern: Some(MatchPattern::Prefix(p.clone())), ignore_case: false }),
            node_metadatas: vec![],
        })
        .collect();
    let req = ClientStatusRequest {
        node_matchers,
        exclude_resource_contents: matches!(args.output, Output::Table),
        ..Default::default()
    };
    let resp = client.fetch_client_status(req).await.with_context(|| format!("CSDS at {}", args.xds))?.into_inner();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&crate::envoy_json::to_json(&resp)?)?),
        Output::Table => print!("{}", table(&resp.config)),
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per proxy; see the module doc.
pub fn table(configs: &[ClientConfig]) -> String {
    let mut rows = vec![["NODE", "CDS", "EDS", "LDS", "RDS", "VHDS"].map(String::from).to_vec()];
    // With Sluice's CA: when each proxy's workload certificate ends (from the node metadata CSDS adds).
    let cert = |c: &ClientConfig| -> Option<String> {
        use envoy_types::pb::google::protobuf::value::Kind;
        match &c.node.as_ref()?.metadata.as_ref()?.fields.get(crate::xds::csds::CERT_NOT_AFTER)?.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        }
    };
    let with_certs = configs.iter().any(|c| cert(c).is_some());
    if with_certs {
        rows[0].push("CERT NOT AFTER".into());
    }
    for c in configs {
        let mut row = vec![c.node.as_ref().map(|n| n.id.clone()).unwrap_or_default()];
        for kind in TypeKind::ALL {
            let statuses: Vec<i32> = c
                .generic_xds_configs
                .iter()
                .filter(|g| g.type_url == kind.type_url())
                .map(|g| g.config_status)
                .collect();
            row.push(cell(&statuses));
        }
        if with_certs {
            row.push(cert(c).unwrap_or_else(|| "-".into()));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn cell(statuses: &[i32]) -> String {
    if statuses.is_empty() {
        return "-".into();
    }
    let worst = [ConfigStatus::Error, ConfigStatus::Stale, ConfigStatus::NotSent, ConfigStatus::Unknown]
        .into_iter()
        .find(|s| statuses.contains(&(*s as i32)));
    match worst {
        None => format!("SYNCED {}", statuses.len()),
        Some(s) => {
            let n = statuses.iter().filter(|x| **x == s as i32).count();
            let name = match s {
                ConfigStatus::Error => "ERROR",
                ConfigStatus::Stale => "STALE",
                ConfigStatus::NotSent => "NOT SENT",
                _ => "UNKNOWN",
            };
            format!("{name} {n}/{}", statuses.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_shows_the_worst_status_and_its_count() {
        let (synced, stale, error) =
            (ConfigStatus::Synced as i32, ConfigStatus::Stale as i32, ConfigStatus::Error as i32);
        assert_eq!(cell(&[]), "-");
        assert_eq!(cell(&[synced, synced]), "SYNCED 2");
        assert_eq!(cell(&[synced, stale, stale]), "STALE 2/3");
        assert_eq!(cell(&[stale, error, synced]), "ERROR 1/3");
    }
}
