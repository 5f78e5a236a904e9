//! Shared by the translation targets: what a translation produces must serialise and re-parse to
//! the same value.
use serde_json::Value;

pub fn reparses(value: &Value) {
    let bytes = serde_json::to_vec(value).expect("serialises");
    let again: Value = serde_json::from_slice(&bytes).expect("re-parses");
    assert_eq!(&again, value, "round trip");
}
