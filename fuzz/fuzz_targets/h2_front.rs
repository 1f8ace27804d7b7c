//! The agent's HTTP/2 front (`:authority` rewriting, issue 10) reads every
//! byte a local client sends before `h2` does: it must never panic, keep
//! its output frames within the frame size limit, and give the same output
//! however the input is split. The first byte picks where to split.
#![no_main]

use lanyard_agent::h2_front::{AuthorityRewriter, PREFACE};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    // Most inputs start with the preface, so the frame parser is reached.
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(body);
    let mut whole = AuthorityRewriter::new();
    let mut out_whole = Vec::new();
    let r_whole = whole.feed(&input, &mut out_whole);
    let mut pieces = AuthorityRewriter::new();
    let mut out_pieces = Vec::new();
    let mut r_pieces = Ok(());
    for chunk in input.chunks(usize::from(split).max(1)) {
        r_pieces = pieces.feed(chunk, &mut out_pieces);
        if r_pieces.is_err() {
            break;
        }
    }
    assert_eq!(r_whole.is_err(), r_pieces.is_err());
    if r_whole.is_ok() {
        assert_eq!(out_whole, out_pieces);
    }
});
