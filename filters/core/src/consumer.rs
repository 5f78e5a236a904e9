//! Who is calling: one consumer identity for every stage (quota's counters, provider-rewrite's
//! access policy, metric labels).
//!
//! Sources, tried in order: a property (e.g. a JWT claim that Envoy's `jwt_authn` wrote into
//! dynamic metadata), an identity header an auth filter set (the API-key filter's client id), a
//! credential header (an API key: only a salted hash is kept, never the key), then the
//! downstream address.

use crate::metrics;
use crate::stage::StageHost;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Where the consumer's identity comes from, tried in order: `property` (e.g. a JWT claim
/// written by `jwt_authn`), `header` (an API key: only a salted hash is kept), then the
/// downstream address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSource {
    /// Envoy property path holding the identity, e.g. a JWT claim written by `jwt_authn` (set its
    /// `payload_in_metadata`).
    #[serde(default)]
    #[schemars(extend("examples" = [["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload", "sub"]]))]
    pub property: Option<Vec<String>>,
    /// A credential header (an API key), or several tried in order (OpenAI's SDKs send
    /// `authorization: Bearer <key>`, Anthropic's `x-api-key: <key>`); the `Bearer` scheme is
    /// not part of the key, so one key is one consumer whichever header carries it. A SigV4
    /// `authorization` (AWS SDKs, Bedrock) is its access key id. Only `k:` + 16 hex digits of a
    /// salted SHA-256 of the key is kept, never the key. `cookie` is refused.
    #[serde(default)]
    #[schemars(with = "Option<HeaderList>", extend("examples" = [["authorization", "x-api-key"]]))]
    pub header: Option<Headers>,
    /// A header an auth filter sets to the authenticated identity (the API-key filter's
    /// `forwarding.header`), taken as it is. Only with a filter that overwrites it and an Envoy
    /// config that strips it from clients: otherwise a client names itself.
    #[serde(default)]
    #[schemars(extend("examples" = ["x-client-id"]))]
    pub identity_header: Option<String>,
    /// Fall back to the downstream address (`ip:<addr>`) when no other source names the caller.
    #[serde(default = "yes")]
    pub downstream_address: bool,
    /// Salt of the API-key hash. Set it: without one, identical keys hash identically across
    /// deployments.
    #[serde(default)]
    #[schemars(extend("examples" = ["a-long-random-string"]))]
    pub salt: Option<String>,
}

fn yes() -> bool {
    true
}

/// Header names, tried in order; written as one name or a list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Headers(pub Vec<String>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(name) => vec![name],
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    serde_json::Value::String(name) => Some(name),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| serde::de::Error::custom("expected header names (strings)"))?,
            _ => return Err(serde::de::Error::custom("expected a header name or a list of header names")),
        };
        Ok(Headers(names))
    }
}

// What `Headers` accepts, for the generated schema (never built).
/// One header name, or several tried in order.
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only its schema is used
enum HeaderList {
    One(String),
    Several(Vec<String>),
}

/// The SigV4 `authorization` scheme.
const SIGV4: &str = "AWS4-HMAC-SHA256";

/// Most credential headers one consumer source tries.
const MAX_HEADERS: usize = 4;

/// What an absent `consumer` section means: the same as `{}` (the generated schema showed the
/// derived default, with no address fallback, disagreeing with `{}`).
impl Default for ConsumerSource {
    fn default() -> Self {
        ConsumerSource { property: None, header: None, identity_header: None, downstream_address: yes(), salt: None }
    }
}

/// Headers that carry credentials but no identity of their own.
const CREDENTIAL_WITHOUT_HASH: &[&str] = &["cookie"];

impl ConsumerSource {
    /// Checks the fields; errors name them (`prefix` is this object's path).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if let Some(header) = &self.identity_header {
            if header.is_empty() || header.bytes().any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
            {
                return Err(format!("{prefix}identity_header: '{header}' is not a lowercase header name"));
            }
        }
        if let Some(Headers(headers)) = &self.header {
            if headers.is_empty() || headers.len() > MAX_HEADERS {
                return Err(format!("{prefix}header: name 1 to {MAX_HEADERS} headers"));
            }
            for header in headers {
                let shown = crate::error::shown(header);
                if header.is_empty()
                    || header.bytes().any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'))
                {
                    return Err(format!("{prefix}header: '{shown}' is not a lowercase header name"));
                }
                if CREDENTIAL_WITHOUT_HASH.contains(&header.as_str()) {
                    return Err(format!("{prefix}header: '{shown}' is not an identity"));
                }
            }
        }
        if self.property.as_ref().is_some_and(|p| p.is_empty() || p.iter().any(String::is_empty)) {
            return Err(format!("{prefix}property: must be a non-empty list of non-empty path segments"));
        }
        Ok(())
    }

    /// The consumer id of this request, if any source yields one.
    pub fn resolve(&self, host: &dyn StageHost) -> Option<String> {
        if let Some(id) = self.property.as_ref().and_then(|p| property_string(host, p)) {
            return Some(plain_consumer(&id));
        }
        if let Some(id) = self.identity_header.as_ref().and_then(|h| host.request_header(h)).filter(|v| !v.is_empty()) {
            return Some(plain_consumer(id.trim()));
        }
        let headers = self.header.as_ref().map_or(&[][..], |h| h.0.as_slice());
        let salt = self.salt.as_deref().unwrap_or("");
        let hashed = headers
            .iter()
            .filter_map(|h| host.request_header(h))
            .find_map(|value| credential(&value).map(|key| hashed_consumer(salt, key)));
        if hashed.is_some() {
            return hashed;
        }
        if self.downstream_address {
            let address = host.property(&["source", "address"]).map(|v| String::from_utf8_lossy(&v).into_owned())?;
            // Strip the port: one client is one address, whatever its source port.
            let ip = match address.rsplit_once(':') {
                Some((ip, port)) if port.bytes().all(|b| b.is_ascii_digit()) => ip.trim_matches(['[', ']']),
                _ => address.as_str(),
            };
            return Some(plain_consumer(&format!("ip:{ip}")));
        }
        None
    }
}

/// The key in a credential header's value: without the `Bearer` scheme (case-insensitive, as
/// auth schemes are) and surrounding spaces; `None` when nothing is left. A SigV4 signature
/// (Bedrock's SDKs) changes with every request (its date and signature): its caller is the access
/// key id of `Credential=<key id>/<date>/<region>/<service>/aws4_request`.
fn credential(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case(SIGV4) {
        return params
            .split(',')
            .find_map(|param| param.trim().strip_prefix("Credential="))
            .and_then(|scope| scope.split('/').next())
            .map(str::trim)
            .filter(|key_id| !key_id.is_empty());
    }
    let key = match (value.get(..6), value.get(6..)) {
        (Some(scheme), Some(rest))
            if scheme.eq_ignore_ascii_case("bearer") && (rest.is_empty() || rest.starts_with(' ')) =>
        {
            rest.trim_start()
        }
        _ => value,
    };
    Some(key).filter(|k| !k.is_empty())
}

/// A property as a non-empty string.
pub fn property_string(host: &dyn StageHost, path: &[String]) -> Option<String> {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    host.property(&path).map(|v| String::from_utf8_lossy(&v).into_owned()).filter(|v| !v.is_empty())
}

/// A stable, non-reversible consumer id for a credential: `k:` + 16 hex digits of
/// SHA-256(salt ‖ 0 ‖ value). The raw key is never stored, logged or used as a label.
pub fn hashed_consumer(salt: &str, value: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update([0u8]);
    hasher.update(value.as_bytes());
    let digest = hasher.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(18);
    out.push_str("k:");
    for byte in digest.iter().take(8) {
        for nibble in [byte >> 4, byte & 0x0f] {
            out.push(char::from(HEX.get(usize::from(nibble)).copied().unwrap_or(b'0')));
        }
    }
    out
}

/// A consumer id taken as it is (a JWT claim, an address), made safe as a label.
pub fn plain_consumer(value: &str) -> String {
    metrics::sanitize(value)
}

#[cfg(test)]
mod default_tests {
    use super::*;

    #[test]
    fn a_hashed_consumer_is_the_salted_sha256_prefix() {
        // python3 -c 'import hashlib; print(hashlib.sha256(b"salt\0sk-test-0123").hexdigest()[:16])'
        assert_eq!(hashed_consumer("salt", "sk-test-0123"), "k:80d3502e358d5bda");
    }

    #[test]
    fn a_credential_is_the_key_without_its_bearer_scheme() {
        for (value, key) in [
            ("Bearer sk-1", Some("sk-1")),
            ("bearer sk-1", Some("sk-1")),
            ("BEARER   sk-1 ", Some("sk-1")),
            ("sk-1", Some("sk-1")),
            ("  sk-1", Some("sk-1")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearerish", Some("Bearerish")),
            ("   ", None),
            ("Basic dXNlcjpwYXNz", Some("Basic dXNlcjpwYXNz")),
            ("Bearér x", Some("Bearér x")),
            // SigV4: the access key id, whatever the date, region and signature.
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261128/us-east-1/bedrock/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
                Some("AKIDEXAMPLE"),
            ),
            ("aws4-hmac-sha256 SignedHeaders=host,Credential=ASIA1/20261129/eu-west-1/bedrock/aws4_request", Some("ASIA1")),
            ("AWS4-HMAC-SHA256 Credential=/20261128/us-east-1/bedrock/aws4_request", None),
            ("AWS4-HMAC-SHA256 Signature=abc", None),
            ("AWS4-HMAC-SHA256 ", None),
        ] {
            assert_eq!(credential(value), key, "{value:?}");
        }
    }

    #[test]
    fn header_is_one_name_or_a_list_and_each_is_checked() {
        let one: ConsumerSource = serde_json::from_str(r#"{"header":"authorization"}"#).unwrap();
        let list: ConsumerSource = serde_json::from_str(r#"{"header":["authorization","x-api-key"]}"#).unwrap();
        assert_eq!(one.header, Some(Headers(vec!["authorization".into()])));
        assert_eq!(list.header, Some(Headers(vec!["authorization".into(), "x-api-key".into()])));
        assert!(one.validate("q.").is_ok() && list.validate("q.").is_ok());
        for (json, error) in [
            (r#"{"header":[]}"#, "q.header: name 1 to 4 headers"),
            (r#"{"header":["a","b","c","d","e"]}"#, "q.header: name 1 to 4 headers"),
            (r#"{"header":["authorization","Cookie"]}"#, "q.header: 'Cookie' is not a lowercase header name"),
            (r#"{"header":["x-api-key","cookie"]}"#, "q.header: 'cookie' is not an identity"),
        ] {
            let source: ConsumerSource = serde_json::from_str(json).unwrap();
            assert_eq!(source.validate("q.").unwrap_err(), error, "{json}");
        }
        for json in [r#"{"header":5}"#, r#"{"header":["authorization",5]}"#, r#"{"header":{"name":"a"}}"#] {
            assert!(serde_json::from_str::<ConsumerSource>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn an_absent_section_means_the_same_as_an_empty_one() {
        let empty: ConsumerSource = serde_json::from_str("{}").unwrap();
        assert_eq!(ConsumerSource::default(), empty);
        assert!(empty.downstream_address);
    }
}
