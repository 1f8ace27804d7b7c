//! The HPACK decoder of the HTTP/2 front (RFC 7541): just what the front
//! needs to follow the client's dynamic table and read every field of a
//! header block, with the Huffman code decoded from its canonical code
//! lengths (no table built per string), and nothing else: no encoder state,
//! no header validation (`h2` does that on what the front passes on).
//!
//! Bounded and panic-free on any input: integers are limited to what fits a
//! header block, indices are checked, the table never grows past the size
//! the server allows ([`super::HEADER_TABLE_SIZE`]).

use std::borrow::Cow;
use std::collections::VecDeque;

/// Why a header block could not be decoded (h2 answers COMPRESSION_ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HpackError {
    /// The block ends inside a field.
    Truncated,
    /// An integer larger than any header block can need.
    IntegerOverflow,
    /// Index 0, or past the end of the tables.
    BadIndex,
    /// Padding longer than 7 bits or not a prefix of EOS, or EOS inside a
    /// string (RFC 7541 §5.2).
    BadHuffman,
    /// A dynamic table size update past the allowed size or after the
    /// first field (RFC 7541 §4.2, §6.3).
    BadSizeUpdate,
}

/// The decoding side of one connection's HPACK context.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Newest entry first (index 62).
    table: VecDeque<TableEntry>,
    /// Sum of the entries' sizes (name + value + 32, RFC 7541 §4.1).
    size: usize,
    /// The current maximum, set by size updates.
    max_size: usize,
    /// The most a size update may ask for (our SETTINGS_HEADER_TABLE_SIZE).
    allowed: usize,
}

/// One dynamic table entry: name, value.
#[derive(Debug)]
struct TableEntry(Box<[u8]>, Box<[u8]>);

/// A literal field: name (maybe from a table), value, what follows.
struct Literal<'s, 'b> {
    name: Cow<'s, [u8]>,
    value: Cow<'b, [u8]>,
    rest: &'b [u8],
}

/// Integers above this cannot describe anything in a bounded header block.
const MAX_INTEGER: usize = 1 << 24;

impl Decoder {
    /// A decoder whose table may grow to `allowed` bytes.
    pub(crate) fn new(allowed: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: allowed,
            allowed,
        }
    }

    /// Decodes one complete header block, calling `field(name, value)` for
    /// each field in order, and updates the dynamic table as the block says.
    ///
    /// # Errors
    /// [`HpackError`]; the table may then be partly updated (the caller
    /// stops interpreting the connection).
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut rest = block;
        let mut may_resize = true;
        while let Some(&first) = rest.first() {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let (index, r) = integer(rest, 7)?;
                rest = r;
                let (name, value) = self.entry(index)?;
                field(name, value);
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let Literal {
                    name,
                    value,
                    rest: r,
                } = self.literal(rest, 6)?;
                rest = r;
                field(&name, &value);
                self.insert(name.into_owned().into(), value.into_owned().into());
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3), only before the first field.
                if !may_resize {
                    return Err(HpackError::BadSizeUpdate);
                }
                let (size, r) = integer(rest, 5)?;
                rest = r;
                if size > self.allowed {
                    return Err(HpackError::BadSizeUpdate);
                }
                self.max_size = size;
                self.evict_to(size);
                continue;
            } else {
                // Literal without indexing or never indexed (§6.2.2, §6.2.3).
                let Literal {
                    name,
                    value,
                    rest: r,
                } = self.literal(rest, 4)?;
                rest = r;
                field(&name, &value);
            }
            may_resize = false;
        }
        Ok(())
    }

    /// The entry at `index` of the static then the dynamic table (§2.3.3).
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if index == 0 {
            return Err(HpackError::BadIndex);
        }
        if let Some(&(n, v)) = STATIC_TABLE.get(index - 1) {
            return Ok((n, v));
        }
        self.table
            .get(index - 1 - STATIC_TABLE.len())
            .map(|TableEntry(n, v)| (&**n, &**v))
            .ok_or(HpackError::BadIndex)
    }

    /// A literal field whose name index has a `prefix`-bit prefix.
    fn literal<'s, 'b: 's>(
        &'s self,
        src: &'b [u8],
        prefix: u8,
    ) -> Result<Literal<'s, 'b>, HpackError> {
        let (index, rest) = integer(src, prefix)?;
        let (name, rest) = if index == 0 {
            string(rest)?
        } else {
            (Cow::Borrowed(self.entry(index)?.0), rest)
        };
        let (value, rest) = string(rest)?;
        Ok(Literal { name, value, rest })
    }

    fn insert(&mut self, name: Box<[u8]>, value: Box<[u8]>) {
        let size = name.len() + value.len() + 32;
        if size > self.max_size {
            // §4.4: an entry larger than the table empties it.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.table.push_front(TableEntry(name, value));
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.table.pop_back() {
                Some(TableEntry(n, v)) => self.size -= n.len() + v.len() + 32,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// An integer with an `n`-bit prefix (RFC 7541 §5.1) and what follows it.
fn integer(src: &[u8], n: u8) -> Result<(usize, &[u8]), HpackError> {
    let (&first, mut rest) = src.split_first().ok_or(HpackError::Truncated)?;
    let mask = (1u8 << n) - 1;
    let mut value = usize::from(first & mask);
    if value < usize::from(mask) {
        return Ok((value, rest));
    }
    let mut shift = 0u32;
    loop {
        // At most four continuation bytes, as h2 (which refuses a fifth
        // whatever its value): 2^28, more than MAX_INTEGER, and the shift
        // stays in range however many zero bytes pad the encoding.
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
        let (&b, r) = rest.split_first().ok_or(HpackError::Truncated)?;
        rest = r;
        value += usize::from(b & 0x7f) << shift;
        if value > MAX_INTEGER {
            return Err(HpackError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok((value, rest));
        }
        shift += 7;
    }
}

/// A string literal (§5.2) and what follows it.
fn string(src: &[u8]) -> Result<(Cow<'_, [u8]>, &[u8]), HpackError> {
    let huffman = src.first().is_some_and(|b| b & 0x80 != 0);
    let (len, rest) = integer(src, 7)?;
    let (raw, rest) = rest.split_at_checked(len).ok_or(HpackError::Truncated)?;
    if huffman {
        Ok((Cow::Owned(huffman_decode(raw)?), rest))
    } else {
        Ok((Cow::Borrowed(raw), rest))
    }
}

/// Decodes the HPACK Huffman code (RFC 7541 Appendix B), a canonical code:
/// each symbol is found from the code lengths alone.
pub(crate) fn huffman_decode(src: &[u8]) -> Result<Vec<u8>, HpackError> {
    // Shortest code 5 bits: at most 8 symbols per 5 bytes.
    let mut out = Vec::with_capacity(src.len() * 8 / 5 + 1);
    // The bits of the symbol being read, how many, the first code of that
    // length, and the index in SYMBOLS of that first code.
    let (mut code, mut len, mut first, mut index) = (0u32, 0usize, 0u32, 0usize);
    let mut all_ones = true;
    for &byte in src {
        for shift in (0..8).rev() {
            let bit = u32::from(byte >> shift) & 1;
            all_ones &= bit == 1;
            code |= bit;
            len += 1;
            let count = u32::from(CANONICAL.count.get(len).copied().unwrap_or(0));
            if code.wrapping_sub(first) < count {
                let at = index + (code - first) as usize;
                match CANONICAL.symbols.get(at).copied() {
                    Some(s @ 0..=255) => out.push(s as u8),
                    // EOS inside the string, or a code past the table.
                    _ => return Err(HpackError::BadHuffman),
                }
                (code, len, first, index) = (0, 0, 0, 0);
                all_ones = true;
                continue;
            }
            if len >= MAX_CODE_LEN {
                return Err(HpackError::BadHuffman);
            }
            index += count as usize;
            first = (first + count) << 1;
            code <<= 1;
        }
    }
    // Padding: at most 7 bits, all ones (the start of EOS).
    if len > 7 || !all_ones {
        return Err(HpackError::BadHuffman);
    }
    Ok(out)
}

const MAX_CODE_LEN: usize = 30;

/// The canonical code: how many codes of each length, and the symbols in
/// code order (by length, then symbol).
struct Canonical {
    count: [u16; MAX_CODE_LEN + 1],
    symbols: [u16; 257],
}

const CANONICAL: Canonical = canonical();

const fn canonical() -> Canonical {
    let mut count = [0u16; MAX_CODE_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[HUFFMAN_CODE_LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut symbols = [0u16; 257];
    let mut at = 0;
    let mut len = 1;
    while len <= MAX_CODE_LEN {
        let mut s = 0;
        while s < 257 {
            if HUFFMAN_CODE_LENGTHS[s] as usize == len {
                symbols[at] = s as u16;
                at += 1;
            }
            s += 1;
        }
        len += 1;
    }
    Canonical { count, symbols }
}

/// The code length of each symbol 0..=256 (256 is EOS), RFC 7541 Appendix B.
const HUFFMAN_CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Appends an integer with an `n`-bit prefix whose other bits are `flags`.
pub(crate) fn encode_integer(out: &mut Vec<u8>, value: usize, n: u8, flags: u8) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests;
