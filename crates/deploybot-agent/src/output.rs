//! Reading a deploy's stdout and stderr as lines.
//!
//! Each pipe has its own reader task; both feed one channel, so lines get
//! their place in the job's log in the order they arrive. The collector
//! hides secrets, remembers the last lines (for the failure report) and hands
//! every line to the uploader.

use std::collections::VecDeque;

use deploybot_wire::{LogStream, Timestamp};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::redact::Redactor;
use crate::uploader::LogSink;

/// Longer lines are cut: one line without a newline (a binary blob, a
/// minified file) must not grow the agent's memory or the log store without
/// bound. The controller refuses lines longer than this (in UTF-8, after the
/// `\u{fffd}`s of invalid bytes, which take three bytes each), marker included.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;
/// Appended to a line that was cut.
pub(crate) const CUT_MARKER: &str = " [line cut at 64 KiB]";
/// How many of the last lines a failure report quotes.
pub(crate) const TAIL_LINES: usize = 20;
/// Each quoted line is cut to this, so the report stays well within the
/// controller's 16 KiB for `error` (the full lines are in the log).
const TAIL_LINE_BYTES: usize = 512;

/// A line of output ready to upload: secrets hidden, within the size limit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawLine {
    pub(crate) stream: LogStream,
    pub(crate) at: Timestamp,
    pub(crate) text: String,
}

/// A line as read from a pipe, secrets still in it.
#[derive(Debug)]
pub(crate) struct ReadLine {
    stream: LogStream,
    at: Timestamp,
    text: String,
    /// Longer than was read: the rest of it was dropped.
    cut: bool,
}

/// Reads `pipe` to its end, sending each line to `tx` in order. Lines are
/// split at `\n`, lose one trailing `\r`, and are decoded as UTF-8 with
/// invalid bytes replaced. A last line without `\n` is sent too.
///
/// A line is read up to [`MAX_LINE_BYTES`] plus `secret_len` (the longest
/// secret) bytes, and the last `secret_len` of a line cut there are dropped:
/// a secret that starts before the cut is then read whole, so it is hidden
/// before the line is cut to its limit, and no part of one is left.
pub(crate) async fn read_lines<R>(
    pipe: R,
    stream: LogStream,
    secret_len: usize,
    tx: mpsc::Sender<ReadLine>,
) where
    R: AsyncRead + Unpin,
{
    let read_at_most = MAX_LINE_BYTES + secret_len;
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    let mut cut = false;
    loop {
        let (consumed, complete) = match reader.fill_buf().await {
            Ok([]) => break,
            Ok(buf) => {
                let newline = buf.iter().position(|&b| b == b'\n');
                let chunk = &buf[..newline.unwrap_or(buf.len())];
                let room = read_at_most - line.len();
                if chunk.len() > room {
                    cut = true;
                }
                line.extend_from_slice(&chunk[..chunk.len().min(room)]);
                (
                    chunk.len() + usize::from(newline.is_some()),
                    newline.is_some(),
                )
            }
            Err(err) => {
                tracing::warn!(stream = stream.as_str(), error = %err, "cannot read deploy output");
                break;
            }
        };
        reader.consume(consumed);
        if complete {
            if tx
                .send(finish(stream, &line, cut, secret_len))
                .await
                .is_err()
            {
                return;
            }
            line.clear();
            cut = false;
        }
    }
    if !line.is_empty() || cut {
        // The receiver may be gone; then nobody wants the line.
        let _ = tx.send(finish(stream, &line, cut, secret_len)).await;
    }
}

fn finish(stream: LogStream, bytes: &[u8], cut: bool, secret_len: usize) -> ReadLine {
    let bytes = if cut {
        // Maybe the start of a secret: dropped (see `read_lines`).
        &bytes[..bytes.len().saturating_sub(secret_len)]
    } else {
        bytes.strip_suffix(b"\r").unwrap_or(bytes)
    };
    ReadLine {
        stream,
        at: Timestamp::now_utc(),
        text: String::from_utf8_lossy(bytes).into_owned(),
        cut,
    }
}

/// `line` with its secrets hidden, then cut to [`MAX_LINE_BYTES`] (in that
/// order: a secret that straddled the cut would leave its start otherwise).
pub(crate) fn clean(line: ReadLine, redactor: &Redactor) -> RawLine {
    let mut text = redactor.redact(&line.text);
    if line.cut || text.len() > MAX_LINE_BYTES {
        truncate(&mut text, MAX_LINE_BYTES - CUT_MARKER.len());
        text.push_str(CUT_MARKER);
    }
    RawLine {
        stream: line.stream,
        at: line.at,
        text,
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// The last [`TAIL_LINES`] lines of output, already redacted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, text: &str) {
        if self.0.len() == TAIL_LINES {
            self.0.pop_front();
        }
        let mut text = text.to_owned();
        if text.len() > TAIL_LINE_BYTES {
            truncate(&mut text, TAIL_LINE_BYTES - '…'.len_utf8());
            text.push('…');
        }
        self.0.push_back(text);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The lines joined by `\n`.
    pub(crate) fn text(&self) -> String {
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Cleans every line from `rx` and hands it to `sink`, until both readers
/// are done; returns the last lines.
pub(crate) async fn collect(
    mut rx: mpsc::Receiver<ReadLine>,
    redactor: Redactor,
    sink: LogSink,
) -> Tail {
    let mut tail = Tail::default();
    while let Some(line) = rx.recv().await {
        let line = clean(line, &redactor);
        tail.push(&line.text);
        sink.push(line);
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<String> {
        cleaned_lines_of(input, &Redactor::default()).await
    }

    async fn cleaned_lines_of(input: &[u8], redactor: &Redactor) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(read_lines(
            std::io::Cursor::new(input.to_vec()),
            LogStream::Stdout,
            redactor.longest(),
            tx,
        ));
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            let line = clean(line, redactor);
            assert_eq!(line.stream, LogStream::Stdout);
            lines.push(line.text);
        }
        reader.await.unwrap();
        lines
    }

    #[tokio::test]
    async fn a_secret_straddling_the_cut_is_hidden_whole() {
        let secret = "s3cr3t-0123456789-abcdefghij";
        let redactor = Redactor::new([("DB_PASSWORD", secret)]);
        for start in [MAX_LINE_BYTES - 40, MAX_LINE_BYTES - 10, MAX_LINE_BYTES - 1] {
            let mut input = vec![b'x'; start];
            input.extend_from_slice(secret.as_bytes());
            input.extend_from_slice(&[b'y'; 100]);
            input.extend_from_slice(b"\n");
            let lines = cleaned_lines_of(&input, &redactor).await;
            assert_eq!(lines.len(), 1);
            let line = &lines[0];
            assert!(line.len() <= MAX_LINE_BYTES, "{}", line.len());
            assert!(line.ends_with(CUT_MARKER));
            for part in [&secret[..4], &secret[..8], "s3cr"] {
                assert!(
                    !line.contains(part),
                    "{start}: part {part:?} of the secret left"
                );
            }
        }
    }

    #[tokio::test]
    async fn splits_lines_strips_cr_and_keeps_a_last_partial_line() {
        assert_eq!(
            lines_of(b"one\r\ntwo\n\nthree\rstill three\nlast").await,
            ["one", "two", "", "three\rstill three", "last"]
        );
        assert!(lines_of(b"").await.is_empty());
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        assert_eq!(lines_of(b"caf\xc3\xa9 \xff!\n").await, ["café \u{fffd}!"]);
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_the_next_line_is_intact() {
        let mut input = vec![b'x'; MAX_LINE_BYTES * 3 + 17];
        input.extend_from_slice(b"\nnext\n");
        let lines = lines_of(&input).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert!(lines[0].ends_with(CUT_MARKER));
        assert_eq!(lines[1], "next");
    }

    #[tokio::test]
    async fn lines_stay_within_the_limit_after_decoding() {
        // Each invalid byte becomes a three-byte U+FFFD.
        let mut input = vec![b'a'];
        input.extend(std::iter::repeat_n(0xff, MAX_LINE_BYTES / 2));
        input.push(b'\n');
        let lines = lines_of(&input).await;
        assert!(lines[0].len() <= MAX_LINE_BYTES, "{}", lines[0].len());
        assert!(lines[0].starts_with("a\u{fffd}"));
        assert!(lines[0].ends_with(CUT_MARKER));
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let mut tail = Tail::default();
        for n in 1..=25 {
            tail.push(&format!("line {n}"));
        }
        let text = tail.text();
        assert!(text.starts_with("line 6\n"));
        assert!(text.ends_with("\nline 25"));
        assert_eq!(text.lines().count(), TAIL_LINES);

        tail.push(&"é".repeat(1000));
        let last = tail.text().lines().last().unwrap().to_owned();
        assert!(
            last.len() <= TAIL_LINE_BYTES && last.ends_with('…'),
            "{last}"
        );
    }
}
