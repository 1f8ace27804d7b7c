//! The rewriter against frames built here and decoded by a fresh HPACK
//! decoder, as `h2` would see them.

use loona_hpack::{Decoder, Encoder};

use super::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn request_headers(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (b":method".to_vec(), b"POST".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
        (
            b":path".to_vec(),
            b"/SpiffeWorkloadAPI/FetchJWTSVID".to_vec(),
        ),
        (b":authority".to_vec(), authority.to_vec()),
        (b"content-type".to_vec(), b"application/grpc".to_vec()),
        (b"workload.spiffe.io".to_vec(), b"true".to_vec()),
    ]
}

fn encode(enc: &mut Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    enc.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

/// Splits `out` into frames: (type, flags, stream, payload).
fn frames(mut out: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut list = Vec::new();
    while out.len() >= 9 {
        let h = FrameHeader::parse(&out[..9]);
        list.push((h.kind, h.flags, h.stream_id, out[9..9 + h.len].to_vec()));
        out = &out[9 + h.len..];
    }
    assert!(out.is_empty(), "trailing bytes");
    list
}

/// Decodes the header blocks of `out` (after the preface) with `dec`.
fn decoded_blocks(dec: &mut Decoder<'_>, out: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    assert!(out.starts_with(PREFACE));
    let mut blocks = Vec::new();
    let mut block = Vec::new();
    for (kind, flags, _, payload) in frames(&out[PREFACE.len()..]) {
        if kind == TYPE_HEADERS || kind == TYPE_CONTINUATION {
            let body = if kind == TYPE_HEADERS && flags & FLAG_PRIORITY != 0 {
                &payload[5..]
            } else {
                &payload[..]
            };
            assert_eq!(flags & FLAG_PADDED, 0, "padding is stripped");
            assert!(body.len() <= MAX_FRAME_SIZE);
            block.extend_from_slice(body);
            if flags & FLAG_END_HEADERS != 0 {
                blocks.push(dec.decode(&block).expect("h2 decodes the rewritten block"));
                block.clear();
            }
        }
    }
    blocks
}

fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    block
        .iter()
        .find(|(n, _)| n == b":authority")
        .map(|(_, v)| v.clone())
        .expect(":authority present")
}

#[test]
fn authorities_seen_in_the_wild_become_acceptable() {
    let cases: [(&[u8], &[u8]); 5] = [
        (b"localhost", b"localhost"),
        (b"%2Frun%2Flanyard%2Fworkload.sock", REPLACEMENT_AUTHORITY),
        (b"/run/lanyard/workload.sock", REPLACEMENT_AUTHORITY),
        (b"", REPLACEMENT_AUTHORITY),
        (b"unix:%2Ftmp%2Fx", REPLACEMENT_AUTHORITY),
    ];
    for (sent, expected) in cases {
        let mut enc = Encoder::new();
        let block = encode(&mut enc, &request_headers(sent));
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        assert_eq!(rw.feed(&input, &mut out), Ok(()));
        let blocks = decoded_blocks(&mut Decoder::new(), &out);
        assert_eq!(blocks.len(), 1);
        assert_eq!(authority(&blocks[0]), expected, "sent {sent:?}");
        // Everything else as sent, in order.
        let mut want = request_headers(sent);
        want[3].1 = expected.to_vec();
        assert_eq!(blocks[0], want);
    }
}

#[test]
fn the_clients_dynamic_table_is_followed_across_blocks() {
    // The second request refers to entries the first one added; h2 (a fresh
    // decoder that only ever sees the rewritten blocks) must still decode it.
    let mut enc = Encoder::new();
    let sent = request_headers(b"%2Ftmp%2Fa.sock");
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        1,
        &encode(&mut enc, &sent),
    ));
    let second = encode(&mut enc, &sent);
    assert!(
        Decoder::new().decode(&second).is_err(),
        "the second block refers to the client's dynamic table"
    );
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        3,
        &second,
    ));
    let mut rw = AuthorityRewriter::new();
    let mut out = Vec::new();
    rw.feed(&input, &mut out).expect("rewritten");
    let blocks = decoded_blocks(&mut Decoder::new(), &out);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0], blocks[1]);
    assert_eq!(authority(&blocks[1]), REPLACEMENT_AUTHORITY);
    let f = frames(&out[PREFACE.len()..]);
    assert_eq!(f[1].1 & FLAG_END_STREAM, FLAG_END_STREAM, "END_STREAM kept");
    assert_eq!(f[1].2, 3, "stream id kept");
}

#[test]
fn continuation_padding_and_priority_are_handled_byte_by_byte() {
    let mut enc = Encoder::new();
    let mut headers = request_headers(b"%2Frun%2Fx.sock");
    headers.push((b"x-big".to_vec(), vec![b'a'; 3000]));
    let block = encode(&mut enc, &headers);
    // HEADERS (padded, with priority) + 40 CONTINUATION frames.
    let (first, rest) = block.split_at(10);
    let mut payload = vec![4u8];
    payload.extend_from_slice(&[0x80, 0, 0, 0, 16]);
    payload.extend_from_slice(first);
    payload.extend_from_slice(&[0; 4]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY,
        5,
        &payload,
    ));
    let chunks: Vec<&[u8]> = rest.chunks(rest.len() / 40 + 1).collect();
    for (i, c) in chunks.iter().enumerate() {
        let flags = if i + 1 == chunks.len() {
            FLAG_END_HEADERS
        } else {
            0
        };
        input.extend(frame(TYPE_CONTINUATION, flags, 5, c));
    }
    // A DATA frame after it goes through unchanged.
    let data = frame(0x0, 0x1, 5, b"\0\0\0\0\0");
    input.extend_from_slice(&data);
    let mut rw = AuthorityRewriter::new();
    let mut out = Vec::new();
    for b in &input {
        rw.feed(std::slice::from_ref(b), &mut out)
            .expect("byte by byte");
    }
    let blocks = decoded_blocks(&mut Decoder::new(), &out);
    assert_eq!(blocks.len(), 1);
    assert_eq!(authority(&blocks[0]), REPLACEMENT_AUTHORITY);
    assert_eq!(blocks[0].last(), headers.last());
    let f = frames(&out[PREFACE.len()..]);
    assert_eq!(f[0].1 & FLAG_PRIORITY, FLAG_PRIORITY);
    assert_eq!(&f[0].3[..5], &[0x80, 0, 0, 0, 16], "priority kept");
    assert!(out.ends_with(&data));
}

#[test]
fn a_block_larger_than_one_frame_is_split() {
    let mut enc = Encoder::new();
    let mut headers = request_headers(b"");
    // Literal re-encoding can grow a block: make it need several frames.
    for i in 0..5 {
        headers.push((format!("x-h{i}").into_bytes(), vec![b'v'; 5000]));
    }
    let block = encode(&mut enc, &headers);
    let mut input = PREFACE.to_vec();
    let (a, b) = block.split_at(MAX_FRAME_SIZE);
    input.extend(frame(TYPE_HEADERS, 0, 1, a));
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b));
    let mut rw = AuthorityRewriter::new();
    let mut out = Vec::new();
    rw.feed(&input, &mut out).expect("rewritten");
    let f = frames(&out[PREFACE.len()..]);
    assert!(f.len() >= 2);
    assert!(f.iter().all(|(_, _, _, p)| p.len() <= MAX_FRAME_SIZE));
    let blocks = decoded_blocks(&mut Decoder::new(), &out);
    assert_eq!(authority(&blocks[0]), REPLACEMENT_AUTHORITY);
}

#[test]
fn an_endless_continuation_flood_closes_the_connection() {
    let mut rw = AuthorityRewriter::new();
    let mut out = Vec::new();
    let mut input = PREFACE.to_vec();
    input.extend(frame(TYPE_HEADERS, 0, 1, &[0x82]));
    rw.feed(&input, &mut out).expect("first frame");
    let cont = frame(TYPE_CONTINUATION, 0, 1, &[0x40; 1000]);
    let mut result = Ok(());
    for _ in 0..100 {
        result = rw.feed(&cont, &mut out);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(FrontError::HeaderBlockTooLarge));
    assert_eq!(
        rw.feed(b"more", &mut out),
        Err(FrontError::HeaderBlockTooLarge)
    );
}

#[test]
fn protocol_errors_are_left_to_h2_unchanged() {
    // CONTINUATION of another stream in the middle of a block.
    let mut input = PREFACE.to_vec();
    let headers = frame(TYPE_HEADERS, 0, 1, &[0x82]);
    let stray = frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &[0x84]);
    input.extend_from_slice(&headers);
    input.extend_from_slice(&stray);
    input.extend_from_slice(b"anything after");
    let mut rw = AuthorityRewriter::new();
    let mut out = Vec::new();
    rw.feed(&input, &mut out).expect("passed on");
    assert_eq!(out, input);
    assert!(rw.is_passthrough());

    // A bad preface, an oversized frame, an undecodable block.
    let cases = [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        [PREFACE.as_slice(), &[0x01, 0x00, 0x00, 0x00, 0, 0, 0, 0, 1]].concat(),
        [
            PREFACE.as_slice(),
            &frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0xff, 0xff]),
        ]
        .concat(),
        [
            PREFACE.as_slice(),
            &frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &[9, 0x82]),
        ]
        .concat(),
        // issue 10 (fuzz): a client's PUSH_PROMISE, whose block h2 decodes
        // with its own table before closing the connection.
        [
            PREFACE.as_slice(),
            &frame(0x5, FLAG_END_HEADERS, 1, &[0, 0, 0, 2, 0xbe]),
        ]
        .concat(),
    ];
    for input in cases {
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        rw.feed(&input, &mut out).expect("passed on");
        assert_eq!(out, input);
        assert!(rw.is_passthrough());
    }
}

#[test]
fn acceptable_blocks_go_through_byte_for_byte() {
    // issue 10 (speed): no re-encoding while every authority is acceptable,
    // padding and priority included.
    let mut enc = Encoder::new();
    let mut input = PREFACE.to_vec();
    let first = encode(&mut enc, &request_headers(b"localhost"));
    let mut padded = vec![3u8];
    padded.extend_from_slice(&[0x80, 0, 0, 0, 16]);
    padded.extend_from_slice(&first);
    padded.extend_from_slice(&[0; 3]);
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
        1,
        &padded,
    ));
    // The second request refers to the dynamic table; split in two frames.
    let second = encode(&mut enc, &request_headers(b"localhost"));
    let (a, b) = second.split_at(2);
    input.extend(frame(TYPE_HEADERS, 0, 3, a));
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, b));
    input.extend(frame(0x0, 0x1, 3, b"\0\0\0\0\0"));
    let mut rw = AuthorityRewriter::new();
    let mut out = Vec::new();
    rw.feed(&input, &mut out).expect("verbatim");
    assert_eq!(out, input);
    assert!(!rw.is_rewriting());
}

#[test]
fn the_first_bad_authority_switches_the_connection_to_rewriting() {
    // Block 1 verbatim (it fills h2's table), block 2 with a bad authority
    // rewritten, block 3 (good again, referring to the client's table)
    // still rewritten: h2's table no longer follows the client's.
    let mut enc = Encoder::new();
    let mut input = PREFACE.to_vec();
    let sent = [
        request_headers(b"localhost"),
        request_headers(b"%2Frun%2Fx.sock"),
        request_headers(b"localhost"),
    ];
    for (i, h) in sent.iter().enumerate() {
        let block = encode(&mut enc, h);
        let stream = 1 + 2 * u32::try_from(i).expect("small");
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
    }
    let mut rw = AuthorityRewriter::new();
    let mut out = Vec::new();
    rw.feed(&input, &mut out).expect("rewritten");
    assert!(rw.is_rewriting());
    let blocks = decoded_blocks(&mut Decoder::new(), &out);
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[0], sent[0]);
    let mut fixed = sent[1].clone();
    fixed[3].1 = REPLACEMENT_AUTHORITY.to_vec();
    assert_eq!(blocks[1], fixed);
    assert_eq!(blocks[2], sent[2]);
}

#[test]
fn a_stream_depending_on_itself_switches_to_rewriting() {
    // h2 resets such a stream without decoding its block (so its table
    // misses what the block adds): from then on nothing may rely on it.
    let mut enc = Encoder::new();
    let sent = request_headers(b"localhost");
    let mut payload = vec![0, 0, 0, 1, 16];
    payload.extend(encode(&mut enc, &sent));
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_PRIORITY,
        1,
        &payload,
    ));
    // The next request refers to entries the reset one added.
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        3,
        &encode(&mut enc, &sent),
    ));
    let mut rw = AuthorityRewriter::new();
    let mut out = Vec::new();
    rw.feed(&input, &mut out).expect("rewritten");
    assert!(rw.is_rewriting());
    // A decoder that skips the first block (as h2 does) reads the second.
    let f = frames(&out[PREFACE.len()..]);
    let second = Decoder::new().decode(&f[1].3).expect("no table needed");
    assert_eq!(second, sent);
}

proptest::proptest! {
    /// Any bytes after the preface, in any split: no panic, the same output
    /// however the input is cut, every frame within the size limit.
    /// (fuzz/fuzz_targets/h2_front.rs explores the same property deeper.)
    #[test]
    fn never_panics_and_ignores_how_input_is_split(
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        cut in 1usize..64,
    ) {
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&body);
        let mut whole = AuthorityRewriter::new();
        let mut a = Vec::new();
        let ra = whole.feed(&input, &mut a);
        let mut parts = AuthorityRewriter::new();
        let mut b = Vec::new();
        let mut rb = Ok(());
        for chunk in input.chunks(cut) {
            rb = parts.feed(chunk, &mut b);
            if rb.is_err() {
                break;
            }
        }
        proptest::prop_assert_eq!(ra.is_err(), rb.is_err());
        if ra.is_ok() {
            proptest::prop_assert_eq!(&a, &b);
        }
    }

    /// Well-formed requests with random headers and any authority come out
    /// decodable by a fresh decoder, with a valid authority.
    #[test]
    fn random_requests_stay_decodable(
        auth in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        extra in proptest::collection::vec(("[a-z]{1,12}", "[ -~]{0,200}"), 0..20),
        split in 1usize..200,
    ) {
        let mut enc = Encoder::new();
        let mut headers = request_headers(&auth);
        headers.extend(extra.into_iter().map(|(n, v)| (n.into_bytes(), v.into_bytes())));
        let block = encode(&mut enc, &headers);
        let parts: Vec<&[u8]> = block.chunks(split).collect();
        let mut input = PREFACE.to_vec();
        for (i, p) in parts.iter().enumerate() {
            let last = if i + 1 == parts.len() { FLAG_END_HEADERS } else { 0 };
            let kind = if i == 0 { TYPE_HEADERS } else { TYPE_CONTINUATION };
            input.extend(frame(kind, last, 1, p));
        }
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        proptest::prop_assert!(rw.feed(&input, &mut out).is_ok());
        let blocks = decoded_blocks(&mut Decoder::new(), &out);
        proptest::prop_assert_eq!(blocks.len(), 1);
        proptest::prop_assert!(valid_authority(&authority(&blocks[0])));
    }
    /// Several requests on one connection, each authority good or bad:
    /// one decoder following the output (as h2 does) reads every request
    /// as sent, bad authorities replaced.
    #[test]
    fn mixed_authorities_on_one_connection_stay_in_step(
        requests in proptest::collection::vec(
            (0usize..4, proptest::collection::vec(("[a-z]{1,8}", "[ -~]{0,40}"), 0..4)), 1..8),
    ) {
        let authorities: [&[u8]; 4] = [b"localhost", b"%2Ftmp%2Fa.sock", b"", b"example:1"];
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        let mut want = Vec::new();
        for (i, (a, extra)) in requests.iter().enumerate() {
            let mut headers = request_headers(authorities[*a]);
            headers.extend(extra.iter().map(|(n, v)| (n.clone().into_bytes(), v.clone().into_bytes())));
            let block = encode(&mut enc, &headers);
            let stream = 1 + 2 * u32::try_from(i).expect("small");
            input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
            if !valid_authority(authorities[*a]) {
                headers[3].1 = REPLACEMENT_AUTHORITY.to_vec();
            }
            want.push(headers);
        }
        let mut rw = AuthorityRewriter::new();
        let mut out = Vec::new();
        proptest::prop_assert!(rw.feed(&input, &mut out).is_ok());
        proptest::prop_assert_eq!(decoded_blocks(&mut Decoder::new(), &out), want);
    }
}
