//! The CLI as a client of a controller (`deploybot jobs`, `deploy --wait`,
//! …), and its output made stable for snapshots.

use super::*;

/// `deploybot` in `dir` as a client of the controller at `address`, with
/// the admin token in `DEPLOYBOT_TOKEN` and a config directory of its own
/// (`dir/config`), so that nobody's `~/.config/deploybot` is read.
pub fn client(dir: &Path, address: &str) -> Command {
    let mut cmd = deploybot(dir);
    cmd.env("DEPLOYBOT_URL", address)
        .env("DEPLOYBOT_TOKEN", ADMIN_TOKEN)
        .env("XDG_CONFIG_HOME", dir.join("config"));
    cmd
}

/// Runs `cmd` with `input` on its stdin, like [`run`].
pub fn run_with_stdin(mut cmd: Command, input: &str) -> Finished {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deploybot");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    finish(child, &cmd)
}

/// A running client command whose stdout and stderr are followed line by
/// line; killed when dropped.
pub struct Following {
    child: Child,
    pub pid: u32,
    pub stdout: Log,
    pub stderr: Log,
}

impl Following {
    pub fn spawn(mut cmd: Command) -> Following {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn deploybot");
        let stdout = Log::follow(child.stdout.take().expect("piped stdout"));
        let stderr = Log::follow(child.stderr.take().expect("piped stderr"));
        Following {
            pid: child.id(),
            child,
            stdout,
            stderr,
        }
    }

    /// Waits (at most [`DEADLINE`]) for the process to exit and for both of
    /// its outputs to be read to the end (each is read by its own thread,
    /// which may lag behind the exit).
    pub fn wait(&mut self) -> ExitStatus {
        assert!(
            self.stdout.wait_closed(DEADLINE) && self.stderr.wait_closed(DEADLINE),
            "still running after {DEADLINE:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.text(),
            self.stderr.text()
        );
        self.child.wait().expect("wait for deploybot")
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CLI output made stable for a snapshot: `dir` becomes `<dir>`; ids,
/// token ids, relative times, dates and durations become placeholders;
/// then the columns of each table (lines of cells two or more spaces
/// apart) are aligned again, since placeholders are not as wide as what
/// they replace.
pub fn normalize_output(text: &str, dir: &Path) -> String {
    let text = text.replace(&dir.display().to_string(), "<dir>");
    let mut out: Vec<String> = Vec::new();
    let mut table: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        let cells: Vec<String> = line
            .split("  ")
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .map(redact_cell)
            .collect();
        if cells.len() > 1 {
            table.push(cells);
        } else {
            align(&mut table, &mut out);
            out.push(redact_cell(line));
        }
    }
    align(&mut table, &mut out);
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn align(table: &mut Vec<Vec<String>>, out: &mut Vec<String>) {
    let mut widths: Vec<usize> = Vec::new();
    for row in table.iter() {
        for (i, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    for row in table.drain(..) {
        let last = row.len() - 1;
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == last {
                    cell.clone()
                } else {
                    format!("{cell:width$}", width = widths[i])
                }
            })
            .collect();
        out.push(line.join("  "));
    }
}

fn redact_cell(cell: &str) -> String {
    let cell = cell.replace("just now", "<ago>");
    let words: Vec<&str> = cell.split(' ').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words.get(i + 1) == Some(&"ago") && is_span(words[i]) {
            out.push("<ago>".to_owned());
            i += 2;
        } else {
            out.push(redact_word(words[i]));
            i += 1;
        }
    }
    out.join(" ")
}

fn redact_word(word: &str) -> String {
    let core = word
        .trim_start_matches('(')
        .trim_end_matches([')', ',', ':', '.']);
    let Some(start) = word.find(core).filter(|_| !core.is_empty()) else {
        return word.to_owned();
    };
    let (before, after) = (&word[..start], &word[start + core.len()..]);
    let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
    let replaced = if core.len() >= 8
        && hex(&core[..8])
        && (core.len() == 8 || core.as_bytes()[8] == b'-')
        && core.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    {
        "<id>"
    } else if core.len() == 16 && core.starts_with("tok_") && hex(&core[4..]) {
        "tok_<id>"
    } else if is_date(core) {
        "<date>"
    } else if is_clock(core) {
        "<time>"
    } else if is_took(core) {
        "<took>"
    } else {
        core
    };
    format!("{before}{replaced}{after}")
}

/// `45s`, `3m`, `5h`, `12d`.
fn is_span(word: &str) -> bool {
    word.len() >= 2
        && word[..word.len() - 1].chars().all(|c| c.is_ascii_digit())
        && word.ends_with(['s', 'm', 'h', 'd'])
}

/// `4s`, `2m13s`, `1h02m`.
fn is_took(word: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if let Some(rest) = word.strip_suffix('s') {
        return match rest.split_once('m') {
            Some((m, s)) => digits(m) && digits(s),
            None => digits(rest),
        };
    }
    if let Some(rest) = word.strip_suffix('m') {
        return rest
            .split_once('h')
            .is_some_and(|(h, m)| digits(h) && digits(m));
    }
    false
}

/// `2026-01-02`.
fn is_date(word: &str) -> bool {
    word.len() == 10
        && word.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// `03:04:05`.
fn is_clock(word: &str) -> bool {
    word.len() == 8
        && word.char_indices().all(|(i, c)| {
            if i == 2 || i == 5 {
                c == ':'
            } else {
                c.is_ascii_digit()
            }
        })
}
