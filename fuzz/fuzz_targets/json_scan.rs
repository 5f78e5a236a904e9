//! JSON path scanner: any bytes, as one document and cut in two at a fuzzer-chosen point: no
//! panic, and `scan_document` (serde_json's fast path, the lexer where it refuses) always equals
//! the byte-at-a-time lexer fed the same bytes in two pushes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::json_scan::{scan_document, JsonScanner};

const TARGETS: &[&[&str]] = &[&["usage"], &["model"], &["message", "usage"], &["choices"]];

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    let whole = scan_document(TARGETS, data);
    let mut lexer = JsonScanner::new(TARGETS);
    let split = lexer
        .push(&data[..cut])
        .and_then(|()| lexer.push(&data[cut..]))
        .and_then(|()| lexer.finish())
        .map(|()| lexer.take_captured());
    assert_eq!(whole, split);
    let mut last = JsonScanner::new(TARGETS);
    let pushed_last = last.push_last(data).and_then(|()| last.finish()).map(|()| last.take_captured());
    assert_eq!(pushed_last, split);
});
