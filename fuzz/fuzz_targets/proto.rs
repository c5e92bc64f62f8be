#![no_main]

libfuzzer_sys::fuzz_target!(
    init: earmark_fuzz::init("proto"),
    |data: &[u8]| earmark_fuzz::proto(data)
);
