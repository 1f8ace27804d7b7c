//! The RFC 8693 token request parser (`application/x-www-form-urlencoded`
//! from any caller) must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lanyard_server::exchange::parse_form(data);
});
