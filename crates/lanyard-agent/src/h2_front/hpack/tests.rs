//! The decoder against RFC 7541's examples and, differentially, against
//! `loona_hpack` (an independent decoder, test-only here).

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn fields(dec: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
    let mut out = Vec::new();
    dec.decode(block, |n, v| out.push((n.to_vec(), v.to_vec())))?;
    Ok(out)
}

fn pairs(list: &[(&str, &str)]) -> Fields {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Test-only Huffman encoder from the same canonical lengths.
fn huffman_encode(s: &[u8]) -> Vec<u8> {
    let mut codes = [(0u32, 0usize); 257];
    let (mut code, mut at) = (0u32, 0usize);
    for len in 1..=MAX_CODE_LEN {
        for _ in 0..CANONICAL.count[len] {
            codes[usize::from(CANONICAL.symbols[at])] = (code, len);
            code += 1;
            at += 1;
        }
        code <<= 1;
    }
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0usize);
    for &b in s {
        let (c, l) = codes[usize::from(b)];
        acc = (acc << l) | u64::from(c);
        bits += l;
        while bits >= 8 {
            out.push((acc >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
    out
}

#[test]
fn rfc7541_huffman_examples() {
    let cases = [
        ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
        ("a8eb 1064 9cbf", "no-cache"),
        ("25a8 49e9 5ba9 7d7f", "custom-key"),
        ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
        ("6402", "302"),
        ("aec3 771a 4b", "private"),
        (
            "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
            "Mon, 21 Oct 2013 20:13:21 GMT",
        ),
        (
            "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
            "https://www.example.com",
        ),
    ];
    for (code, text) in cases {
        assert_eq!(huffman_decode(&hex(code)), Ok(text.as_bytes().to_vec()));
        assert_eq!(huffman_encode(text.as_bytes()), hex(code));
    }
}

#[test]
fn bad_huffman_padding_and_eos_are_refused() {
    // "0" is 00000 (5 bits): padded with zeros instead of ones.
    assert_eq!(huffman_decode(&[0b0000_0000]), Err(HpackError::BadHuffman));
    // A full byte of ones is more than 7 bits of padding.
    assert_eq!(huffman_decode(&[0x07, 0xff]), Err(HpackError::BadHuffman));
    // EOS (30 ones) inside a string.
    assert_eq!(
        huffman_decode(&[0xff, 0xff, 0xff, 0xff]),
        Err(HpackError::BadHuffman)
    );
    assert_eq!(huffman_decode(&[]), Ok(Vec::new()));
}

#[test]
fn rfc7541_request_examples_with_the_dynamic_table() {
    // C.4: three requests on one connection, Huffman-coded.
    let mut dec = Decoder::new(4096);
    let first = pairs(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ]);
    assert_eq!(
        fields(&mut dec, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")),
        Ok(first.clone())
    );
    let mut second = first.clone();
    second.push((b"cache-control".to_vec(), b"no-cache".to_vec()));
    assert_eq!(
        fields(&mut dec, &hex("8286 84be 5886 a8eb 1064 9cbf")),
        Ok(second)
    );
    let third = pairs(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ]);
    assert_eq!(
        fields(
            &mut dec,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")
        ),
        Ok(third)
    );
    // Table now: custom-key, cache-control, :authority = 54 + 53 + 57.
    assert_eq!(dec.size, 164);
}

#[test]
fn the_static_table_is_rfc7541s() {
    for i in 1..=61u8 {
        let block = [0x80 | i];
        let ours = fields(&mut Decoder::new(4096), &block).expect("static index");
        let theirs = loona_hpack::Decoder::new()
            .decode(&block)
            .expect("static index");
        assert_eq!(ours, theirs, "index {i}");
    }
    assert_eq!(
        fields(&mut Decoder::new(4096), &[0x80]),
        Err(HpackError::BadIndex)
    );
    assert_eq!(
        fields(&mut Decoder::new(4096), &[0xbe]),
        Err(HpackError::BadIndex),
        "62 with an empty dynamic table"
    );
}

#[test]
fn size_updates_evict_and_are_bounded() {
    let mut dec = Decoder::new(4096);
    // Literal with indexing, new name "a" value "b": 34 bytes.
    let insert = [0x40, 0x01, b'a', 0x01, b'b'];
    fields(&mut dec, &insert).expect("insert");
    assert_eq!(dec.size, 34);
    // Size update to 0 evicts everything; then 4096 again is allowed.
    fields(&mut dec, &[0x20]).expect("update to 0");
    assert_eq!((dec.size, dec.table.len()), (0, 0));
    let mut up = vec![];
    encode_integer(&mut up, 4096, 5, 0x20);
    fields(&mut dec, &up).expect("back to 4096");
    // More than allowed, or after a field: refused.
    let mut over = vec![];
    encode_integer(&mut over, 4097, 5, 0x20);
    assert_eq!(fields(&mut dec, &over), Err(HpackError::BadSizeUpdate));
    assert_eq!(
        fields(&mut dec, &[0x82, 0x20]),
        Err(HpackError::BadSizeUpdate)
    );
    // An entry larger than the table empties it and is not added.
    fields(&mut dec, &insert).expect("insert");
    let mut big = vec![0x40, 0x01, b'n'];
    encode_integer(&mut big, 5000, 7, 0);
    big.extend(std::iter::repeat_n(b'x', 5000));
    fields(&mut dec, &big).expect("oversized entry");
    assert_eq!((dec.size, dec.table.len()), (0, 0));
}

#[test]
fn integers_are_bounded() {
    assert_eq!(integer(&[0x1f, 0x9a, 0x0a], 5), Ok((1337, &[][..])));
    // Endless continuation bytes, even zero ones.
    assert_eq!(
        integer(
            &[0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            7
        ),
        Err(HpackError::IntegerOverflow)
    );
    assert_eq!(
        integer(&[0x7f, 0xff, 0xff, 0xff, 0x7f], 7),
        Err(HpackError::IntegerOverflow)
    );
    assert_eq!(integer(&[0x7f, 0x80], 7), Err(HpackError::Truncated));
    // As h2: four continuation bytes at most, whatever their value.
    assert_eq!(
        integer(&[0x7f, 0x80, 0x80, 0x80, 0x00], 7),
        Ok((127, &[][..]))
    );
    assert_eq!(
        integer(&[0x7f, 0x80, 0x80, 0x80, 0x80, 0x00], 7),
        Err(HpackError::IntegerOverflow)
    );
    for v in [0, 30, 31, 127, 128, 1337, 65_536, MAX_INTEGER] {
        let mut out = vec![];
        encode_integer(&mut out, v, 5, 0);
        assert_eq!(integer(&out, 5), Ok((v, &[][..])), "{v}");
    }
}

proptest::proptest! {
    /// Huffman decoding inverts encoding.
    #[test]
    fn huffman_round_trips(s in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        proptest::prop_assert_eq!(huffman_decode(&huffman_encode(&s)), Ok(s));
    }

    /// Blocks loona's encoder writes (incremental indexing, table reuse,
    /// eviction) across one connection decode to the same fields.
    #[test]
    fn agrees_with_loona_on_its_encoder(
        blocks in proptest::collection::vec(
            proptest::collection::vec(("[a-z:-]{1,20}", "[ -~]{0,300}"), 1..12), 1..8),
    ) {
        let mut enc = loona_hpack::Encoder::new();
        let mut theirs = loona_hpack::Decoder::new();
        let mut ours = Decoder::new(4096);
        for block in blocks {
            let bytes = enc.encode(block.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
            let want = theirs.decode(&bytes).expect("loona decodes its own block");
            proptest::prop_assert_eq!(fields(&mut ours, &bytes), Ok(want));
        }
    }

    /// Arbitrary bytes: no panic, and whatever both decoders accept they
    /// decode alike.
    #[test]
    fn agrees_with_loona_on_any_bytes(
        blocks in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 1..4),
    ) {
        let mut theirs = loona_hpack::Decoder::new();
        let mut ours = Decoder::new(4096);
        for bytes in blocks {
            let a = fields(&mut ours, &bytes);
            let b = theirs.decode(&bytes);
            match (a, b) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
                // After a disagreement or an error the tables may differ.
                _ => break,
            }
        }
    }
}
