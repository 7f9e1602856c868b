//! libFuzzer entry for the `request_body` target; the body is `feedgraph_fuzz::request_body`, which
//! tests/fuzz_corpus.rs also replays on every corpus and regression file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| feedgraph_fuzz::request_body(data));
