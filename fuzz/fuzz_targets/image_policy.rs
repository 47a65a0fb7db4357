#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hubferry::fuzzing::image_policy(data));
