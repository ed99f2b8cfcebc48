//! deb822 paragraphs: the format of `Packages`, `Release` and dpkg's `status` (deb822(5)).
//!
//! Hand-written rather than taken from a crate, after looking at the maintained ones:
//! `deb822-lossless` builds a rowan syntax tree (several times the text in memory — a `Packages`
//! file is ~45 MB — and pulls `rowan` + `regex`), `deb822-fast` reports errors without a line
//! number and keeps no stanza text, `rfc822-like` is serde-only (no field order, no raw text) and
//! `debian-control` is built on `deb822-lossless`. What we need is small: ordered fields, a
//! case-insensitive lookup, the stanza's own text (copied as is into dpkg's database) and the
//! 1-based line of every error. A [`Paragraph`] is its text plus field offsets into it, so a whole
//! index costs about its own size, and [`ParagraphReader`] reads stanza by stanza from any
//! [`BufRead`] (a decompressing stream), never holding more than one stanza's lines in flight.

use std::io::BufRead;

/// Largest stanza accepted (dpkg's biggest real stanzas are a few tens of KiB).
pub const MAX_PARAGRAPH_BYTES: usize = 8 << 20;

/// Errors from reading deb822 text; every one names its 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("line {line}: continuation line (starts with a space) before any field")]
    ContinuationFirst { line: usize },
    #[error("line {line}: expected `Field: value`, found {text:?}")]
    NoColon { line: usize, text: String },
    #[error("line {line}: invalid field name {name:?}")]
    BadFieldName { line: usize, name: String },
    #[error("line {line}: field {name:?} appears twice in one paragraph (first on line {first})")]
    Duplicate {
        line: usize,
        first: usize,
        name: String,
    },
    #[error("line {line}: paragraph is larger than {MAX_PARAGRAPH_BYTES} bytes")]
    TooLarge { line: usize },
    #[error("line {line}: not valid UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: read failed: {source}")]
    Io {
        line: usize,
        #[source]
        source: std::io::Error,
    },
}

/// One field: offsets into the paragraph's text (u32: a paragraph is at most 8 MiB), and its
/// line relative to the paragraph's first line. Small, since a whole index is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name_start: u32,
    name_end: u32,
    value_start: u32,
    value_end: u32,
    line: u32,
}

impl Field {
    fn name<'a>(&self, raw: &'a str) -> &'a str {
        &raw[self.name_start as usize..self.name_end as usize]
    }
    fn value<'a>(&self, raw: &'a str) -> &'a str {
        &raw[self.value_start as usize..self.value_end as usize]
    }
}

/// One deb822 stanza: its text and its fields in order.
///
/// A field's value is the text after the colon with surrounding white space removed; a
/// multi-line value keeps its continuation lines as written (`"first\n second\n ."`), or starts at
/// the first continuation line when the field's own line is empty (`SHA256:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph {
    raw: String,
    fields: Vec<Field>,
    line: usize,
}

impl Paragraph {
    /// The value of the field `name` (ASCII case-insensitive), if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.name(&self.raw).eq_ignore_ascii_case(name))
            .map(|f| f.value(&self.raw))
    }

    /// The 1-based line (in the whole input) where field `name` starts.
    pub fn field_line(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .find(|f| f.name(&self.raw).eq_ignore_ascii_case(name))
            .map(|f| self.line + f.line as usize)
    }

    /// Fields in their order, names as written.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|f| (f.name(&self.raw), f.value(&self.raw)))
    }

    /// The stanza's text as read (comment lines dropped), each line ending in `\n`, no blank line.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The 1-based line where the stanza starts.
    pub fn line(&self) -> usize {
        self.line
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// The non-empty, trimmed lines of a multi-line value (`SHA256`, `Conffiles`, `Description`).
pub fn value_lines(value: &str) -> impl Iterator<Item = &str> {
    value.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// Parses every paragraph of `text`.
pub fn parse_paragraphs(text: &str) -> Result<Vec<Paragraph>, ControlError> {
    ParagraphReader::new(text.as_bytes()).collect()
}

/// Reads paragraphs one at a time from a stream.
pub struct ParagraphReader<R> {
    reader: R,
    line: usize,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> ParagraphReader<R> {
    pub fn new(reader: R) -> Self {
        ParagraphReader {
            reader,
            line: 0,
            buf: Vec::new(),
            done: false,
        }
    }

    /// Reads one line into `self.buf` (without its end of line); `false` at the end of input.
    fn read_line(&mut self) -> Result<bool, ControlError> {
        self.buf.clear();
        let limit = (MAX_PARAGRAPH_BYTES + 2) as u64;
        let n = std::io::Read::take(&mut self.reader, limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| ControlError::Io {
                line: self.line + 1,
                source,
            })?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        if self.buf.len() as u64 >= limit {
            return Err(ControlError::TooLarge { line: self.line });
        }
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        Ok(true)
    }

    fn next_paragraph(&mut self) -> Result<Option<Paragraph>, ControlError> {
        let mut p = Paragraph {
            raw: String::new(),
            fields: Vec::new(),
            line: 0,
        };
        loop {
            if !self.read_line()? {
                self.done = true;
                break;
            }
            let line_no = self.line;
            let line = std::str::from_utf8(&self.buf)
                .map_err(|_| ControlError::NotUtf8 { line: line_no })?;
            if line.trim().is_empty() {
                if p.fields.is_empty() {
                    continue;
                }
                break;
            }
            if line.starts_with('#') {
                continue;
            }
            if p.raw.len() + line.len() + 1 > MAX_PARAGRAPH_BYTES {
                return Err(ControlError::TooLarge { line: line_no });
            }
            let start = p.raw.len();
            p.raw.push_str(line);
            p.raw.push('\n');
            if line.starts_with([' ', '\t']) {
                let Some(last) = p.fields.last_mut() else {
                    return Err(ControlError::ContinuationFirst { line: line_no });
                };
                let end = (start + line.trim_end().len()) as u32;
                if last.value_start == last.value_end {
                    // `Field:` alone on its line: the value starts with this line.
                    last.value_start = start as u32;
                }
                last.value_end = end;
                continue;
            }
            let Some(colon) = line.find(':') else {
                return Err(ControlError::NoColon {
                    line: line_no,
                    text: line.chars().take(80).collect(),
                });
            };
            let name = &line[..colon];
            if !valid_field_name(name) {
                return Err(ControlError::BadFieldName {
                    line: line_no,
                    name: name.to_string(),
                });
            }
            if let Some(first) = p
                .fields
                .iter()
                .find(|f| f.name(&p.raw).eq_ignore_ascii_case(name))
            {
                return Err(ControlError::Duplicate {
                    line: line_no,
                    first: p.line + first.line as usize,
                    name: name.to_string(),
                });
            }
            let rest = &line[colon + 1..];
            let lead = rest.len() - rest.trim_start().len();
            let vstart = start + colon + 1 + lead;
            let vend = start + colon + 1 + rest.trim_end().len();
            if p.fields.is_empty() {
                p.line = line_no;
            }
            // Offsets fit in u32: the paragraph is at most MAX_PARAGRAPH_BYTES.
            p.fields.push(Field {
                name_start: start as u32,
                name_end: (start + colon) as u32,
                value_start: vstart as u32,
                value_end: vend.max(vstart) as u32,
                line: (line_no - p.line) as u32,
            });
        }
        // A whole index stays in memory: give back what the line-by-line growth reserved.
        p.raw.shrink_to_fit();
        p.fields.shrink_to_fit();
        Ok((!p.fields.is_empty()).then_some(p))
    }
}

impl<R: BufRead> Iterator for ParagraphReader<R> {
    type Item = Result<Paragraph, ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_paragraph() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// deb822(5): US-ASCII printable characters except `:` and space, not starting with `#` or `-`.
fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['#', '-'])
        && name
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_values_and_raw() {
        let text = "Package: curl\nVersion: 7.88.1-10+deb12u8\nDescription: command line tool\n transfers\n .\n more\n\n\n\npackage: tini\nsha256:\n abc 12 main/x\n def 13 main/y\n";
        let ps = parse_paragraphs(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("package"), Some("curl"));
        assert_eq!(ps[0].get("VERSION"), Some("7.88.1-10+deb12u8"));
        assert_eq!(
            ps[0].get("Description"),
            Some("command line tool\n transfers\n .\n more")
        );
        assert_eq!(ps[0].line(), 1);
        assert_eq!(
            ps[0].raw(),
            "Package: curl\nVersion: 7.88.1-10+deb12u8\nDescription: command line tool\n transfers\n .\n more\n"
        );
        assert_eq!(ps[1].line(), 10);
        assert_eq!(ps[1].get("Package"), Some("tini"));
        assert_eq!(ps[1].get("SHA256"), Some(" abc 12 main/x\n def 13 main/y"));
        assert_eq!(
            value_lines(ps[1].get("SHA256").unwrap()).collect::<Vec<_>>(),
            ["abc 12 main/x", "def 13 main/y"]
        );
        assert_eq!(ps[1].field_line("SHA256"), Some(11));
        let names: Vec<_> = ps[0].fields().map(|(n, _)| n).collect();
        assert_eq!(names, ["Package", "Version", "Description"]);
        assert_eq!(ps[0].get("Missing"), None);
    }

    #[test]
    fn crlf_whitespace_separators_comments_and_empty_values() {
        let text = "# comment\r\nA:  x  \r\nB:\r\n   \t \r\nC: y\r\n";
        let ps = parse_paragraphs(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("a"), Some("x"));
        assert_eq!(ps[0].get("b"), Some(""));
        assert_eq!(ps[0].line(), 2);
        assert_eq!(ps[1].get("c"), Some("y"));
        assert!(parse_paragraphs("\n\n  \n").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_paragraphs("A: 1\n\n continuation\n").unwrap_err();
        assert!(
            matches!(e, ControlError::ContinuationFirst { line: 3 }),
            "{e}"
        );
        let e = parse_paragraphs("A: 1\nno colon here\n").unwrap_err();
        assert!(matches!(e, ControlError::NoColon { line: 2, .. }), "{e}");
        assert!(e.to_string().starts_with("line 2:"));
        let e = parse_paragraphs("A: 1\nB: 2\na: 3\n").unwrap_err();
        assert!(
            matches!(e, ControlError::Duplicate { line: 3, first: 1, ref name } if name == "a"),
            "{e}"
        );
        let e = parse_paragraphs("A: 1\n-B: 2\n").unwrap_err();
        assert!(
            matches!(e, ControlError::BadFieldName { line: 2, .. }),
            "{e}"
        );
        let e = parse_paragraphs("A: 1\nB C: 2\n").unwrap_err();
        assert!(
            matches!(e, ControlError::BadFieldName { line: 2, .. }),
            "{e}"
        );
        let e = ParagraphReader::new(&b"A: 1\nB: \xff\n"[..])
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert!(matches!(e, ControlError::NotUtf8 { line: 2 }), "{e}");
    }

    #[test]
    fn oversized_paragraph_is_refused() {
        let mut text = String::from("A: 1\nB: ");
        text.push_str(&"x".repeat(MAX_PARAGRAPH_BYTES));
        text.push('\n');
        let e = parse_paragraphs(&text).unwrap_err();
        assert!(matches!(e, ControlError::TooLarge { line: 2 }), "{e}");
    }

    #[test]
    fn reader_streams_and_stops_after_an_error() {
        let mut r = ParagraphReader::new(&b"A: 1\n\nbad\n\nC: 3\n"[..]);
        assert_eq!(r.next().unwrap().unwrap().get("A"), Some("1"));
        assert!(r.next().unwrap().is_err());
        assert!(r.next().is_none());
    }
}
