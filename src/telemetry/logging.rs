//! Logging: `tracing` to stderr as text or JSON, with a filter that can be changed while Sluice runs
//! (`GET`/`PUT /debug/loglevel` on the admin port).
//!
//! ```text
//!  tracing events ──▶ reload::Layer<EnvFilter> ──▶ fmt layer (text | json) ──▶ stderr
//!                          ▲ LogControl::set (admin port)
//! ```
//! Every xDS line is logged inside the stream's `xds` span (`proxy`, `protocol`); per-type lines add `type`
//! (`cds`, `eds`, `lds`, `rds`). In JSON the span's fields appear under `span` and `spans`.

use std::sync::{Mutex, OnceLock};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum LogFormat {
    Text,
    Json,
}

/// The live filter: read and replaced at run time.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// A filter string tracing's `EnvFilter` refuses; the message says why.
#[derive(Debug, thiserror::Error)]
#[error("log filter `{filter}` is not valid: {reason}")]
pub struct BadFilter {
    pub filter: String,
    pub reason: String,
}

fn parse(filter: &str) -> Result<EnvFilter, BadFilter> {
    EnvFilter::try_new(filter).map_err(|e| BadFilter { filter: filter.to_string(), reason: e.to_string() })
}

/// Installs the process's subscriber, writing to stderr. Fails on a bad filter or if a subscriber is already set.
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    init_with_writer(filter, format, std::io::stderr)
}

/// As [`init`], writing to `writer` (tests capture the log this way).
pub fn init_with_writer<W>(filter: &str, format: LogFormat, writer: W) -> anyhow::Result<()>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let (filter_layer, handle) = reload::Layer::new(parse(filter)?);
    let output = match format {
        // Colour only on a terminal: a log file or a pod's log must not carry escape codes.
        LogFormat::Text => {
            use std::io::IsTerminal;
            tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(writer).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(writer).boxed(),
    };
    tracing_subscriber::registry().with(filter_layer).with(output).try_init()?;
    let control = LogControl { handle, current: Mutex::new(filter.to_string()) };
    CONTROL.set(control).map_err(|_| anyhow::anyhow!("logging is already initialised"))?;
    Ok(())
}

/// The live filter, when this process's logging was set up by [`init`].
pub fn control() -> Option<&'static LogControl> {
    CONTROL.get()
}

impl LogControl {
    /// The filter in force, as it was given.
    pub fn filter(&self) -> String {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the filter; a bad one is refused and the old one stays.
    pub fn set(&self, filter: &str) -> Result<(), BadFilter> {
        let new = parse(filter)?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        self.handle.reload(new).map_err(|e| BadFilter { filter: filter.to_string(), reason: e.to_string() })?;
        tracing::info!(from = %current, to = %filter, "log filter changed");
        *current = filter.to_string();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filters_name_the_filter() {
        let e = parse("sluice=loud").unwrap_err();
        assert!(e.to_string().contains("`sluice=loud`"), "{e}");
        assert!(parse("info,sluice::xds=debug").is_ok());
    }
}
