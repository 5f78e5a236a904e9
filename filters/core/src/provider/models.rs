//! The gateway's own answers to `GET /v1/models` and `GET /v1/models/{id}`, in the client's
//! dialect: OpenAI's `list` of `model` objects, or Anthropic's pages of `ModelInfo`
//! (`limit`, `after_id`, `before_id`; `has_more`, `first_id`, `last_id`).

use super::Kind;
use crate::error::{Dialect, Error};
use serde_json::{json, Value};

/// Anthropic's `created_at` when a release date is unknown (its reference allows the epoch).
const UNKNOWN_RELEASE: &str = "1970-01-01T00:00:00Z";
/// Anthropic's page size: 20 unless `limit` says otherwise, at most 1,000.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

fn object(dialect: Dialect, id: &str, kind: Kind) -> Value {
    match dialect {
        Dialect::OpenAi | Dialect::Google | Dialect::Aws => {
            json!({"id": id, "object": "model", "created": 0, "owned_by": kind.label()})
        }
        Dialect::Anthropic => {
            json!({"type": "model", "id": id, "display_name": id, "created_at": UNKNOWN_RELEASE})
        }
    }
}

/// One model's object.
pub fn model(dialect: Dialect, id: &str, kind: Kind) -> Vec<u8> {
    object(dialect, id, kind).to_string().into_bytes()
}

/// The list of `models`, sorted by id. OpenAI's list is whole; Anthropic's is one page, chosen by
/// the request's query string (a cursor need not be a listed id: ids sort, so "after x" is
/// well defined for any x).
pub fn list(dialect: Dialect, models: &[(&str, Kind)], query: &str) -> Result<Vec<u8>, Error> {
    if dialect == Dialect::OpenAi {
        let data: Vec<_> = models.iter().map(|&(id, kind)| object(dialect, id, kind)).collect();
        return Ok(json!({"object": "list", "data": data}).to_string().into_bytes());
    }
    let (mut limit, mut after, mut before) = (DEFAULT_LIMIT, None, None);
    for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        let value = crate::route::percent_decode(value);
        match name {
            "limit" => {
                limit = value.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                    Error::invalid("limit", format!("'limit' must be an integer from 1 to {MAX_LIMIT}"))
                })?
            }
            "after_id" => after = Some(value),
            "before_id" => before = Some(value),
            _ => {}
        }
    }
    // Ids after `after_id`, before `before_id`; from `before_id` a page ends at the cursor.
    let start = after.as_deref().map_or(0, |a| models.partition_point(|(id, _)| *id <= a));
    let end = before.as_deref().map_or(models.len(), |b| models.partition_point(|(id, _)| *id < b)).max(start);
    let (from, to) = match before {
        Some(_) if after.is_none() => (end.saturating_sub(limit).max(start), end),
        _ => (start, end.min(start + limit)),
    };
    let page = models.get(from..to).unwrap_or_default();
    let has_more = if before.is_some() && after.is_none() { from > start } else { to < end };
    let data: Vec<_> = page.iter().map(|&(id, kind)| object(dialect, id, kind)).collect();
    Ok(json!({
        "data": data,
        "has_more": has_more,
        "first_id": page.first().map(|(id, _)| *id),
        "last_id": page.last().map(|(id, _)| *id),
    })
    .to_string()
    .into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn paging_forward_or_back_yields_every_model_once(n in 0usize..60, limit in 1usize..30, query in "[a-z_=&0-9%]{0,40}") {
            let names: Vec<String> = (0..n).map(|i| format!("m{i:03}")).collect();
            let models: Vec<(&str, Kind)> = names.iter().map(|m| (m.as_str(), Kind::Openai)).collect();
            // Any query: an answer or a 400, never a panic.
            if let Err(error) = list(Dialect::Anthropic, &models, &query) {
                prop_assert_eq!(error.status(), 400);
            }
            let (mut forward, mut cursor) = (Vec::new(), String::new());
            loop {
                let query = format!("limit={limit}{}", if cursor.is_empty() { String::new() } else { format!("&after_id={cursor}") });
                let (page, more, _, last) = ids(&list(Dialect::Anthropic, &models, &query).unwrap());
                prop_assert!(page.len() <= limit);
                forward.extend(page);
                if !more { break; }
                cursor = last.as_str().unwrap().to_string();
            }
            prop_assert_eq!(&forward, &names);
            let (mut back, mut cursor) = (Vec::new(), "z".to_string());
            loop {
                let (page, more, first, _) = ids(&list(Dialect::Anthropic, &models, &format!("limit={limit}&before_id={cursor}")).unwrap());
                back.splice(0..0, page);
                if !more { break; }
                cursor = first.as_str().unwrap().to_string();
            }
            prop_assert_eq!(&back, &names);
        }
    }

    fn ids(body: &[u8]) -> (Vec<String>, bool, Value, Value) {
        let v: Value = serde_json::from_slice(body).unwrap();
        let ids = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
        (ids, v["has_more"].as_bool().unwrap(), v["first_id"].clone(), v["last_id"].clone())
    }

    #[test]
    fn each_dialect_gets_its_own_objects() {
        let one: Value = serde_json::from_slice(&model(Dialect::OpenAi, "claude", Kind::Anthropic)).unwrap();
        assert_eq!(one, json!({"id": "claude", "object": "model", "created": 0, "owned_by": "anthropic"}));
        let one: Value = serde_json::from_slice(&model(Dialect::Anthropic, "gpt-4o", Kind::Azure)).unwrap();
        assert_eq!(
            one,
            json!({"type": "model", "id": "gpt-4o", "display_name": "gpt-4o", "created_at": "1970-01-01T00:00:00Z"})
        );
        let models = [("a", Kind::Openai), ("b", Kind::Gemini)];
        let all: Value = serde_json::from_slice(&list(Dialect::OpenAi, &models, "limit=1").unwrap()).unwrap();
        assert_eq!(all["object"], "list");
        assert_eq!(all["data"][1], json!({"id": "b", "object": "model", "created": 0, "owned_by": "gemini"}));
    }

    #[test]
    fn anthropic_pages_follow_limit_and_cursors() {
        let names: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
        let models: Vec<(&str, Kind)> = names.iter().map(|n| (n.as_str(), Kind::Anthropic)).collect();
        let page = |query: &str| ids(&list(Dialect::Anthropic, &models, query).unwrap());
        let (first, more, first_id, last_id) = page("");
        assert_eq!((first.len(), more, first_id, last_id), (20, true, json!("m00"), json!("m19")));
        let (rest, more, ..) = page("after_id=m19");
        assert_eq!(
            (rest, more),
            (vec!["m20", "m21", "m22", "m23", "m24"].into_iter().map(String::from).collect(), false)
        );
        assert_eq!(page("limit=2&after_id=m05").0, ["m06", "m07"]);
        assert_eq!(page("limit=2&after_id=m05x").0, ["m06", "m07"], "a cursor need not be listed");
        let (back, more, ..) = page("limit=3&before_id=m05");
        assert_eq!((back, more), (vec!["m02".to_string(), "m03".into(), "m04".into()], true));
        assert_eq!(page("before_id=m02"), (vec!["m00".to_string(), "m01".into()], false, json!("m00"), json!("m01")));
        assert_eq!(page("after_id=m10&before_id=m13").0, ["m11", "m12"]);
        assert_eq!(page("after_id=m24"), (vec![], false, Value::Null, Value::Null));
        assert_eq!(page("limit=1000").0.len(), 25);
        assert_eq!(page("limit=%32&after_id=m%305").0, ["m06", "m07"], "values are percent-decoded");
        for bad in ["limit=0", "limit=1001", "limit=x", "limit=-1"] {
            let error = list(Dialect::Anthropic, &models, bad).unwrap_err();
            assert_eq!(
                (error.status(), error.message()),
                (400, "'limit' must be an integer from 1 to 1000".into()),
                "{bad}"
            );
        }
    }
}
