//! What people read: aligned tables, colours (only on a terminal, never
//! with `NO_COLOR`), relative times, short ids, and escaping of untrusted
//! text (deploy output, names from webhooks) so that no escape sequence
//! reaches the terminal.

use std::fmt::Write as _;
use std::io::IsTerminal;

use deploybot_wire::{AgentStatus, JobStatus, Timestamp};
use serde::Serialize;

/// Shortest job id shown: 8 hex digits, like git's short SHAs.
pub const SHORT_ID: usize = 8;
/// Columns of a table are separated by this.
const GAP: &str = "  ";

/// How a stream looks: coloured or plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    /// Colour when the stream is a terminal, `NO_COLOR` is unset (or empty,
    /// as no-color.org says) and `TERM` is not `dumb`.
    pub fn detect(is_terminal: bool) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Style {
            colour: is_terminal && !no_color && !dumb,
        }
    }

    pub fn stdout() -> Style {
        Style::detect(std::io::stdout().is_terminal())
    }

    pub fn stderr() -> Style {
        Style::detect(std::io::stderr().is_terminal())
    }

    /// `text` in `paint`, if colour is on.
    pub fn paint(self, paint: Paint, text: &str) -> String {
        match paint.code() {
            Some(code) if self.colour => format!("\x1b[{code}m{text}\x1b[0m"),
            _ => text.to_owned(),
        }
    }
}

/// The few colours used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    Plain,
    Bold,
    Dim,
    Red,
    Green,
    Yellow,
    Cyan,
}

impl Paint {
    fn code(self) -> Option<&'static str> {
        match self {
            Paint::Plain => None,
            Paint::Bold => Some("1"),
            Paint::Dim => Some("2"),
            Paint::Red => Some("31"),
            Paint::Green => Some("32"),
            Paint::Yellow => Some("33"),
            Paint::Cyan => Some("36"),
        }
    }

    pub fn of_job(status: JobStatus) -> Paint {
        match status {
            JobStatus::Success => Paint::Green,
            JobStatus::Failed | JobStatus::Lost => Paint::Red,
            JobStatus::Running => Paint::Cyan,
            JobStatus::Pending => Paint::Yellow,
            JobStatus::Cancelled | JobStatus::Superseded => Paint::Dim,
        }
    }

    pub fn of_agent(status: AgentStatus) -> Paint {
        match status {
            AgentStatus::Online | AgentStatus::Idle => Paint::Green,
            AgentStatus::Busy => Paint::Cyan,
            AgentStatus::Offline => Paint::Red,
        }
    }
}

/// One cell: its text (escaped when made) and colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    text: String,
    paint: Paint,
}

impl Cell {
    pub fn new(text: impl AsRef<str>) -> Cell {
        Cell::painted(text, Paint::Plain)
    }

    pub fn painted(text: impl AsRef<str>, paint: Paint) -> Cell {
        let text = escape_cell(text.as_ref());
        Cell {
            text: if text.is_empty() {
                "-".to_owned()
            } else {
                text
            },
            paint,
        }
    }

    /// `-` for nothing.
    pub fn none() -> Cell {
        Cell::new("")
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::new(text)
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell::new(text)
    }
}

/// Rows under a header, columns aligned on what is visible (colour codes
/// take no room), no trailing spaces.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "cells of a row");
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self, style: Style) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.text.chars().count());
            }
        }
        let header: Vec<Cell> = self
            .headers
            .iter()
            .map(|h| Cell {
                text: (*h).to_owned(),
                paint: Paint::Bold,
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            let last = row.len().saturating_sub(1);
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                line.push_str(&style.paint(cell.paint, &cell.text));
                if i < last {
                    let pad = width - cell.text.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(GAP);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table, or `empty` (on stderr, so that scripts reading
    /// stdout see nothing) when it has no rows.
    pub fn print(&self, empty: &str) {
        if self.is_empty() {
            eprintln!("{empty}");
        } else {
            write_stdout(format_args!("{}", self.render(Style::stdout())));
        }
    }
}

/// `key  value` lines, keys aligned: one record (a job, a token).
pub fn print_fields(fields: &[(&str, String)]) {
    let style = Style::stdout();
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in fields {
        let key = format!("{key:width$}");
        outln!("{}{GAP}{value}", style.paint(Paint::Bold, &key));
    }
}

/// A ref as tables show it: a branch by its name (`main`), anything else
/// in full (`refs/tags/v1.2.0`).
pub fn short_ref(git_ref: &str) -> &str {
    git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref)
}

/// Writes to stdout. A reader that went away (`| head`) ends the process
/// as SIGPIPE would (exit 141), silently; any other failure says why.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_fmt(args).and_then(|()| out.flush()) {
        if err.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to stdout: {err}");
            std::process::exit(1);
        }
        std::process::exit(141);
    }
}

/// The API's JSON for scripts: the wire type, pretty-printed.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(json) => outln!("{json}"),
        // Wire types always serialize; say so if one ever does not.
        Err(err) => eprintln!("error: cannot print JSON: {err}"),
    }
}

/// One JSON value per line, for streams.
pub fn print_json_line<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(json) => outln!("{json}"),
        Err(err) => eprintln!("error: cannot print JSON: {err}"),
    }
}

/// Deploy output as it may reach a terminal: control characters (except
/// tab), DEL, C1 controls and bidirectional overrides become visible
/// escapes such as `\x1b`, so a deploy cannot move the cursor, retitle the
/// window or hide text.
pub fn escape_log(text: &str) -> String {
    escape(text, true)
}

/// Like [`escape_log`], tabs included: a cell is one line of one column.
pub fn escape_cell(text: &str) -> String {
    escape(text, false)
}

fn escape(text: &str, keep_tab: bool) -> String {
    if !text.chars().any(|c| needs_escape(c, keep_tab)) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c, keep_tab) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\t' => write!(out, "\\t"),
            '\n' => write!(out, "\\n"),
            '\r' => write!(out, "\\r"),
            c if (c as u32) < 0x100 => write!(out, "\\x{:02x}", c as u32),
            c => write!(out, "\\u{{{:x}}}", c as u32),
        };
    }
    out
}

fn needs_escape(c: char, keep_tab: bool) -> bool {
    match c {
        '\t' => !keep_tab,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        // Bidirectional embeddings, overrides and isolates reorder what
        // follows them on screen.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// `now` for relative times.
pub fn now() -> Timestamp {
    time::OffsetDateTime::now_utc()
}

/// `3m ago`, `just now`, `in 29d`.
pub fn ago(at: Timestamp, now: Timestamp) -> String {
    let seconds = (now - at).whole_seconds();
    match seconds {
        // Rounded up: a token made to expire in 30d says so, not 29d.
        s if s < 0 => format!("in {}", span_up(s.unsigned_abs())),
        0 => "just now".to_owned(),
        s => format!("{} ago", span(s.unsigned_abs())),
    }
}

/// [`ago`] of an optional time, `-` when absent.
pub fn ago_or_dash(at: Option<Timestamp>, now: Timestamp) -> String {
    at.map_or_else(|| "-".to_owned(), |at| ago(at, now))
}

/// The largest unit only: `45s`, `3m`, `5h`, `12d`.
fn span(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Like [`span`], rounded up to the unit.
fn span_up(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s.div_ceil(60)),
        s if s < 86_400 => format!("{}h", s.div_ceil(3600)),
        s => format!("{}d", s.div_ceil(86_400)),
    }
}

/// How long something took: `4s`, `2m13s`, `1h02m`.
pub fn took(from: Timestamp, to: Timestamp) -> String {
    let seconds = (to - from).whole_seconds().max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// An absolute time, to the second, UTC.
pub fn timestamp(at: Timestamp) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| at.to_string())
}

/// Each id as tables show it: its last [`SHORT_ID`] characters, which in a
/// UUIDv7 are random (its first ones are the time it was made, shared by
/// every job of a push), so one width fits everywhere. Two ids of `ids`
/// with the same tail (about one chance in 10^4 among a thousand jobs) get
/// as many more characters as tell them apart. `deploybot job`, `logs`,
/// `cancel` and `retry` take such a tail, as they take a prefix.
pub fn short_ids(ids: &[&str]) -> Vec<String> {
    ids.iter()
        .map(|id| {
            let longest_shared = ids
                .iter()
                .filter(|other| *other != id)
                .map(|other| common_suffix(id, other))
                .max()
                .unwrap_or(0);
            tail(id, (longest_shared + 1).max(SHORT_ID))
        })
        .collect()
}

/// One id alone: its last [`SHORT_ID`] characters.
pub fn short_id(id: &str) -> String {
    tail(id, SHORT_ID)
}

fn tail(id: &str, len: usize) -> String {
    let chars: Vec<char> = id.chars().collect();
    chars[chars.len().saturating_sub(len)..].iter().collect()
}

fn common_suffix(a: &str, b: &str) -> usize {
    a.chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// A commit as people say it: 7 characters.
pub fn short_sha(sha: Option<&str>) -> String {
    sha.map_or_else(|| "-".to_owned(), |sha| sha.chars().take(7).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn tables_align_on_visible_text_without_trailing_spaces() {
        let mut table = Table::new(&["ID", "STATUS", "NOTE"]);
        table.row(vec![
            "0195".into(),
            Cell::painted("success", Paint::Green),
            Cell::none(),
        ]);
        table.row(vec![
            "01".into(),
            Cell::painted("failed", Paint::Red),
            "x".into(),
        ]);
        let plain = table.render(Style { colour: false });
        assert_eq!(
            plain,
            "ID    STATUS   NOTE\n\
             0195  success  -\n\
             01    failed   x\n"
        );
        let coloured = table.render(Style { colour: true });
        assert_eq!(
            coloured.lines().nth(2),
            Some("01    \x1b[31mfailed\x1b[0m   x")
        );
    }

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(
            escape_log("red \x1b[31mtext\x07\tok\r"),
            "red \\x1b[31mtext\\x07\tok\\r"
        );
        assert_eq!(escape_cell("a\tb\nc"), "a\\tb\\nc");
        assert_eq!(escape_log("\u{9b}2J \u{202e}abc"), "\\x9b2J \\u{202e}abc");
        assert_eq!(escape_log("plain ünïcode ✓"), "plain ünïcode ✓");
        // A cell made of nothing shows a dash; escaped text never hides.
        assert_eq!(Cell::new("\x1b").text, "\\x1b");
    }

    #[test]
    fn relative_times_use_the_largest_unit() {
        let now = datetime!(2026-01-10 12:00:00 UTC);
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(datetime!(2026-01-10 11:59:15 UTC), now), "45s ago");
        assert_eq!(ago(datetime!(2026-01-10 11:57:00 UTC), now), "3m ago");
        assert_eq!(ago(datetime!(2026-01-10 07:00:00 UTC), now), "5h ago");
        assert_eq!(ago(datetime!(2025-12-29 12:00:00 UTC), now), "12d ago");
        assert_eq!(ago(datetime!(2026-02-09 12:00:00 UTC), now), "in 30d");
        assert_eq!(took(now, datetime!(2026-01-10 12:02:13 UTC)), "2m13s");
        assert_eq!(took(now, datetime!(2026-01-10 13:02:13 UTC)), "1h02m");
        assert_eq!(timestamp(now), "2026-01-10 12:00:00 UTC");
    }

    #[test]
    fn short_ids_are_random_tails_that_grow_until_unique() {
        let ids = [
            "01952c1e-1111-7aaa-8000-00000000a001",
            "01952c1e-1111-7aab-8000-00000000a001",
            "01952c1e-1111-7aac-8000-0000000bb002",
        ];
        assert_eq!(
            short_ids(&ids),
            ["a-8000-00000000a001", "b-8000-00000000a001", "000bb002"]
        );
        assert_eq!(short_ids(&["abc"]), ["abc"]);
        assert_eq!(short_id("01952c1e-1111-7aaa-8000-00000000a001"), "0000a001");
    }
}
