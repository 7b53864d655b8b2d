//! A small EDN reader: enough of the format for Jepsen histories.
//!
//! Reads `nil`, `true`/`false`, integers (an `N` suffix allowed), floats, strings with
//! escapes, characters, keywords, symbols, vectors, lists, maps and sets; skips
//! whitespace, commas, `;` comments and `#_` discarded forms; reads a tagged literal
//! (`#inst "…"`) as its value. Every error names the line and what was expected. The
//! input is read a line at a time (each line capped, see [`crate::input`]); nesting is
//! bounded by [`MAX_EDN_DEPTH`] so hostile input cannot overflow the stack, and one
//! top-level value by the line limit in bytes and [`MAX_EDN_VALUES_PER_OP`] in values,
//! so an unclosed string or vector cannot swallow the file.

use std::fmt;
use std::io::BufRead;

use crate::history::HistoryError;
use crate::input::LineReader;

/// The deepest nesting of collections the reader accepts.
pub const MAX_EDN_DEPTH: usize = 64;

/// The most values (of any kind, at any depth) in one top-level value: one op of a
/// history. Together with the byte limit of an op this bounds the memory one op takes;
/// a Jepsen op has a dozen.
pub const MAX_EDN_VALUES_PER_OP: usize = 1 << 16;

/// An EDN value.
#[derive(Clone, Debug, PartialEq)]
pub enum Edn {
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A character (`\a`).
    Char(char),
    /// A keyword, without its colon (`:ok` is `Keyword("ok")`).
    Keyword(String),
    /// A symbol.
    Symbol(String),
    /// `[…]`.
    Vector(Vec<Edn>),
    /// `(…)`.
    List(Vec<Edn>),
    /// `{…}`, in written order.
    Map(Vec<(Edn, Edn)>),
    /// `#{…}`.
    Set(Vec<Edn>),
}

impl Edn {
    /// The value under keyword `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Edn> {
        match self {
            Edn::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Edn::Keyword(name) if name == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short description for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Edn::Nil => "nil",
            Edn::Bool(_) => "a boolean",
            Edn::Int(_) => "an integer",
            Edn::Float(_) => "a float",
            Edn::Str(_) => "a string",
            Edn::Char(_) => "a character",
            Edn::Keyword(_) => "a keyword",
            Edn::Symbol(_) => "a symbol",
            Edn::Vector(_) => "a vector",
            Edn::List(_) => "a list",
            Edn::Map(_) => "a map",
            Edn::Set(_) => "a set",
        }
    }
}

impl fmt::Display for Edn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, open: &str, items: &[Edn], close: &str) -> fmt::Result {
            f.write_str(open)?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{item}")?;
            }
            f.write_str(close)
        }
        match self {
            Edn::Nil => f.write_str("nil"),
            Edn::Bool(b) => write!(f, "{b}"),
            Edn::Int(i) => write!(f, "{i}"),
            Edn::Float(x) => write!(f, "{x}"),
            Edn::Str(s) => write!(f, "{s:?}"),
            Edn::Char(c) => write!(f, "\\{c}"),
            Edn::Keyword(k) => write!(f, ":{k}"),
            Edn::Symbol(s) => f.write_str(s),
            Edn::Vector(v) => seq(f, "[", v, "]"),
            Edn::List(v) => seq(f, "(", v, ")"),
            Edn::Set(v) => seq(f, "#{", v, "}"),
            Edn::Map(pairs) => {
                f.write_str("{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k} {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Why EDN text cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdnError {
    /// The line, from 1.
    pub line: usize,
    /// What the reader expected.
    pub expected: String,
    /// What it found.
    pub found: String,
}

impl fmt::Display for EdnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: expected {}, found {}",
            self.line, self.expected, self.found
        )
    }
}

/// Why an [`EdnReader`] stopped: the text is not EDN, or the input failed (a read
/// error, a line or an op over its limit).
#[derive(Debug)]
pub enum EdnReadError {
    /// The text is not EDN (or breaks a limit of the reader's own: depth, values).
    Syntax(EdnError),
    /// The input could not be read, or a line or op is too long.
    Input(HistoryError),
}

impl fmt::Display for EdnReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdnReadError::Syntax(e) => e.fmt(f),
            EdnReadError::Input(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EdnReadError {}

impl From<EdnError> for EdnReadError {
    fn from(e: EdnError) -> Self {
        EdnReadError::Syntax(e)
    }
}

/// Where the top-level value being read started, to bound the bytes it spans.
#[derive(Clone, Copy, Debug)]
struct FormStart {
    line: usize,
    offset: u64,
}

/// A reader over EDN text that yields values one at a time, reading its input a line at
/// a time: it holds one line (at most the line limit) and the value being built, never
/// the whole text. One top-level value may span several lines, but at most the line
/// limit in bytes ([`HistoryError::OpTooLong`]) and [`MAX_EDN_VALUES_PER_OP`] values.
#[derive(Debug)]
pub struct EdnReader<R> {
    lines: LineReader<R>,
    /// Position in the current line.
    pos: usize,
    /// EDN's own line count: 1 + the newlines consumed.
    line: usize,
    /// Bytes of the lines before the current one.
    consumed_before: u64,
    /// `#_` forms being skipped inside each other (bounded like nesting).
    discarding: usize,
    /// Values being read inside each other (0: between top-level values).
    active: usize,
    /// The top-level value being read.
    form: Option<FormStart>,
    /// Values read so far in it.
    form_values: usize,
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b',' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b';'
        )
}

impl<'a> EdnReader<&'a [u8]> {
    /// A reader of the EDN text in `bytes`, without a line limit.
    pub fn from_slice(bytes: &'a [u8]) -> Self {
        EdnReader::new(LineReader::new(bytes, usize::MAX))
    }
}

impl<R: BufRead> EdnReader<R> {
    /// A reader at the start of `lines`; its line limit bounds lines and ops.
    pub fn new(lines: LineReader<R>) -> Self {
        EdnReader {
            lines,
            pos: 0,
            line: 1,
            consumed_before: 0,
            discarding: 0,
            active: 0,
            form: None,
            form_values: 0,
        }
    }

    /// The current line, from 1.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The next byte, reading the next line when this one is used up; `None` at the end.
    fn peek_byte(&mut self) -> Result<Option<u8>, EdnReadError> {
        loop {
            if let Some(&b) = self.lines.current().get(self.pos) {
                return Ok(Some(b));
            }
            self.consumed_before += self.lines.current().len() as u64;
            self.pos = 0;
            if !self.lines.advance().map_err(EdnReadError::Input)? {
                return Ok(None);
            }
            if let Some(form) = self.form {
                let spanned = self.consumed_before + self.lines.text().len() as u64 - form.offset;
                let limit_bytes = self.lines.limit_bytes();
                if spanned > limit_bytes as u64 {
                    return Err(EdnReadError::Input(HistoryError::OpTooLong {
                        line: self.lines.line(),
                        start_line: form.line,
                        limit_bytes,
                    }));
                }
            }
        }
    }

    /// The byte `ahead` places after the current one, within the current line.
    fn byte_ahead(&self, ahead: usize) -> Option<u8> {
        self.lines.current().get(self.pos + ahead).copied()
    }

    fn error(&mut self, expected: impl Into<String>) -> EdnReadError {
        let found = match self.peek_byte() {
            Ok(Some(_)) => {
                let rest = &self.lines.current()[self.pos..];
                let snippet = String::from_utf8_lossy(&rest[..rest.len().min(20)]);
                let snippet = snippet.split('\n').next().unwrap_or("");
                format!("{snippet:?}")
            }
            Ok(None) => "the end of the input".to_owned(),
            Err(e) => return e,
        };
        EdnReadError::Syntax(EdnError {
            line: self.line,
            expected: expected.into(),
            found,
        })
    }

    /// Skips whitespace, commas, comments and `#_` forms.
    pub fn skip_blank(&mut self) -> Result<(), EdnReadError> {
        while let Some(b) = self.peek_byte()? {
            match b {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b',' => self.pos += 1,
                b';' => {
                    // A comment runs to the end of its line.
                    let len = self.lines.current().len();
                    let rest = &self.lines.current()[self.pos..];
                    self.pos = rest
                        .iter()
                        .position(|&c| c == b'\n')
                        .map_or(len, |i| self.pos + i);
                }
                b'#' if self.byte_ahead(1) == Some(b'_') => {
                    self.pos += 2;
                    self.discarding += 1;
                    let skipped = self.value_at(self.discarding);
                    self.discarding -= 1;
                    skipped?;
                }
                _ if b.is_ascii_whitespace() => self.pos += 1,
                _ => break,
            }
        }
        Ok(())
    }

    /// The next byte that is not blank, without consuming it.
    pub fn peek(&mut self) -> Result<Option<u8>, EdnReadError> {
        self.skip_blank()?;
        self.peek_byte()
    }

    /// Consumes `b` if it is the next non-blank byte.
    pub fn eat(&mut self, b: u8) -> Result<bool, EdnReadError> {
        if self.peek()? == Some(b) {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Reads the next value; `None` at the end of the input.
    pub fn next_value(&mut self) -> Result<Option<Edn>, EdnReadError> {
        if self.peek()?.is_none() {
            return Ok(None);
        }
        self.value_at(0).map(Some)
    }

    /// Reads one value; its error if the input ends first.
    pub fn value(&mut self) -> Result<Edn, EdnReadError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Edn, EdnReadError> {
        if self.active == 0 {
            // A top-level value (or a discarded one between them) starts here.
            self.form = Some(FormStart {
                line: self.line,
                offset: self.consumed_before + self.pos as u64,
            });
            self.form_values = 0;
        }
        self.active += 1;
        let value = self.value_inner(depth);
        self.active -= 1;
        if self.active == 0 {
            self.form = None;
        }
        value
    }

    fn value_inner(&mut self, depth: usize) -> Result<Edn, EdnReadError> {
        if depth > MAX_EDN_DEPTH {
            return Err(self.error(format!("at most {MAX_EDN_DEPTH} nested collections")));
        }
        let Some(b) = self.peek()? else {
            return Err(self.error("a value"));
        };
        self.form_values += 1;
        if self.form_values > MAX_EDN_VALUES_PER_OP {
            return Err(self.error(format!("at most {MAX_EDN_VALUES_PER_OP} values in one op")));
        }
        match b {
            b'[' => {
                self.pos += 1;
                Ok(Edn::Vector(self.items(b']', depth)?))
            }
            b'(' => {
                self.pos += 1;
                Ok(Edn::List(self.items(b')', depth)?))
            }
            b'{' => {
                self.pos += 1;
                let items = self.items(b'}', depth)?;
                if items.len() % 2 != 0 {
                    return Err(EdnReadError::Syntax(EdnError {
                        line: self.line,
                        expected: "a map with an even number of forms (key value pairs)".into(),
                        found: format!("{} forms", items.len()),
                    }));
                }
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Ok(Edn::Map(pairs))
            }
            b'#' => match self.byte_ahead(1) {
                Some(b'{') => {
                    self.pos += 2;
                    Ok(Edn::Set(self.items(b'}', depth)?))
                }
                Some(c) if c.is_ascii_alphabetic() => {
                    // A tagged literal: read the tag, then its value.
                    self.pos += 1;
                    self.token();
                    self.value_at(depth + 1)
                }
                _ => Err(self.error("a set `#{`, a tag or `#_`")),
            },
            b'"' => self.string(),
            b'\\' => {
                self.pos += 1;
                let token = self.token();
                let c = match token.as_str() {
                    "newline" => '\n',
                    "space" => ' ',
                    "tab" => '\t',
                    "return" => '\r',
                    t if t.chars().count() == 1 => t.chars().next().unwrap_or(' '),
                    _ => return Err(self.error("a character")),
                };
                Ok(Edn::Char(c))
            }
            b')' | b']' | b'}' => Err(self.error("a value")),
            _ => {
                let line = self.line;
                let token = self.token();
                if token.is_empty() {
                    return Err(self.error("a value"));
                }
                atom(&token).ok_or_else(|| {
                    EdnReadError::Syntax(EdnError {
                        line,
                        expected: "a value (nil, true, false, a number, a keyword, a symbol)"
                            .into(),
                        found: format!("{token:?}"),
                    })
                })
            }
        }
    }

    fn items(&mut self, close: u8, depth: usize) -> Result<Vec<Edn>, EdnReadError> {
        let mut items = Vec::new();
        loop {
            match self.peek()? {
                None => {
                    return Err(self.error(format!("`{}` to close the collection", close as char)));
                }
                Some(b) if b == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                Some(_) => items.push(self.value_at(depth + 1)?),
            }
        }
    }

    /// The token at the current position (it ends at a delimiter, so within the line);
    /// empty if it is not UTF-8.
    fn token(&mut self) -> String {
        let rest = &self.lines.current()[self.pos..];
        let len = rest
            .iter()
            .position(|&b| is_delimiter(b))
            .unwrap_or(rest.len());
        let token = std::str::from_utf8(&rest[..len]).unwrap_or("").to_owned();
        self.pos += len;
        token
    }

    fn string(&mut self) -> Result<Edn, EdnReadError> {
        let start_line = self.line;
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.peek_byte()? else {
                return Err(EdnReadError::Syntax(EdnError {
                    line: self.line,
                    expected: format!("`\"` to close the string opened on line {start_line}"),
                    found: "the end of the input".into(),
                }));
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\n' => {
                    self.line += 1;
                    out.push(b);
                }
                b'\\' => {
                    let Some(e) = self.peek_byte()? else {
                        continue;
                    };
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'"' | b'\\' => out.push(e),
                        b'u' => {
                            // The four digits are on this line (a newline is no digit).
                            let hex = self
                                .lines
                                .current()
                                .get(self.pos..self.pos + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .and_then(char::from_u32);
                            let Some(c) = hex else {
                                return Err(self.error("four hex digits after \\u"));
                            };
                            self.pos += 4;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return Err(self.error("an escape: \\n \\t \\r \\\" \\\\ \\uXXXX")),
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map(Edn::Str).map_err(|_| {
            EdnReadError::Syntax(EdnError {
                line: start_line,
                expected: "a string in UTF-8".into(),
                found: "invalid UTF-8".into(),
            })
        })
    }
}

fn atom(token: &str) -> Option<Edn> {
    match token {
        "nil" => return Some(Edn::Nil),
        "true" => return Some(Edn::Bool(true)),
        "false" => return Some(Edn::Bool(false)),
        _ => {}
    }
    if let Some(k) = token.strip_prefix(':') {
        return (!k.is_empty()).then(|| Edn::Keyword(k.to_owned()));
    }
    let first = token.as_bytes()[0];
    let numeric = first.is_ascii_digit()
        || (matches!(first, b'-' | b'+')
            && token.as_bytes().get(1).is_some_and(u8::is_ascii_digit));
    if numeric {
        let digits = token.strip_suffix('N').unwrap_or(token);
        if let Ok(i) = digits.parse::<i64>() {
            return Some(Edn::Int(i));
        }
        let float = token.strip_suffix('M').unwrap_or(token);
        return float.parse::<f64>().ok().map(Edn::Float);
    }
    Some(Edn::Symbol(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Edn>, EdnError> {
        let mut r = EdnReader::from_slice(text.as_bytes());
        let mut out = Vec::new();
        loop {
            match r.next_value() {
                Ok(Some(v)) => out.push(v),
                Ok(None) => return Ok(out),
                Err(EdnReadError::Syntax(e)) => return Err(e),
                Err(EdnReadError::Input(e)) => panic!("a slice has no line limit: {e}"),
            }
        }
    }

    #[test]
    fn reads_the_forms_of_a_jepsen_op() {
        let v =
            read(r#"{:process 0, :type :ok, :f :cas, :value [1 2], :time 12N, :error "x\"y"} ; c"#)
                .expect("valid");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].get("process"), Some(&Edn::Int(0)));
        assert_eq!(v[0].get("type"), Some(&Edn::Keyword("ok".into())));
        assert_eq!(
            v[0].get("value"),
            Some(&Edn::Vector(vec![Edn::Int(1), Edn::Int(2)]))
        );
        assert_eq!(v[0].get("time"), Some(&Edn::Int(12)));
        assert_eq!(v[0].get("error"), Some(&Edn::Str("x\"y".into())));
    }

    #[test]
    fn reads_sets_lists_tags_and_discards() {
        let v = read("#{1 2} (a b) #inst \"2020\" #_ skipped nil true").expect("valid");
        assert_eq!(
            v,
            vec![
                Edn::Set(vec![Edn::Int(1), Edn::Int(2)]),
                Edn::List(vec![Edn::Symbol("a".into()), Edn::Symbol("b".into())]),
                Edn::Str("2020".into()),
                Edn::Nil,
                Edn::Bool(true),
            ]
        );
    }

    #[test]
    fn errors_name_the_line_and_what_was_expected() {
        let e = read("{:a 1}\n{:b\n 2").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.expected.contains("`}`"), "{e}");
        let e = read("[1 2\n \"open").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.expected.contains("close the string"), "{e}");
        let e = read("{:a}").unwrap_err();
        assert!(e.expected.contains("even number"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        for text in [
            "[".repeat(100_000),
            "#_".repeat(100_000),
            "#a ".repeat(100_000),
        ] {
            let e = read(&text).unwrap_err();
            assert!(e.expected.contains("nested"), "{e}");
        }
    }
}
