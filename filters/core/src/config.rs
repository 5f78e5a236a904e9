//! Reading plugin configuration: errors always name the field.
//!
//! serde_json reports a wrong type as "invalid type: string, expected a boolean at line 1
//! column 29", without saying which field; `serde_path_to_error` adds the path, so every error
//! reads `token_counter.inject_include_usage: invalid type: …`.

/// Every enforcing stage's `mode` (Envoy's `filter_enforced`): `shadow` decides and counts
/// (and reports in a header) but never refuses or changes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// Deserialises `json`, prefixing errors with `prefix` and the failing field's path.
pub fn from_json<'de, T: serde::Deserialize<'de>>(json: &'de [u8], prefix: &str) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| describe(prefix, &e))?;
    deserializer.end().map_err(|e| format!("{}: {e}", prefix.trim_end_matches('.')))?;
    Ok(value)
}

fn describe(prefix: &str, error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let field = format!("{prefix}{path}");
    let field = if field.is_empty() { "configuration".to_string() } else { field.trim_end_matches('.').to_string() };
    format!("{field}: {}", error.inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        flag: bool,
    }

    #[test]
    fn type_errors_name_the_nested_field() {
        let err = from_json::<Outer>(br#"{"inner":{"flag":"yes"}}"#, "stage.").unwrap_err();
        assert!(err.starts_with("stage.inner.flag: invalid type"), "{err}");
        let err = from_json::<Outer>(br#"{"inner":{"flag":true,"extra":1}}"#, "").unwrap_err();
        assert!(
            err.starts_with("inner.extra: unknown field `extra`") || err.contains("unknown field `extra`"),
            "{err}"
        );
        assert!(from_json::<Outer>(br#"{"inner":{"flag":true}} x"#, "").is_err());
    }
}
