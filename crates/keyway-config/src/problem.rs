//! Problems found while loading a configuration, with their position.
//!
//! Invariants: a [`Problem`] position is 1-based (line and column, the column
//! counted in characters, not bytes), or `0:0` when the problem concerns a whole
//! file rather than a place in it (the file cannot be read, no service at all).
//! [`Problems`] returned as an `Err` is never empty. No message ever contains a
//! password.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One thing wrong with the configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column, in characters; 0 when the problem concerns the whole file.
    pub col: usize,
    /// Lowercase, states the problem and the expected form.
    pub message: String,
}

impl Problem {
    /// A problem about a whole file (no position in it).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Problem {
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )
        }
    }
}

/// Every problem found in one load, in file order (main file first), then by
/// position. Displayed one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            problem.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Problems {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The text of one configuration file and its path, to turn byte offsets into
/// `line:col` positions.
#[derive(Debug)]
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// A problem at the start of `span`.
    pub fn problem(&self, span: &Range<usize>, message: impl Into<String>) -> Problem {
        let (line, col) = line_col(&self.text, span.start);
        Problem {
            file: self.path.clone(),
            line,
            col,
            message: message.into(),
        }
    }

    /// The directory that relative paths in this file are resolved against.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(""))
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
///
/// An offset past the end points just after the last character; an offset
/// inside a multi-byte character points at that character.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("abc", 2), (1, 3));
        assert_eq!(line_col("a\nbc", 2), (2, 1));
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("a\n", 2), (2, 1));
    }

    #[test]
    fn line_col_counts_characters_not_bytes() {
        // "é" is two bytes, "€" three.
        let text = "x = \"é€\" y";
        let y = text.find('y').expect("y is in the text");
        assert_eq!(line_col(text, y), (1, 10));
        // Inside a multi-byte character: that character's column.
        let euro = text.find('€').expect("€ is in the text");
        assert_eq!(line_col(text, euro + 1), (1, 7));
    }

    #[test]
    fn line_col_clamps_past_the_end() {
        assert_eq!(line_col("ab\ncd", 99), (2, 3));
        assert_eq!(line_col("", 5), (1, 1));
    }

    #[test]
    fn crlf_lines() {
        let text = "a = 1\r\nb = 2\r\n";
        assert_eq!(line_col(text, text.find('b').expect("b")), (2, 1));
    }

    #[test]
    fn display_forms() {
        let p = Problem {
            file: PathBuf::from("/etc/keyway/keyway.toml"),
            line: 3,
            col: 7,
            message: "unknown key \"x\" in [admin]".into(),
        };
        assert_eq!(
            p.to_string(),
            "/etc/keyway/keyway.toml:3:7: unknown key \"x\" in [admin]"
        );
        let whole = Problem::whole_file(Path::new("k.toml"), "cannot read file: no such file");
        assert_eq!(whole.to_string(), "k.toml: cannot read file: no such file");
        let all = Problems(vec![p, whole]);
        assert_eq!(all.to_string().lines().count(), 2);
    }
}
