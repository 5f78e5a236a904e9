//! What `tollgate schema --write` generates, shared with the test that keeps the committed
//! files equal to it.

/// The files generated for `filter`, as (path relative to the repository root, contents): its
/// JSON Schema, and its README with the configuration table regenerated.
pub fn generated(filter: &str) -> Option<Vec<(String, String)>> {
    let schema = tollgate_core::schema::filter_schema(filter)?;
    let schema_text = serde_json::to_string_pretty(&schema).ok()? + "\n";
    let readme = format!("filters/{filter}/README.md");
    let page = std::fs::read_to_string(&readme).ok()?;
    let page = tollgate_core::schema::splice_table(&page, &tollgate_core::schema::markdown(filter)?)?;
    Some(vec![(format!("schemas/{filter}.schema.json"), schema_text), (readme, page)])
}
