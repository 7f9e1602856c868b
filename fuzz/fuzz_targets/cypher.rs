//! libFuzzer entry for the `cypher` target; the body is `feedgraph_fuzz::cypher`, which
//! tests/fuzz_corpus.rs also replays on every corpus and regression file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| feedgraph_fuzz::cypher(data));
