#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hubferry::fuzzing::registry_path(data));
