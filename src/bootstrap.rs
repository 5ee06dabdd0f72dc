//! (placeholder; replaced by the bootstrap module)
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct BootstrapArgs {
    #[arg(long)]
    pub node_id: String,
}
pub fn render(_: &BootstrapArgs) -> serde_json::Value {
    serde_json::Value::Null
}
