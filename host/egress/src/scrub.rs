//! Response scrubbing: no credential the host handled may reach the guest through a response.
//!
//! A downstream that reflects request headers (a debug endpoint, an error page quoting the
//! `Authorization` header) would otherwise hand the injected token straight to the plugin.
//! [`Scrubber`] replaces every occurrence of any of the given secrets with [`REDACTED`] in a
//! byte stream, including occurrences split across chunk boundaries, by holding back the end
//! of a chunk that could be the start of a secret (a suffix that is a proper prefix of one),
//! until the next chunk shows whether it is. Everything else passes at once, so a streamed
//! answer (server-sent events from another agent) is not delayed by the scrubbing.
//! [`ScrubbedBody`] applies it to an `http_body::Body`; [`Scrubber::scrub_headers`] to headers.
//!
//! Only literal occurrences are found. Tokens (JWTs: base64url and `.`) survive JSON and URL
//! encoding unchanged, so literal matching covers the echoes that matter.

use bytes::{Bytes, BytesMut};
use delegate_secret::Secret;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use zeroize::Zeroizing;

/// What replaces a secret in a scrubbed response.
pub const REDACTED: &[u8] = b"[redacted]";

/// A streaming secret replacer; see the module docs.
pub struct Scrubber {
    /// Copies of the secrets' bytes, wiped on drop like the secrets themselves.
    needles: Vec<Zeroizing<Vec<u8>>>,
    /// For each byte value, whether some needle starts with it: a fast skip for the scan.
    first: [bool; 256],
    /// The distinct first bytes when there are at most three (the usual case: JWTs all start
    /// with `e`), so the scan jumps between candidates with `memchr` instead of testing every
    /// byte; `None` falls back to the table.
    starts: Option<Vec<u8>>,
    max_len: usize,
    /// Bytes held back because they may be the start of a secret continued in the next chunk.
    tail: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber").field("secrets", &self.needles.len()).finish_non_exhaustive()
    }
}

impl Scrubber {
    /// A scrubber for these secrets; empty secrets are ignored (they would match everywhere).
    pub fn new(secrets: &[&Secret]) -> Self {
        let mut needles: Vec<Zeroizing<Vec<u8>>> = secrets
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| Zeroizing::new(s.expose().as_bytes().to_vec()))
            .collect();
        // Longest first, so at one position the longest secret wins (a secret that extends
        // another is redacted whole).
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let mut first = [false; 256];
        for n in &needles {
            first[usize::from(n[0])] = true;
        }
        let max_len = needles.first().map_or(0, |n| n.len());
        let distinct: Vec<u8> = (0..=255u8).filter(|&b| first[usize::from(b)]).collect();
        let starts = (distinct.len() <= 3).then_some(distinct);
        Self { needles, first, starts, max_len, tail: Zeroizing::new(Vec::new()) }
    }

    /// The first position at or after `from` and before `end` whose byte may start a secret.
    fn next_candidate(&self, buf: &[u8], from: usize, end: usize) -> usize {
        let hay = &buf[from..end];
        let found = match self.starts.as_deref() {
            Some([]) => None,
            Some([a]) => memchr::memchr(*a, hay),
            Some([a, b]) => memchr::memchr2(*a, *b, hay),
            Some([a, b, c]) => memchr::memchr3(*a, *b, *c, hay),
            _ => hay.iter().position(|&b| self.first[usize::from(b)]),
        };
        found.map_or(end, |p| from + p)
    }

    /// Whether this scrubber has anything to look for.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Feeds one chunk; returns the bytes that are now known to be safe to pass on (possibly
    /// empty, when everything is held back).
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if self.needles.is_empty() {
            return Bytes::copy_from_slice(chunk);
        }
        if self.tail.is_empty() {
            self.scan(chunk, false)
        } else {
            let mut buf = Zeroizing::new(std::mem::take(&mut *self.tail));
            buf.extend_from_slice(chunk);
            self.scan(&buf, false)
        }
    }

    /// Ends the stream: returns the held-back bytes (scrubbed; a partial secret at the very
    /// end is not a secret).
    pub fn finish(&mut self) -> Bytes {
        let buf = Zeroizing::new(std::mem::take(&mut *self.tail));
        self.scan(&buf, true)
    }

    /// Scrubs a whole value at once (header values, small bodies).
    pub fn scrub_all(&self, data: &[u8]) -> Option<Vec<u8>> {
        let mut i = 0;
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        while i < data.len() {
            i = self.next_candidate(data, i, data.len());
            if i >= data.len() {
                break;
            }
            if let Some(len) = self.match_at(&data[i..]) {
                let o = out.get_or_insert_with(|| Vec::with_capacity(data.len()));
                o.extend_from_slice(&data[copied..i]);
                o.extend_from_slice(REDACTED);
                i += len;
                copied = i;
            } else {
                i += 1;
            }
        }
        if let Some(o) = out.as_mut() {
            o.extend_from_slice(&data[copied..]);
        }
        out
    }

    /// Replaces every header value containing a secret. Values that no longer form a valid
    /// header value after replacement cannot occur (the marker is visible ASCII), but if one
    /// did it would be dropped rather than passed on.
    pub fn scrub_headers(&self, headers: &mut http::HeaderMap) {
        if self.needles.is_empty() {
            return;
        }
        for value in headers.values_mut() {
            if let Some(clean) = self.scrub_all(value.as_bytes()) {
                *value = http::HeaderValue::from_bytes(&clean)
                    .unwrap_or_else(|_| http::HeaderValue::from_static("[redacted]"));
            }
        }
    }

    fn match_at(&self, data: &[u8]) -> Option<usize> {
        self.needles.iter().find(|n| data.starts_with(n)).map(|n| n.len())
    }

    /// Where the bytes that could begin a secret continued in the next chunk start: the first
    /// position `p` of the last `longest - 1` bytes whose suffix `buf[p..]` is a proper prefix
    /// of some secret (`buf.len()` when there is none). Before `p`, no secret can be
    /// incomplete: each position has either a whole secret or none.
    fn hold_from(&self, buf: &[u8]) -> usize {
        let start = buf.len().saturating_sub(self.max_len.saturating_sub(1));
        (start..buf.len())
            .find(|&p| {
                let rest = &buf[p..];
                self.first[usize::from(buf[p])]
                    && self.needles.iter().any(|n| n.len() > rest.len() && n.starts_with(rest))
            })
            .unwrap_or(buf.len())
    }

    /// Scans `buf`, emitting up to the first position where a secret could still be
    /// incomplete, and keeps the rest as the tail (unless `last`).
    fn scan(&mut self, buf: &[u8], last: bool) -> Bytes {
        let limit = if last { buf.len() } else { self.hold_from(buf) };
        let mut out = BytesMut::with_capacity(limit + REDACTED.len());
        let mut i = 0;
        let mut copied = 0;
        // A match may end past `limit` (it started before it); the tail starts after it.
        while i < limit {
            i = self.next_candidate(buf, i, limit);
            if i >= limit {
                break;
            }
            if let Some(len) = self.match_at(&buf[i..]) {
                out.extend_from_slice(&buf[copied..i]);
                out.extend_from_slice(REDACTED);
                i += len;
                copied = i;
            } else {
                i += 1;
            }
        }
        out.extend_from_slice(&buf[copied..i]);
        self.tail.clear();
        self.tail.extend_from_slice(&buf[i..]);
        out.freeze()
    }
}

/// An `http_body::Body` whose data frames pass through a [`Scrubber`].
///
/// Trailers are scrubbed too and are delivered after the held-back tail.
pub struct ScrubbedBody<B> {
    inner: B,
    scrubber: Scrubber,
    pending_trailers: Option<http::HeaderMap>,
    done: bool,
}

impl<B> std::fmt::Debug for ScrubbedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrubbedBody").field("scrubber", &self.scrubber).finish_non_exhaustive()
    }
}

impl<B> ScrubbedBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, scrubber: Scrubber) -> Self {
        Self { inner, scrubber, pending_trailers: None, done: false }
    }
}

impl<B> Body for ScrubbedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(this.pending_trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.scrubber.push(&data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            this.scrubber.scrub_headers(&mut trailers);
                            this.pending_trailers = Some(trailers);
                        }
                        // Trailers end the body: flush the tail first.
                        this.done = true;
                        let out = this.scrubber.finish();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    let out = this.scrubber.finish();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending_trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Replacement changes the length, so only the lower bound "unknown" is honest.
        SizeHint::default()
    }
}
