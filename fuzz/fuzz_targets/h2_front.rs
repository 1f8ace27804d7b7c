//! The agent's HTTP/2 front (`:authority` rewriting, issue 10) reads every
//! byte a local client sends before `h2` does: it must never panic, keep
//! its output frames within the frame size limit, give the same output
//! however the input is split, and its verbatim mode (acceptable blocks
//! passed on as received, so h2's HPACK table follows the client's) must
//! look to h2's own frame decoder exactly like re-encoding every block
//! (which never relies on h2's table), for every connection the front
//! followed to the end. The first byte picks where to split.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use h2::frame::Frame;
use lanyard_agent::h2_front::{AuthorityRewriter, MAX_HEADER_BLOCK, PREFACE};

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
    if r_whole.is_err() {
        return;
    }
    assert_eq!(out_whole, out_pieces);
    let mut reference = AuthorityRewriter::rewriting_from_start();
    let mut out_ref = Vec::new();
    // Once the front gives up (a protocol error it leaves to h2) the rest
    // goes through raw, which the reference's h2 cannot read against its
    // empty table: compare only connections the front followed to the end.
    if reference.feed(&input, &mut out_ref).is_err()
        || whole.is_passthrough()
        || reference.is_passthrough()
    {
        return;
    }
    let (fast, slow) = (h2_view(&out_whole), h2_view(&out_ref));
    assert_eq!(fast.len(), slow.len(), "{fast:?} vs {slow:?}");
    for (a, b) in fast.iter().zip(&slow) {
        // h2 judges some malformed blocks per frame (a duplicate pseudo-
        // header split over HEADERS and CONTINUATION goes unnoticed), so
        // the same block framed differently may be reset on one side only;
        // what it decodes must be the same.
        let framing = matches!((a, b),
            (Event::Headers(x, _), Event::Reset(y)) | (Event::Reset(y), Event::Headers(x, _)) if x == y);
        assert!(a == b || framing, "{fast:?} vs {slow:?}");
    }
});

/// One thing h2's frame decoder reports.
#[derive(Debug, PartialEq)]
enum Event {
    /// A header block decoded: its stream, and END_STREAM, pseudo-headers
    /// and fields as text.
    Headers(u32, String),
    /// A stream reset (h2 goes on with the connection).
    Reset(u32),
    /// A connection error, a PUSH_PROMISE (the server closes the
    /// connection) or no preface: the end.
    End(String),
}

/// What h2's frame decoder makes of a client's byte stream, up to the first
/// connection error.
fn h2_view(out: &[u8]) -> Vec<Event> {
    let Some(frames) = out.strip_prefix(PREFACE.as_slice()) else {
        return vec![Event::End("no preface".into())];
    };
    let mut codec: h2::Codec<Input, bytes::Bytes> = h2::Codec::new(Input(frames.to_vec(), 0));
    codec.set_max_recv_header_list_size(MAX_HEADER_BLOCK);
    let mut cx = Context::from_waker(Waker::noop());
    let mut view = Vec::new();
    loop {
        match Pin::new(&mut codec).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(Frame::Headers(h)))) => {
                let (id, end) = (u32::from(h.stream_id()), h.is_end_stream());
                let (pseudo, fields) = h.into_parts();
                view.push(Event::Headers(
                    id,
                    format!("end={end} {pseudo:?} {fields:?}"),
                ));
            }
            Poll::Ready(Some(Ok(Frame::PushPromise(_)))) => {
                view.push(Event::End("push promise".into()));
                return view;
            }
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(h2::proto::Error::Reset(id, ..)))) => {
                view.push(Event::Reset(u32::from(id)));
            }
            Poll::Ready(Some(Err(e))) => {
                view.push(Event::End(format!("{e:?}")));
                return view;
            }
            Poll::Ready(None) | Poll::Pending => return view,
        }
    }
}

/// The bytes as a connection: read once, writes discarded.
struct Input(Vec<u8>, usize);

impl tokio::io::AsyncRead for Input {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let at = self.1;
        let rest = self.0.get(at..).unwrap_or_default();
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.1 += n;
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Input {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
