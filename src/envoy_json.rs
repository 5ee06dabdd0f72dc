//! Envoy protobuf ↔ JSON, through the descriptor set that `envoy-types` ships (embedded by build.rs).
//! Used for `/debug/config_dump` and the translate golden tests; never on the xDS hot path.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use std::sync::OnceLock;

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));

/// The pool of every Envoy API message, decoded once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).expect("envoy-types descriptor set decodes"))
}

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("unknown message type {0}")]
    UnknownType(String),
    #[error("decoding {type_name}: {source}")]
    Decode { type_name: String, source: prost::DecodeError },
    #[error("to JSON: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Encoded bytes of a message of `type_name` (e.g. `envoy.config.cluster.v3.Cluster`) → Envoy's JSON form.
pub fn bytes_to_json(type_name: &str, bytes: &[u8]) -> Result<serde_json::Value, JsonError> {
    let desc = pool().get_message_by_name(type_name).ok_or_else(|| JsonError::UnknownType(type_name.to_string()))?;
    let msg = DynamicMessage::decode(desc, bytes)
        .map_err(|source| JsonError::Decode { type_name: type_name.to_string(), source })?;
    let opts = SerializeOptions::new().skip_default_fields(true);
    let value = msg.serialize_with_options(serde_json::value::Serializer, &opts)?;
    Ok(value)
}

/// A typed message → JSON.
pub fn to_json<M: Message + prost::Name>(msg: &M) -> Result<serde_json::Value, JsonError> {
    bytes_to_json(&M::full_name(), &msg.encode_to_vec())
}

/// An `Any` (type URL + bytes) → JSON with its `@type`.
pub fn any_to_json(type_url: &str, bytes: &[u8]) -> Result<serde_json::Value, JsonError> {
    let type_name = type_url.rsplit('/').next().unwrap_or(type_url);
    let mut value = bytes_to_json(type_name, bytes)?;
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("@type".into(), serde_json::Value::String(type_url.to_string()));
    }
    Ok(value)
}
