//! Wire schemas of the provider APIs, typed only where a stage acts on a field.
//!
//! Request, response and stream types keep every field they do not name in a `rest` map
//! (`#[serde(flatten)]`), so a value parsed and serialised again loses nothing a provider added.
//! Usage sections are typed completely: they are what token accounting is made of.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod openai;

/// Fields a schema does not name, kept verbatim.
pub type Rest = serde_json::Map<String, serde_json::Value>;
