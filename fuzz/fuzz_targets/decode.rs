#![no_main]

libfuzzer_sys::fuzz_target!(
    init: earmark_fuzz::init("decode"),
    |data: &[u8]| earmark_fuzz::decode(data)
);
