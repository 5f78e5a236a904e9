//! SSE decoder: any bytes, cut at a fuzzer-chosen point: no panic, bounded buffers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::sse::SseDecoder;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    let mut decoder = SseDecoder::new(4096);
    for part in [&data[..cut], &data[cut..]] {
        if decoder.push(part).is_err() {
            return;
        }
        while let Some(event) = decoder.next_event() {
            assert!(event.raw.len() <= 4096 + part.len() + 8);
        }
    }
    let _ = decoder.finish();
});
