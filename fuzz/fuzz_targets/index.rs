#![no_main]

libfuzzer_sys::fuzz_target!(
    init: earmark_fuzz::init("index"),
    |data: &[u8]| earmark_fuzz::index(data)
);
