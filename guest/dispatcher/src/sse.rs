//! An incremental `text/event-stream` reader (the WHATWG "event stream interpretation",
//! reduced to what an agent host sends): bytes in, whole events' `data` out.

/// Largest event (its `data` lines joined) accepted; a longer one is an error, not an
/// unbounded buffer.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Why the stream cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// An event grew past [`MAX_EVENT_BYTES`] without ending.
    EventTooLarge,
    /// An event's bytes are not UTF-8.
    NotUtf8,
}

/// Splits a byte stream into events; feed it chunks as they arrive.
#[derive(Debug, Default)]
pub struct SseReader {
    buf: Vec<u8>,
}

impl SseReader {
    /// Appends `chunk` and returns the `data` of every event it completed, in order. Events
    /// without `data` (comments such as keep-alives, `event:`/`id:`-only blocks) yield nothing.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<String>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some((end, sep)) = find_blank_line(&self.buf) {
            let raw: Vec<u8> = self.buf.drain(..end + sep).take(end).collect();
            let text = String::from_utf8(raw).map_err(|_| SseError::NotUtf8)?;
            if let Some(data) = data_of(&text) {
                events.push(data);
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(SseError::EventTooLarge);
        }
        Ok(events)
    }
}

/// The end of the first event (index of its terminating blank line) and the separator length;
/// accepts `\n\n`, `\r\n\r\n` and `\r\r`.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if buf[i..].starts_with(b"\n\n") || buf[i..].starts_with(b"\r\r") {
            Some((i, 2))
        } else {
            None
        }
    })
}

/// The event's `data` lines joined by `\n` (one optional space after the colon is dropped),
/// or `None` if it has none.
fn data_of(event: &str) -> Option<String> {
    let mut data: Option<String> = None;
    for line in event.split(['\n', '\r']) {
        let value = match line.strip_prefix("data") {
            Some("") => "",
            Some(rest) => match rest.strip_prefix(':') {
                Some(v) => v.strip_prefix(' ').unwrap_or(v),
                None => continue, // a field named e.g. "database"
            },
            None => continue,
        };
        match &mut data {
            Some(d) => {
                d.push('\n');
                d.push_str(value);
            }
            None => data = Some(value.to_owned()),
        }
    }
    data
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_across_any_chunking() {
        let stream = b"data: \"hello \"\n\n: keep-alive\n\ndata: \"world\"\r\n\r\ndata: {\"a\":1}\ndata: {\"b\":2}\n\n";
        let want = ["\"hello \"", "\"world\"", "{\"a\":1}\n{\"b\":2}"];
        for size in 1..stream.len() {
            let mut r = SseReader::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(size) {
                got.extend(r.feed(chunk).unwrap());
            }
            assert_eq!(got, want, "chunk size {size}");
        }
    }

    #[test]
    fn an_unfinished_event_waits_for_its_blank_line() {
        let mut r = SseReader::default();
        assert!(r.feed(b"data: \"par").unwrap().is_empty());
        assert!(r.feed(b"tial\"\n").unwrap().is_empty());
        assert_eq!(r.feed(b"\n").unwrap(), ["\"partial\""]);
    }

    #[test]
    fn other_fields_are_ignored_and_data_without_space_is_kept() {
        let mut r = SseReader::default();
        assert_eq!(
            r.feed(b"event: x\nid: 7\ndatabase: no\ndata:tight\n\nevent: only\n\n").unwrap(),
            ["tight"]
        );
    }

    #[test]
    fn oversized_and_non_utf8_events_are_errors() {
        let mut r = SseReader::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(r.feed(&big), Err(SseError::EventTooLarge));
        let mut r = SseReader::default();
        assert_eq!(r.feed(b"data: \xff\n\n"), Err(SseError::NotUtf8));
    }
}
