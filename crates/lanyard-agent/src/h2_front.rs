//! A thin HTTP/2 front for the agent's Unix sockets: it rewrites the
//! `:authority` of the client's header blocks so that `h2` accepts every
//! gRPC client (issue 10).
//!
//! gRPC C-core (Python `grpcio`, and so the C++, Ruby and PHP SPIFFE
//! libraries) sends the socket path, percent-encoded, as `:authority`
//! (`%2Frun%2Flanyard%2Fworkload.sock`); grpc-java sends the raw path;
//! others send `localhost` or nothing. `h2` resets a stream whose authority
//! is not a valid URI authority (RST_STREAM PROTOCOL_ERROR) and its
//! maintainers keep that check, so the agent rewrites before `h2` sees the
//! bytes: [`AuthorityRewriter`] parses the client-to-server byte stream into
//! frames and HPACK-decodes every header block (HEADERS plus CONTINUATION)
//! with the client's dynamic table ([`hpack`], the front's own decoder).
//!
//! A connection starts *verbatim*: while every `:authority` it sends is
//! acceptable, its frames go to `h2` exactly as they came (h2's decoder then
//! follows the same dynamic table as ours). The first block with an
//! unusable `:authority` switches the connection to *rewriting* for good:
//! from that block on every header block is re-encoded as literals without
//! indexing (padding stripped), with the bad `:authority` replaced by
//! `localhost`, so nothing h2 decodes from then on depends on its dynamic
//! table, which no longer matches the client's. Every other frame is passed
//! on unchanged, and the server-to-client direction is not touched at all.
//! Clients with a valid authority (tonic, Go, grpc-js's `localhost`) thus
//! cost one decode per block and no re-encoding; C-core clients, which put
//! the socket path in every request, are rewritten from their first one.
//! A HEADERS frame whose stream depends on itself also switches to
//! rewriting: `h2` resets that stream without decoding its block (RFC 9113
//! §5.3.1), so its table would miss what the block adds.
//!
//! # Security
//! Nothing in the agent reads `:authority`; callers are identified by the
//! kernel (peer credentials), never by a header. The rewriter therefore
//! only has to be panic-free and bounded, not clever: on anything it does
//! not understand (a bad preface, an oversized frame, CONTINUATION out of
//! place, an HPACK error) it forwards the bytes as they came and stops
//! interpreting, so `h2` answers with the protocol's own error (GOAWAY).
//! A header block larger than [`MAX_HEADER_BLOCK`] (compressed or decoded)
//! is a [`FrontError`]: the connection is closed (the CONTINUATION flood
//! defence).

mod hpack;

use hpack::{encode_integer, Decoder};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest frame payload the server accepts: `h2`'s default
/// SETTINGS_MAX_FRAME_SIZE, which the agent's servers keep (RFC 9113 §4.2).
pub const MAX_FRAME_SIZE: usize = 16_384;
/// The dynamic table size the server's decoder allows: the protocol default
/// SETTINGS_HEADER_TABLE_SIZE, which `h2` does not change (RFC 7541 §4.2).
pub const HEADER_TABLE_SIZE: usize = 4_096;
/// The largest header block, compressed (all fragments) or decoded (RFC
/// 7541 §4.1 sizes: name + value + 32 per field): 64 KiB. Workload API
/// requests carry a few hundred bytes.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// What an unusable `:authority` becomes.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Why the front closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrontError {
    /// A header block grew past [`MAX_HEADER_BLOCK`].
    #[error("header block larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
}

/// The client-to-server half of one HTTP/2 connection, rewritten. Sans-IO:
/// feed it what the client sent, in pieces of any size, and pass on what it
/// returns.
pub struct AuthorityRewriter {
    state: State,
    /// Bytes of an incomplete frame (or preface).
    buf: Vec<u8>,
    decoder: Decoder,
    pending: Option<Pending>,
    /// A block had to be rewritten: every later block is re-encoded too.
    rewriting: bool,
    /// The re-encoded block being built (kept to reuse its allocation).
    block: Vec<u8>,
}

impl std::fmt::Debug for AuthorityRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityRewriter")
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .field("rewriting", &self.rewriting)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preface,
    Frames,
    /// Not interpreting any more: bytes go through unchanged.
    Passthrough,
    Failed(FrontError),
}

/// A HEADERS frame waiting for its CONTINUATION frames.
struct Pending {
    head: BlockHead,
    fragment: Vec<u8>,
    /// The frames as received, in case they go through unchanged.
    raw: Vec<u8>,
}

/// What the first frame of a header block says about its stream.
#[derive(Clone, Copy)]
struct BlockHead {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityRewriter {
    /// A rewriter for a new connection (expects the preface first).
    pub fn new() -> Self {
        Self {
            state: State::Preface,
            buf: Vec::new(),
            decoder: Decoder::new(HEADER_TABLE_SIZE),
            pending: None,
            rewriting: false,
            block: Vec::new(),
        }
    }

    /// True once the rewriter only copies bytes (after a protocol error it
    /// left to `h2`).
    pub fn is_passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// True once a header block had to be rewritten (see the module docs).
    pub fn is_rewriting(&self) -> bool {
        self.rewriting
    }

    /// A rewriter that re-encodes every header block from the first one:
    /// the reference the verbatim mode is fuzzed against
    /// (`fuzz/fuzz_targets/h2_front.rs`: `h2` must decode both outputs alike).
    pub fn rewriting_from_start() -> Self {
        Self {
            rewriting: true,
            ..Self::new()
        }
    }

    /// Takes `input` from the client and appends to `out` what the server
    /// should receive. Incomplete frames are kept until the rest arrives.
    ///
    /// # Errors
    /// [`FrontError`] when the connection must be closed; every later call
    /// fails the same way.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), FrontError> {
        match self.state {
            State::Failed(e) => return Err(e),
            State::Passthrough => {
                out.extend_from_slice(input);
                return Ok(());
            }
            State::Preface | State::Frames => {}
        }
        self.buf.extend_from_slice(input);
        let mut used = 0;
        let result = self.drain(&mut used, out);
        // Keep what is left of an incomplete frame for the next call.
        self.buf.drain(..used.min(self.buf.len()));
        if let Err(e) = result {
            self.state = State::Failed(e);
            self.buf = Vec::new();
            self.pending = None;
        }
        result
    }

    /// Processes complete units of `self.buf` from `*used` on.
    fn drain(&mut self, used: &mut usize, out: &mut Vec<u8>) -> Result<(), FrontError> {
        let buf = std::mem::take(&mut self.buf);
        let result = self.drain_from(&buf, used, out);
        self.buf = buf;
        result
    }

    fn drain_from(
        &mut self,
        buf: &[u8],
        used: &mut usize,
        out: &mut Vec<u8>,
    ) -> Result<(), FrontError> {
        loop {
            let rest = buf.get(*used..).unwrap_or_default();
            match self.state {
                State::Failed(e) => return Err(e),
                State::Passthrough => {
                    out.extend_from_slice(rest);
                    *used = buf.len();
                    return Ok(());
                }
                State::Preface => {
                    let n = rest.len().min(PREFACE.len());
                    if rest.get(..n) != PREFACE.get(..n) {
                        self.state = State::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    out.extend_from_slice(PREFACE);
                    *used += PREFACE.len();
                    self.state = State::Frames;
                }
                State::Frames => {
                    let Some(header) = rest.get(..FRAME_HEADER_LEN) else {
                        return Ok(());
                    };
                    let frame = FrameHeader::parse(header);
                    if frame.len > MAX_FRAME_SIZE {
                        // h2 answers FRAME_SIZE_ERROR.
                        self.give_up(out);
                        continue;
                    }
                    let Some(whole) = rest.get(..FRAME_HEADER_LEN + frame.len) else {
                        return Ok(());
                    };
                    let payload = whole.get(FRAME_HEADER_LEN..).unwrap_or_default();
                    *used += whole.len();
                    self.frame(&frame, whole, payload, out)?;
                }
            }
        }
    }

    /// One complete frame.
    fn frame(
        &mut self,
        frame: &FrameHeader,
        whole: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrontError> {
        if let Some(p) = &mut self.pending {
            if frame.kind != TYPE_CONTINUATION || frame.stream_id != p.head.stream_id {
                // RFC 9113 §6.10: only CONTINUATION of the same stream may
                // follow; h2 answers PROTOCOL_ERROR.
                p.raw.extend_from_slice(whole);
                self.give_up(out);
                return Ok(());
            }
            if p.fragment.len() + payload.len() > MAX_HEADER_BLOCK {
                return Err(FrontError::HeaderBlockTooLarge);
            }
            p.fragment.extend_from_slice(payload);
            p.raw.extend_from_slice(whole);
            if frame.flags & FLAG_END_HEADERS != 0 {
                if let Some(p) = self.pending.take() {
                    self.finish(p.head, &p.fragment, &p.raw, out)?;
                }
            }
            return Ok(());
        }
        match frame.kind {
            TYPE_HEADERS => {
                let Some((priority, fragment)) = headers_payload(frame.flags, payload) else {
                    // Bad padding or a short PRIORITY block: PROTOCOL_ERROR.
                    out.extend_from_slice(whole);
                    self.state = State::Passthrough;
                    return Ok(());
                };
                let head = BlockHead {
                    stream_id: frame.stream_id,
                    end_stream: frame.flags & FLAG_END_STREAM != 0,
                    priority,
                };
                if priority.is_some_and(|p| {
                    u32::from_be_bytes([p[0] & 0x7f, p[1], p[2], p[3]]) == frame.stream_id
                }) {
                    // h2 resets the stream without decoding the block.
                    self.rewriting = true;
                }
                if frame.flags & FLAG_END_HEADERS != 0 {
                    // The usual case: the whole block in one frame, decoded
                    // where it lies.
                    self.finish(head, fragment, whole, out)?;
                } else {
                    self.pending = Some(Pending {
                        head,
                        fragment: fragment.to_vec(),
                        raw: whole.to_vec(),
                    });
                }
            }
            TYPE_CONTINUATION | TYPE_PUSH_PROMISE => {
                // CONTINUATION without HEADERS, or a client pushing (RFC
                // 9113 §8.4): PROTOCOL_ERROR from h2. (h2 decodes a
                // PUSH_PROMISE's block first, with its table, which the
                // front does not follow for it.)
                out.extend_from_slice(whole);
                self.state = State::Passthrough;
            }
            _ => out.extend_from_slice(whole),
        }
        Ok(())
    }

    /// Decodes a complete header block (`fragment`, received as the frames
    /// `raw`) and writes it: `raw` unchanged while the connection is
    /// verbatim and its `:authority` is acceptable, re-encoded otherwise.
    fn finish(
        &mut self,
        head: BlockHead,
        fragment: &[u8],
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrontError> {
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        let mut decoded_size = 0usize;
        let mut too_large = false;
        let mut bad_authority = false;
        let decoded = self.decoder.decode(fragment, |name, value| {
            decoded_size = decoded_size.saturating_add(name.len() + value.len() + 32);
            if decoded_size > MAX_HEADER_BLOCK {
                too_large = true;
                return;
            }
            let value = if name == b":authority" && !valid_authority(value) {
                bad_authority = true;
                REPLACEMENT_AUTHORITY
            } else {
                value
            };
            encode_literal(&mut block, name, value);
        });
        let result = if too_large {
            Err(FrontError::HeaderBlockTooLarge)
        } else if decoded.is_err() {
            // COMPRESSION_ERROR from h2, with the block as the client sent it.
            out.extend_from_slice(raw);
            self.state = State::Passthrough;
            Ok(())
        } else {
            self.rewriting |= bad_authority;
            if self.rewriting {
                write_header_frames(out, head, &block);
            } else {
                out.extend_from_slice(raw);
            }
            Ok(())
        };
        self.block = block;
        result
    }

    /// Forwards a pending block as received and stops interpreting.
    fn give_up(&mut self, out: &mut Vec<u8>) {
        if let Some(p) = self.pending.take() {
            out.extend_from_slice(&p.raw);
        }
        self.state = State::Passthrough;
    }
}

struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    /// `h` is exactly 9 bytes (the caller took them with `get(..9)`).
    fn parse(h: &[u8]) -> Self {
        let b = |i: usize| h.get(i).copied().unwrap_or(0);
        Self {
            len: usize::from(b(0)) << 16 | usize::from(b(1)) << 8 | usize::from(b(2)),
            kind: b(3),
            flags: b(4),
            stream_id: u32::from_be_bytes([b(5) & 0x7f, b(6), b(7), b(8)]),
        }
    }
}

/// The priority block and the header block fragment of a HEADERS payload
/// (RFC 9113 §6.2); `None` when the padding or priority does not fit.
fn headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        let (&len, rest) = body.split_first()?;
        pad = usize::from(len);
        body = rest;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let (p, rest) = body.split_at_checked(5)?;
        priority = Some(<[u8; 5]>::try_from(p).ok()?);
        body = rest;
    }
    let keep = body.len().checked_sub(pad)?;
    Some((priority, body.get(..keep)?))
}

/// HEADERS then CONTINUATION frames carrying `block`, none larger than
/// [`MAX_FRAME_SIZE`], with the stream's END_STREAM and priority.
fn write_header_frames(out: &mut Vec<u8>, p: BlockHead, block: &[u8]) {
    let priority_len = if p.priority.is_some() { 5 } else { 0 };
    let first_room = MAX_FRAME_SIZE - priority_len;
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    let mut flags = if p.end_stream { FLAG_END_STREAM } else { 0 };
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    if p.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    write_frame_header(
        out,
        first.len() + priority_len,
        TYPE_HEADERS,
        flags,
        p.stream_id,
    );
    if let Some(prio) = &p.priority {
        out.extend_from_slice(prio);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_SIZE));
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame_header(out, chunk.len(), TYPE_CONTINUATION, flags, p.stream_id);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

fn write_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream_id: u32) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
}

/// A literal header field without indexing, new name, no Huffman (RFC 7541
/// §6.2.2).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// What `h2` accepts as `:authority`.
fn valid_authority(value: &[u8]) -> bool {
    !value.is_empty()
        && tonic::codegen::http::uri::Authority::try_from(value)
            .is_ok_and(|a| a.as_str().len() == value.len())
}

#[cfg(test)]
mod tests;
