//! The log lines of one job waiting for upload.
//!
//! Line numbers are given when a batch is formed (not when a line is read),
//! which is what lets the buffer drop its oldest lines when the controller
//! stays away too long without leaving a gap in the numbering: a note takes
//! their place.

use std::collections::VecDeque;

use deploybot_wire::{LogLine, LogStream, Timestamp};
use tokio::time::Instant;

use crate::output::RawLine;

/// Most lines per upload.
pub(crate) const BATCH_LINES: usize = 500;
/// While the controller is unreachable the buffer keeps this much; beyond it
/// the oldest lines go (the newest say most about how a deploy ends).
const MAX_BUFFERED_LINES: usize = 200_000;
const MAX_BUFFERED_BYTES: usize = 64 << 20;
/// A batch's JSON stays far below the controller's 16 MiB upload limit, also
/// when its 500 lines are long ones.
const BATCH_JSON_BYTES: usize = 4 << 20;
/// The JSON of a line besides its text: number, stream, timestamp, names.
const LINE_JSON_OVERHEAD: usize = 96;

struct Pending {
    line: RawLine,
    buffered: Instant,
}

#[derive(Default)]
pub(crate) struct Buffer {
    lines: VecDeque<Pending>,
    bytes: usize,
    /// Lines dropped since the last batch was formed.
    dropped: u64,
    /// The number the last uploaded line got.
    last_number: u64,
    /// No more lines will come: send the rest now.
    pub(crate) closed: bool,
    /// The lease is gone: keep nothing.
    pub(crate) lost: bool,
}

impl Buffer {
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// When the oldest waiting line was pushed.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.lines.front().map(|pending| pending.buffered)
    }

    /// Adds a line, dropping the oldest ones if the buffer is full.
    pub(crate) fn push(&mut self, line: RawLine, now: Instant) {
        let size = line.text.len();
        while self.lines.len() >= MAX_BUFFERED_LINES
            || (!self.lines.is_empty() && self.bytes + size > MAX_BUFFERED_BYTES)
        {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.line.text.len();
            self.dropped += 1;
        }
        self.bytes += size;
        self.lines.push_back(Pending {
            line,
            buffered: now,
        });
    }

    /// Up to [`BATCH_LINES`] numbered lines (and at most `BATCH_JSON_BYTES`
    /// of JSON) from the front, led by a note when lines were dropped since
    /// the last batch.
    pub(crate) fn take_batch(&mut self) -> Vec<LogLine> {
        let mut batch = Vec::with_capacity(self.lines.len().min(BATCH_LINES));
        if self.dropped > 0 {
            let text = format!(
                "[deploybot agent] {} lines of output were dropped here: the controller was unreachable for too long",
                self.dropped
            );
            self.dropped = 0;
            batch.push(self.number(LogStream::Stderr, Timestamp::now_utc(), text));
        }
        let mut size = 0;
        while batch.len() < BATCH_LINES {
            let Some(next) = self.lines.front() else {
                break;
            };
            let line_size = json_size(&next.line.text);
            if !batch.is_empty() && size + line_size > BATCH_JSON_BYTES {
                break;
            }
            size += line_size;
            let Some(pending) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= pending.line.text.len();
            let RawLine { stream, at, text } = pending.line;
            batch.push(self.number(stream, at, text));
        }
        batch
    }

    /// Forgets every waiting line (the job was taken away).
    pub(crate) fn clear(&mut self) {
        self.lines.clear();
        self.bytes = 0;
        self.dropped = 0;
    }

    fn number(&mut self, stream: LogStream, at: Timestamp, text: String) -> LogLine {
        self.last_number += 1;
        LogLine {
            line: self.last_number,
            stream,
            at,
            text,
        }
    }
}

/// How many bytes `text` takes in a JSON upload (as serde_json escapes it),
/// plus the rest of its line.
fn json_size(text: &str) -> usize {
    let escaped: usize = text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum();
    LINE_JSON_OVERHEAD + escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawLine {
        RawLine {
            stream: LogStream::Stdout,
            at: Timestamp::now_utc(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn batches_are_numbered_on_without_gaps() {
        let mut buffer = Buffer::default();
        let now = Instant::now();
        for n in 0..(BATCH_LINES + 3) {
            buffer.push(raw(&format!("l{n}")), now);
        }
        let first = buffer.take_batch();
        let second = buffer.take_batch();
        assert_eq!(first.len(), BATCH_LINES);
        assert_eq!(second.len(), 3);
        let numbers: Vec<u64> = first.iter().chain(&second).map(|l| l.line).collect();
        assert_eq!(numbers, (1..=(BATCH_LINES as u64 + 3)).collect::<Vec<_>>());
        assert_eq!(second[2].text, format!("l{}", BATCH_LINES + 2));
        assert_eq!(buffer.bytes, 0);
    }

    #[test]
    fn a_full_buffer_drops_its_oldest_lines_and_says_so() {
        let mut buffer = Buffer::default();
        let now = Instant::now();
        let total = MAX_BUFFERED_LINES + 7;
        for n in 0..total {
            buffer.push(raw(&n.to_string()), now);
        }
        assert_eq!(buffer.lines.len(), MAX_BUFFERED_LINES);
        let batch = buffer.take_batch();
        assert_eq!(batch[0].line, 1);
        assert!(
            batch[0].text.contains("7 lines of output were dropped"),
            "{}",
            batch[0].text
        );
        assert_eq!(batch[1].line, 2);
        assert_eq!(batch[1].text, "7");
        assert_eq!(buffer.dropped, 0);
    }

    #[test]
    fn long_lines_make_smaller_batches() {
        let mut buffer = Buffer::default();
        let now = Instant::now();
        let long = "\"".repeat(60 * 1024);
        for _ in 0..100 {
            buffer.push(raw(&long), now);
        }
        let batch = buffer.take_batch();
        let json = serde_json::to_vec(&batch).unwrap();
        assert!(batch.len() < 100);
        assert!(json.len() <= BATCH_JSON_BYTES, "{}", json.len());
        assert!(json.len() > BATCH_JSON_BYTES * 9 / 10, "{}", json.len());
    }

    #[test]
    fn json_sizes_match_serde() {
        for text in ["plain", "quote\" back\\slash", "tab\tnl\nbell\u{7}", "é ☃"] {
            let line = LogLine {
                line: 123_456,
                stream: LogStream::Stderr,
                at: Timestamp::now_utc(),
                text: text.to_owned(),
            };
            let actual = serde_json::to_string(&line).unwrap().len();
            let estimate = json_size(text);
            assert!(
                estimate >= actual && estimate < actual + LINE_JSON_OVERHEAD,
                "{text:?}: {estimate} vs {actual}"
            );
        }
    }

    #[test]
    fn the_byte_cap_holds_too() {
        let mut buffer = Buffer::default();
        let now = Instant::now();
        let big = "x".repeat(MAX_BUFFERED_BYTES / 4 + 1);
        for _ in 0..5 {
            buffer.push(raw(&big), now);
        }
        assert_eq!(buffer.lines.len(), 3);
        assert_eq!(buffer.dropped, 2);
        assert!(buffer.bytes <= MAX_BUFFERED_BYTES);
    }
}
