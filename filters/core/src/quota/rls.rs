//! Envoy's rate-limit service protocol (RLS v3), the few messages the quota stage needs, and the
//! `X-RateLimit-*` draft-03 headers rate-limit services answer with.
//!
//! Hand-encoded protobuf: `RateLimitRequest` (domain = 1, descriptors = 2, hits_addend = 3) with
//! `RateLimitDescriptor` (entries = 1 of `Entry{key = 1, value = 2}`, hits_addend = 3 as
//! `UInt64Value`, is_negative_hits = 4) and `RateLimitResponse` (overall_code = 1, statuses = 2,
//! response_headers_to_add = 3). Decoding never panics: malformed input is an error.
//!
//! The same request message goes to `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`
//! and to Kuadrant's `kuadrant.service.ratelimit.v1.RateLimitService/{CheckRateLimit,Report}`.

pub const RLS_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const SHOULD_RATE_LIMIT: &str = "ShouldRateLimit";
pub const KUADRANT_SERVICE: &str = "kuadrant.service.ratelimit.v1.RateLimitService";
pub const CHECK_RATE_LIMIT: &str = "CheckRateLimit";
pub const REPORT: &str = "Report";

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown,
    Ok,
    OverLimit,
}

impl Code {
    fn from(value: u64) -> Code {
        match value {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
}

/// One descriptor status of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    /// `current_limit.name` (our limit name when the service's configuration sets it).
    pub name: String,
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub overall: Code,
    pub statuses: Vec<Status>,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field) << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_uint(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_varint(out, u64::from(field) << 3);
        put_varint(out, value);
    }
}

/// One descriptor: its entries, in order.
pub type Descriptor<'a> = &'a [(&'a str, &'a str)];

/// A `RateLimitRequest` with a request-level `hits_addend` (what Limitador honours).
pub fn encode_request(domain: &str, descriptors: &[Descriptor<'_>], hits_addend: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + descriptors.len() * 48);
    put_bytes(&mut out, 1, domain.as_bytes());
    let mut descriptor = Vec::with_capacity(64);
    let mut entry = Vec::with_capacity(48);
    for entries in descriptors {
        descriptor.clear();
        for (key, value) in entries.iter() {
            entry.clear();
            put_bytes(&mut entry, 1, key.as_bytes());
            put_bytes(&mut entry, 2, value.as_bytes());
            put_bytes(&mut descriptor, 1, &entry);
        }
        put_bytes(&mut out, 2, &descriptor);
    }
    put_uint(&mut out, 3, u64::from(hits_addend));
    out
}

/// Reads a protobuf message as `(field, wire type, value)` triples; `value` is the varint, or
/// the bytes of a length-delimited field. Errors on anything truncated or malformed.
struct Fields<'a> {
    buf: &'a [u8],
    at: usize,
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.at).ok_or(DecodeError)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError)
    }

    fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.buf.len()).ok_or(DecodeError)?;
        self.at = end;
        Ok(())
    }

    fn next(&mut self) -> Option<Result<(u64, Value<'a>), DecodeError>> {
        if self.at >= self.buf.len() {
            return None;
        }
        Some(self.field())
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), DecodeError> {
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err(DecodeError);
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| DecodeError)?;
                let start = self.at;
                self.skip(len)?;
                Value::Bytes(self.buf.get(start..self.at).ok_or(DecodeError)?)
            }
            5 => {
                self.skip(4)?;
                Value::Fixed
            }
            _ => return Err(DecodeError),
        };
        Ok((number, value))
    }
}

/// Whether `bytes` parses as a protobuf message. Envoy's `dispatch_grpc_call` treats its target
/// as a serialized `GrpcService` when it parses as one, and as a cluster name otherwise; a
/// cluster name that happens to parse would be misread, so configuration refuses it.
pub fn parses_as_message(bytes: &[u8]) -> bool {
    let mut fields = Fields::new(bytes);
    while let Some(field) = fields.next() {
        if field.is_err() {
            return false;
        }
    }
    true
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn clamp32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// A decoded `RateLimitRequest` (for tests and tools): domain, descriptors' entries and the
/// request-level `hits_addend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub domain: String,
    pub descriptors: Vec<Vec<(String, String)>>,
    pub hits_addend: u64,
}

pub fn decode_request(buf: &[u8]) -> Result<Request, DecodeError> {
    let mut request = Request { domain: String::new(), descriptors: Vec::new(), hits_addend: 0 };
    let mut fields = Fields::new(buf);
    while let Some(field) = fields.next() {
        match field? {
            (1, Value::Bytes(domain)) => request.domain = text(domain),
            (2, Value::Bytes(descriptor)) => {
                let mut entries = Vec::new();
                let mut inner = Fields::new(descriptor);
                while let Some(field) = inner.next() {
                    if let (1, Value::Bytes(entry)) = field? {
                        let (mut key, mut value) = (String::new(), String::new());
                        let mut pair = Fields::new(entry);
                        while let Some(field) = pair.next() {
                            match field? {
                                (1, Value::Bytes(k)) => key = text(k),
                                (2, Value::Bytes(v)) => value = text(v),
                                _ => {}
                            }
                        }
                        entries.push((key, value));
                    }
                }
                request.descriptors.push(entries);
            }
            (3, Value::Varint(hits)) => request.hits_addend = hits,
            _ => {}
        }
    }
    Ok(request)
}

/// Encodes a response (for tests and tools): overall code, statuses, headers.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let code = |c: Code| match c {
        Code::Unknown => 0,
        Code::Ok => 1,
        Code::OverLimit => 2,
    };
    let mut out = Vec::new();
    put_uint(&mut out, 1, code(response.overall));
    for status in &response.statuses {
        let mut limit = Vec::new();
        put_uint(&mut limit, 1, u64::from(status.limit));
        put_bytes(&mut limit, 3, status.name.as_bytes());
        let mut duration = Vec::new();
        put_uint(&mut duration, 1, status.reset_secs);
        let mut body = Vec::new();
        put_uint(&mut body, 1, code(status.code));
        put_bytes(&mut body, 2, &limit);
        put_uint(&mut body, 3, u64::from(status.remaining));
        put_bytes(&mut body, 4, &duration);
        put_bytes(&mut out, 2, &body);
    }
    for (key, value) in &response.headers {
        let mut header = Vec::new();
        put_bytes(&mut header, 1, key.as_bytes());
        put_bytes(&mut header, 2, value.as_bytes());
        put_bytes(&mut out, 3, &header);
    }
    out
}

pub fn decode_response(buf: &[u8]) -> Result<Response, DecodeError> {
    let mut response = Response { overall: Code::Unknown, statuses: Vec::new(), headers: Vec::new() };
    let mut fields = Fields::new(buf);
    while let Some(field) = fields.next() {
        match field? {
            (1, Value::Varint(code)) => response.overall = Code::from(code),
            (2, Value::Bytes(status)) => response.statuses.push(decode_status(status)?),
            (3, Value::Bytes(header)) => {
                let (mut key, mut value) = (String::new(), String::new());
                let mut inner = Fields::new(header);
                while let Some(field) = inner.next() {
                    match field? {
                        (1, Value::Bytes(k)) => key = text(k),
                        (2 | 3, Value::Bytes(v)) => value = text(v), // value, or raw_value
                        _ => {}
                    }
                }
                response.headers.push((key, value));
            }
            _ => {}
        }
    }
    Ok(response)
}

fn decode_status(buf: &[u8]) -> Result<Status, DecodeError> {
    let mut status = Status { code: Code::Unknown, name: String::new(), limit: 0, remaining: 0, reset_secs: 0 };
    let mut fields = Fields::new(buf);
    while let Some(field) = fields.next() {
        match field? {
            (1, Value::Varint(code)) => status.code = Code::from(code),
            (2, Value::Bytes(limit)) => {
                let mut inner = Fields::new(limit);
                while let Some(field) = inner.next() {
                    match field? {
                        (1, Value::Varint(n)) => status.limit = clamp32(n),
                        (3, Value::Bytes(name)) => status.name = text(name),
                        _ => {}
                    }
                }
            }
            (3, Value::Varint(n)) => status.remaining = clamp32(n),
            (4, Value::Bytes(duration)) => {
                let mut inner = Fields::new(duration);
                while let Some(field) = inner.next() {
                    if let (1, Value::Varint(seconds)) = field? {
                        status.reset_secs = seconds;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(status)
}

/// The draft-03 `X-RateLimit-*` headers of the tightest limit, as Envoy's rate-limit filter
/// (`enable_x_ratelimit_headers: DRAFT_VERSION_03`) and Limitador write them:
/// `X-RateLimit-Limit: 100, 100;w=60;name="tpm"`, `X-RateLimit-Remaining: 40`,
/// `X-RateLimit-Reset: 38`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft03 {
    pub limit: u64,
    /// `name="…"` of the limit's quota policy, if the service named it.
    pub name: Option<String>,
    pub remaining: u64,
    pub reset_secs: u64,
}

impl Draft03 {
    /// From the three header values; `None` unless all three are there and numeric. The limit
    /// header is the tightest limit, then one quota policy per limit (`N;w=S;name="…"`): the
    /// name is that of the first policy with the tightest limit's value.
    pub fn parse(limit: &str, remaining: &str, reset: &str) -> Option<Draft03> {
        let mut items = limit.split(',');
        let tightest: u64 = items.next()?.trim().parse().ok()?;
        let name = items.find_map(|policy| {
            let mut parts = policy.split(';');
            let value: u64 = parts.next()?.trim().parse().ok()?;
            if value != tightest {
                return None;
            }
            parts.find_map(|p| Some(p.trim().strip_prefix("name=")?.trim_matches('"').to_string()))
        });
        Some(Draft03 {
            limit: tightest,
            name: name.filter(|n| !n.is_empty()),
            remaining: remaining.trim().parse().ok()?,
            reset_secs: reset.trim().parse().ok()?,
        })
    }

    /// From the headers of an RLS response (case-insensitive names).
    pub fn from_headers(headers: &[(String, String)]) -> Option<Draft03> {
        let get = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        Draft03::parse(get("x-ratelimit-limit")?, get("x-ratelimit-remaining")?, get("x-ratelimit-reset")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of a response as an RLS writes them (built field by field, like the test peer).
    fn response_bytes() -> Vec<u8> {
        let mut limit = Vec::new();
        put_uint(&mut limit, 1, 1000);
        put_uint(&mut limit, 2, 2);
        put_bytes(&mut limit, 3, b"tpm");
        let mut duration = Vec::new();
        put_uint(&mut duration, 1, 42);
        let mut status = Vec::new();
        put_uint(&mut status, 1, 2);
        put_bytes(&mut status, 2, &limit);
        put_uint(&mut status, 3, 7);
        put_bytes(&mut status, 4, &duration);
        let mut header = Vec::new();
        put_bytes(&mut header, 1, b"X-RateLimit-Remaining");
        put_bytes(&mut header, 2, b"7");
        let mut out = Vec::new();
        put_uint(&mut out, 1, 2);
        put_bytes(&mut out, 2, &status);
        put_bytes(&mut out, 3, &header);
        out
    }

    #[test]
    fn request_encoding_matches_the_wire_format() {
        let bytes = encode_request("tollgate", &[&[("limit", "tpm"), ("consumer", "k:ab")]], 300);
        // domain, then one descriptor with two entries, then hits_addend = 300 (0xac 0x02).
        let mut expected = vec![0x0a, 8];
        expected.extend_from_slice(b"tollgate");
        expected.extend_from_slice(&[0x12, 32, 0x0a, 12, 0x0a, 5]);
        expected.extend_from_slice(b"limit");
        expected.extend_from_slice(&[0x12, 3]);
        expected.extend_from_slice(b"tpm");
        expected.extend_from_slice(&[0x0a, 16, 0x0a, 8]);
        expected.extend_from_slice(b"consumer");
        expected.extend_from_slice(&[0x12, 4]);
        expected.extend_from_slice(b"k:ab");
        expected.extend_from_slice(&[0x18, 0xac, 0x02]);
        assert_eq!(bytes, expected);
        // hits_addend 0 is omitted (proto3 default)
        assert!(!encode_request("d", &[&[("a", "b")]], 0).ends_with(&[0x18, 0]));
    }

    #[test]
    fn responses_decode_statuses_and_headers() {
        let response = decode_response(&response_bytes()).unwrap();
        assert_eq!(response.overall, Code::OverLimit);
        assert_eq!(
            response.statuses,
            vec![Status { code: Code::OverLimit, name: "tpm".into(), limit: 1000, remaining: 7, reset_secs: 42 }]
        );
        assert_eq!(response.headers, vec![("X-RateLimit-Remaining".into(), "7".into())]);
        assert_eq!(decode_response(&[]).unwrap().overall, Code::Unknown);
    }

    #[test]
    fn truncated_or_malformed_responses_are_errors_at_every_length() {
        let bytes = response_bytes();
        for cut in 1..bytes.len() {
            // Every prefix either decodes (a cut between fields) or is an error; never a panic.
            let _ = decode_response(&bytes[..cut]);
        }
        assert!(decode_response(&[0x12, 0x05, 0x08]).is_err(), "length past the end");
        assert!(decode_response(&[0x0f]).is_err(), "wire type 7");
        assert!(decode_response(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let bytes = encode_request("d", &[&[("limit", "tpm"), ("consumer", "c")], &[("limit", "rpm")]], 7);
        let request = decode_request(&bytes).unwrap();
        assert_eq!(request.domain, "d");
        assert_eq!(request.hits_addend, 7);
        assert_eq!(request.descriptors[0], vec![("limit".into(), "tpm".into()), ("consumer".into(), "c".into())]);
        let response = decode_response(&response_bytes()).unwrap();
        assert_eq!(decode_response(&encode_response(&response)).unwrap(), response);
    }

    #[test]
    fn draft03_headers_parse_with_and_without_a_name() {
        let d = Draft03::parse("100, 100;w=60;name=\"tpm\"", "40", "38").unwrap();
        assert_eq!(d, Draft03 { limit: 100, name: Some("tpm".into()), remaining: 40, reset_secs: 38 });
        assert_eq!(Draft03::parse("5, 5;w=1", "0", "1").unwrap().name, None);
        // Several limits: the first number is the tightest; its policy names it.
        let several = "100000, 5000;w=3600;name=\"tph\", 100000;w=3600;name=\"rph\"";
        assert_eq!(Draft03::parse(several, "99990", "9").unwrap().name.as_deref(), Some("rph"));
        assert!(Draft03::parse("x", "1", "1").is_none());
        let headers = vec![
            ("X-RateLimit-Limit".to_string(), "10".to_string()),
            ("x-ratelimit-remaining".to_string(), "3".to_string()),
            ("X-RATELIMIT-RESET".to_string(), "9".to_string()),
        ];
        assert_eq!(Draft03::from_headers(&headers).unwrap().remaining, 3);
    }

    #[test]
    fn cluster_names_that_parse_as_protobuf_are_detected() {
        assert!(!parses_as_message(b"rls"));
        assert!(!parses_as_message(b"ratelimit"));
        // 'a' = field 12, fixed64: any 9-byte name starting with 'a' parses.
        assert!(parses_as_message(b"a12345678"));
    }
}
