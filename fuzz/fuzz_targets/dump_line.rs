//! libFuzzer entry for the `dump_line` target; the body is `feedgraph_fuzz::dump_line`, which
//! tests/fuzz_corpus.rs also replays on every corpus and regression file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| feedgraph_fuzz::dump_line(data));
