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
    /// A credential header (an API key); only `k:` + 16 hex digits of a salted SHA-256 of its
    /// value is kept, never the key. `cookie` is refused.
    #[serde(default)]
    #[schemars(extend("examples" = ["authorization"]))]
    pub header: Option<String>,
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
        if let Some(header) = &self.header {
            if header.is_empty()
                || header.bytes().any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'))
            {
                return Err(format!("{prefix}header: '{header}' is not a lowercase header name"));
            }
            if CREDENTIAL_WITHOUT_HASH.contains(&header.as_str()) {
                return Err(format!("{prefix}header: '{header}' is not an identity"));
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
        if let Some(value) = self.header.as_ref().and_then(|h| host.request_header(h)).filter(|v| !v.is_empty()) {
            let salt = self.salt.as_deref().unwrap_or("");
            return Some(hashed_consumer(salt, value.trim()));
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
    fn an_absent_section_means_the_same_as_an_empty_one() {
        let empty: ConsumerSource = serde_json::from_str("{}").unwrap();
        assert_eq!(ConsumerSource::default(), empty);
        assert!(empty.downstream_address);
    }
}
