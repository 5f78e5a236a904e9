//! AWS Bedrock Runtime backends: `POST /model/{modelId}/converse` (and `converse-stream`),
//! signed with AWS Signature Version 4 inside the filter.
//!
//! References: docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html and
//! _ConverseStream.html; docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
//! (SigV4). Canonical URI: every path segment URI-encoded — for services other than S3 the
//! path as sent is encoded once more, so a model id `anthropic.claude-3-5-haiku-20241022-v1:0`
//! is `…v1%3A0` on the wire and `…v1%253A0` in the canonical request, as AWS's SDKs do. The
//! signature covers `content-type`, `host`, `x-amz-date` (and `x-amz-security-token` with
//! temporary credentials) and the SHA-256 of the body.

use super::{Backend, Secret};
use crate::route::ApiKind;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// AWS credentials of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// RFC 3986 unreserved characters stay; everything else is `%XX` (uppercase), as SigV4 wants.
pub fn uri_encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xf));
        }
    }
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(hex_digit(b >> 4).to_ascii_lowercase());
        out.push(hex_digit(b & 0xf).to_ascii_lowercase());
    }
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The wire path of a Converse (or CountTokens) call: the model id percent-encoded into one
/// segment.
pub fn path(backend: &Backend, api: ApiKind, model: &str) -> Option<String> {
    let action = match api {
        ApiKind::BedrockConverse { stream: false } => "/converse",
        ApiKind::BedrockConverse { stream: true } => "/converse-stream",
        ApiKind::BedrockCountTokens => "/count-tokens",
        _ => return None,
    };
    if model.is_empty() || model == "." || model == ".." || model.len() > 2048 {
        return None; // `.`/`..` would survive encoding and walk the path
    }
    let mut path = String::with_capacity(model.len() + 32);
    path.push_str(&backend.base_path);
    path.push_str("/model/");
    uri_encode(model, &mut path);
    path.push_str(action);
    Some(path)
}

/// The canonical URI of a wire path: each segment encoded once more (not S3).
pub fn canonical_uri(wire_path: &str) -> String {
    let mut out = String::with_capacity(wire_path.len() + 16);
    for (i, segment) in wire_path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        uri_encode(segment, &mut out);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `YYYYMMDD'T'HHMMSS'Z'` for seconds since the epoch (civil-from-days, Howard Hinnant's).
pub fn amz_date(epoch_secs: u64) -> String {
    let days = (epoch_secs / 86_400) as i64;
    let secs = epoch_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// What a request is signed over.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (already percent-encoded), without the query.
    pub path: &'a str,
    /// The query string as sent (`a=1&b=2`), or "".
    pub query: &'a str,
    /// Headers to sign: lowercase names, trimmed values.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The `Authorization` header value for `request` (which must include `host` and `x-amz-date`).
pub fn authorization(
    credentials: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    request: &Request<'_>,
) -> String {
    let mut headers: Vec<(&str, &str)> = request.headers.to_vec();
    headers.sort_by(|a, b| a.0.cmp(b.0));
    let signed: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
    let signed = signed.join(";");
    let mut query: Vec<(&str, &str)> =
        request.query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut canonical = String::with_capacity(256 + request.path.len());
    canonical.push_str(request.method);
    canonical.push('\n');
    canonical.push_str(&canonical_uri(request.path));
    canonical.push('\n');
    canonical.push_str(&query.join("&"));
    canonical.push('\n');
    for (name, value) in &headers {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(value.trim());
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed);
    canonical.push('\n');
    canonical.push_str(&sha256_hex(request.body));
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical.as_bytes()));
    let secret = format!("AWS4{}", credentials.secret_access_key.expose());
    let key =
        [date, region, service, "aws4_request"].iter().fold(secret.into_bytes(), |k, part| hmac(&k, part.as_bytes()));
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        credentials.access_key_id.expose()
    )
}

/// The headers that sign a Converse call of `body` to `path` on `backend` at `epoch_secs`.
pub fn signed_headers(backend: &Backend, path: &str, body: &[u8], epoch_secs: u64) -> Vec<(&'static str, String)> {
    let Some(credentials) = &backend.aws else { return Vec::new() };
    let host = backend.host.as_deref().unwrap_or("");
    let date = amz_date(epoch_secs);
    let mut headers = vec![("content-type", "application/json"), ("host", host), ("x-amz-date", date.as_str())];
    if let Some(token) = &credentials.session_token {
        headers.push(("x-amz-security-token", token.expose()));
    }
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let request = Request { method: "POST", path, query, headers: &headers, body };
    let authorization = authorization(credentials, &backend.region, "bedrock", &date, &request);
    let mut out = vec![("x-amz-date", date.clone()), ("authorization", authorization)];
    if let Some(token) = &credentials.session_token {
        out.push(("x-amz-security-token", token.expose().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        Credentials {
            access_key_id: Secret("AKIDEXAMPLE".into()),
            secret_access_key: Secret("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: None,
        }
    }

    fn sign(method: &str, path: &str, query: &str, body: &[u8]) -> String {
        let headers = [("host", "example.amazonaws.com"), ("x-amz-date", "20150830T123600Z")];
        let request = Request { method, path, query, headers: &headers, body };
        authorization(&example(), "us-east-1", "service", "20150830T123600Z", &request)
    }

    /// AWS's published SigV4 test suite (aws-sig-v4-test-suite): get-vanilla,
    /// get-vanilla-query-order-key-case, post-vanilla and get-utf8.
    #[test]
    fn matches_the_aws_sigv4_test_suite() {
        let prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                      SignedHeaders=host;x-amz-date, Signature=";
        for (method, path, query, signature) in [
            ("GET", "/", "", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
            (
                "GET",
                "/",
                "Param2=value2&Param1=value1",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            ("POST", "/", "", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
            ("GET", "/\u{1234}", "", "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
        ] {
            assert_eq!(sign(method, path, query, b""), format!("{prefix}{signature}"), "{method} {path}?{query}");
        }
    }

    #[test]
    fn model_ids_are_encoded_once_on_the_wire_and_twice_when_signed() {
        let mut wire = String::new();
        uri_encode("anthropic.claude-3-5-haiku-20241022-v1:0", &mut wire);
        assert_eq!(wire, "anthropic.claude-3-5-haiku-20241022-v1%3A0");
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"),
            "/model/anthropic.claude-3-5-haiku-20241022-v1%253A0/converse"
        );
        let mut arn = String::new();
        uri_encode("arn:aws:bedrock:us-east-1:123:inference-profile/us.x", &mut arn);
        assert_eq!(
            arn, "arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.x",
            "a `/` cannot split the path"
        );
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(1_798_761_599), "20261231T235959Z");
    }
}
