//! The committed JSON Schemas and README configuration tables are what the configuration types
//! generate today: a field added, renamed or re-documented without `tollgate schema --write`
//! fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[test]
fn committed_schemas_and_tables_match_the_config_types() {
    // Tests run in the crate's directory; the paths are the repository's.
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap();
    let mut stale = Vec::new();
    for (filter, _) in tollgate_core::schema::FILTERS {
        for (path, expected) in tollgate_cli::generated(filter).unwrap() {
            let committed = std::fs::read_to_string(&path).unwrap();
            if committed != expected {
                let line = committed.lines().zip(expected.lines()).position(|(a, b)| a != b);
                let show = |text: &str| line.and_then(|l| text.lines().nth(l)).unwrap_or("(length)").to_string();
                stale.push(format!("{path}: committed `{}`, generated `{}`", show(&committed), show(&expected)));
            }
        }
    }
    assert!(stale.is_empty(), "stale (run `cargo run -p tollgate-cli -- schema --write`): {stale:?}");
}
