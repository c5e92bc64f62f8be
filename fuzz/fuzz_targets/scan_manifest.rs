#![no_main]

libfuzzer_sys::fuzz_target!(
    init: earmark_fuzz::init("scan_manifest"),
    |data: &[u8]| earmark_fuzz::scan_manifest(data)
);
