//! An incremental Server-Sent Events parser, just enough for
//! `/sdk/v1/stream`: `event`, `data` and `id` fields, comments, and events
//! dispatched on a blank line. Lines are bounded so that a server sending an
//! endless line cannot grow the client's memory.

/// One dispatched event.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: String,
}

/// A line longer than the bound.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineTooLong;

/// The parser state between chunks.
#[derive(Debug)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    current: SseEvent,
    has_data: bool,
    max_line: usize,
}

impl SseParser {
    /// A parser refusing lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            line: Vec::new(),
            current: SseEvent::default(),
            has_data: false,
            max_line,
        }
    }

    /// Feeds a chunk; complete events are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), LineTooLong> {
        for &b in chunk {
            if b == b'\n' {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, out);
                self.line = line;
                self.line.clear();
            } else {
                if self.line.len() >= self.max_line {
                    return Err(LineTooLong);
                }
                self.line.push(b);
            }
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.current));
            }
            self.current = SseEvent::default();
            self.has_data = false;
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.current.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_comments() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.push(b": keep-alive\n\nevent: config\r\nid: 4\r\nda", &mut out)
            .unwrap();
        assert!(out.is_empty());
        p.push(
            b"ta: {\"version\":4}\r\n\r\nevent: config\ndata:{\"version\":5}\n\n",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                SseEvent {
                    event: "config".into(),
                    data: "{\"version\":4}".into()
                },
                SseEvent {
                    event: "config".into(),
                    data: "{\"version\":5}".into()
                }
            ]
        );
    }

    #[test]
    fn multi_line_data_joins_with_newlines() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.push(b"data: a\ndata: b\n\n", &mut out).unwrap();
        assert_eq!(out[0].data, "a\nb");
        assert_eq!(out[0].event, "");
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        assert_eq!(p.push(&[b'x'; 17], &mut out), Err(LineTooLong));
    }
}
