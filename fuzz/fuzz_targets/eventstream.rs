//! AWS event-stream decoder: any bytes (CRCs mostly wrong, lengths hostile): no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::eventstream::EventStreamDecoder;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    let mut decoder = EventStreamDecoder::new(64 * 1024);
    for part in [&data[..cut], &data[cut..]] {
        if decoder.push(part).is_err() {
            return;
        }
        while let Some(message) = decoder.next_message() {
            match message {
                Ok(m) => {
                    let _ = m.headers().count();
                    let _ = m.header_str(":event-type");
                }
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});
