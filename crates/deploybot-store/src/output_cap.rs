//! The cap on a job's stored output, the same on every backend: lines are
//! stored until the job's output reaches the cap; the first line that does
//! not fit is replaced by a marker saying so, and no line after it is
//! stored. (A runaway deploy must not fill the database.)

use deploybot_wire::{LogLine, LogStream};

/// What one upload stores of a job whose output holds `stored` bytes.
#[derive(Debug, Default)]
pub(crate) struct Fit<'a> {
    /// The lines to store, by line number.
    pub(crate) lines: Vec<&'a LogLine>,
    /// The marker line, when this upload reaches the cap.
    pub(crate) marker: Option<LogLine>,
    /// The line number output stops at from now on (the marker's).
    pub(crate) cut_at: Option<u64>,
    /// Their bytes (the marker's excepted).
    pub(crate) bytes: u64,
    /// Lines not stored because of the cap.
    pub(crate) dropped: u64,
}

/// Which of `lines` (each line number once) fit a job whose output holds
/// `stored` bytes and, if it reached the cap before, stops at `cut_at`.
pub(crate) fn fit<'a>(
    lines: &[&'a LogLine],
    stored: u64,
    cut_at: Option<u64>,
    max_bytes: u64,
) -> Fit<'a> {
    let mut sorted = lines.to_vec();
    sorted.sort_by_key(|line| line.line);
    let mut fit = Fit {
        cut_at,
        ..Fit::default()
    };
    let mut total = stored;
    for line in sorted {
        if fit.cut_at.is_some_and(|cut| line.line >= cut) {
            fit.dropped += 1;
            continue;
        }
        let size = line.text.len() as u64;
        if fit.cut_at.is_none() && total + size > max_bytes {
            fit.cut_at = Some(line.line);
            fit.marker = Some(LogLine {
                line: line.line,
                stream: LogStream::Stderr,
                at: line.at,
                text: format!(
                    "[deploybot] this job's output passed the {} MiB the controller stores of it; the rest was not stored",
                    max_bytes / (1024 * 1024)
                ),
            });
            fit.dropped += 1;
            continue;
        }
        total += size;
        fit.bytes += size;
        fit.lines.push(line);
    }
    fit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u64, text: &str) -> LogLine {
        LogLine {
            line: n,
            stream: LogStream::Stdout,
            at: time::OffsetDateTime::UNIX_EPOCH,
            text: text.to_owned(),
        }
    }

    #[test]
    fn lines_fit_until_the_cap_then_a_marker_takes_the_next_ones_place() {
        let lines = [
            line(3, "cccc"),
            line(1, "aaaa"),
            line(2, "bbbb"),
            line(4, "dd"),
        ];
        let refs: Vec<&LogLine> = lines.iter().collect();
        let fit = fit(&refs, 0, None, 10);
        let stored: Vec<u64> = fit.lines.iter().map(|l| l.line).collect();
        assert_eq!(stored, [1, 2]);
        assert_eq!(fit.bytes, 8);
        assert_eq!(fit.cut_at, Some(3));
        assert_eq!(fit.marker.as_ref().map(|m| m.line), Some(3));
        assert_eq!(fit.dropped, 2);

        // Later: only lines before the cut (late retries) are stored.
        let later = [line(2, "bbbb"), line(5, "e")];
        let refs: Vec<&LogLine> = later.iter().collect();
        let fit = super::fit(&refs, 8, Some(3), 10);
        assert_eq!(fit.lines.iter().map(|l| l.line).collect::<Vec<_>>(), [2]);
        assert!(fit.marker.is_none());
        assert_eq!(fit.dropped, 1);
    }
}
