//! An incremental Server-Sent Events parser: body chunks may split lines and events
//! anywhere, so only the unfinished line is kept between chunks.

/// Longest line kept; a longer one is dropped (no provider sends one).
const MAX_LINE: usize = 4 * 1024 * 1024;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    overflow: bool,
    event: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Feeds `bytes`; complete events are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            if !self.overflow {
                self.line.extend_from_slice(&rest[..nl]);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, out);
            }
            self.line.clear();
            self.overflow = false;
            rest = &rest[nl + 1..];
        }
        if self.line.len() + rest.len() > MAX_LINE {
            self.overflow = true;
            self.line.clear();
        } else if !self.overflow {
            self.line.extend_from_slice(rest);
        }
    }

    /// The end of the stream: a last unterminated line or event still counts.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.line.is_empty() && !self.overflow {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        self.line_done(b"", out);
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(Event { event: self.event.take(), data });
            }
            self.event = None;
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {} // comments (`: keep-alive`), `id`, `retry`
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b"event: a\r\ndata: {\"x\":\ndata: 1}\r\n\r\n: ping\n\ndata: two\n\ndata: tail";
        for split in 0..stream.len() {
            let mut p = Parser::default();
            let mut out = Vec::new();
            p.push(&stream[..split], &mut out);
            p.push(&stream[split..], &mut out);
            p.finish(&mut out);
            assert_eq!(
                out,
                vec![
                    Event { event: Some("a".into()), data: "{\"x\":\n1}".into() },
                    Event { event: None, data: "two".into() },
                    Event { event: None, data: "tail".into() },
                ],
                "split at {split}"
            );
        }
    }

    /// Fuzz: random streams of SSE-ish bytes, cut into random chunks, give the same
    /// events as the whole stream at once (and never panic).
    #[test]
    fn any_chunking_of_any_stream_gives_the_same_events() {
        const PIECES: &[&[u8]] = &[
            b"data: ",
            b"data:",
            b"event: ",
            b"id: 1",
            b": ping",
            b"\n",
            b"\r\n",
            b"\r",
            b"{\"x\":1}",
            b"\xc3",
            b"\xa9",
            b"\xff",
            b"[DONE]",
            b" ",
            b"data",
            b"\n\n",
            b"retry: 5",
        ];
        let iters = std::env::var("SLUICE_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
        let mut rng = fastrand::Rng::with_seed(1);
        for i in 0..iters {
            let stream: Vec<u8> = (0..rng.usize(1..40))
                .flat_map(|_| PIECES[rng.usize(..PIECES.len())].iter().copied())
                .collect();
            let whole = {
                let (mut p, mut out) = (Parser::default(), Vec::new());
                p.push(&stream, &mut out);
                p.finish(&mut out);
                out
            };
            let (mut p, mut out) = (Parser::default(), Vec::new());
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(rng.usize(1..=rest.len()));
                p.push(chunk, &mut out);
                rest = tail;
            }
            p.finish(&mut out);
            assert_eq!(out, whole, "input {i}: {:?}", String::from_utf8_lossy(&stream));
        }
    }

    #[test]
    fn byte_at_a_time() {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for b in b"data: h\xc3\xa9\n\n" {
            p.push(&[*b], &mut out);
        }
        assert_eq!(out, vec![Event { event: None, data: "hé".into() }]);
    }
}
