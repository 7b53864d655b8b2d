//! A small EDN reader: enough of the format for Jepsen histories.
//!
//! Reads `nil`, `true`/`false`, integers (an `N` suffix allowed), floats, strings with
//! escapes, characters, keywords, symbols, vectors, lists, maps and sets; skips
//! whitespace, commas, `;` comments and `#_` discarded forms; reads a tagged literal
//! (`#inst "…"`) as its value. Every error names the line and what was expected. Nesting
//! is bounded by [`MAX_EDN_DEPTH`] so hostile input cannot overflow the stack.

use std::fmt;

/// The deepest nesting of collections the reader accepts.
pub const MAX_EDN_DEPTH: usize = 64;

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

/// A reader over EDN text that yields values one at a time.
#[derive(Debug)]
pub struct EdnReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    /// `#_` forms being skipped inside each other (bounded like nesting).
    discarding: usize,
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b',' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b';'
        )
}

impl<'a> EdnReader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        EdnReader {
            bytes,
            pos: 0,
            line: 1,
            discarding: 0,
        }
    }

    /// The current line, from 1.
    pub fn line(&self) -> usize {
        self.line
    }

    fn error(&self, expected: impl Into<String>) -> EdnError {
        let found = match self.bytes.get(self.pos) {
            None => "the end of the input".to_owned(),
            Some(_) => {
                let end = (self.pos + 20).min(self.bytes.len());
                let snippet = String::from_utf8_lossy(&self.bytes[self.pos..end]);
                let snippet = snippet.split('\n').next().unwrap_or("");
                format!("{snippet:?}")
            }
        };
        EdnError {
            line: self.line,
            expected: expected.into(),
            found,
        }
    }

    /// Skips whitespace, commas, comments and `#_` forms.
    pub fn skip_blank(&mut self) -> Result<(), EdnError> {
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b',' => self.pos += 1,
                b';' => {
                    while self.bytes.get(self.pos).is_some_and(|&c| c != b'\n') {
                        self.pos += 1;
                    }
                }
                b'#' if self.bytes.get(self.pos + 1) == Some(&b'_') => {
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
    pub fn peek(&mut self) -> Result<Option<u8>, EdnError> {
        self.skip_blank()?;
        Ok(self.bytes.get(self.pos).copied())
    }

    /// Consumes `b` if it is the next non-blank byte.
    pub fn eat(&mut self, b: u8) -> Result<bool, EdnError> {
        if self.peek()? == Some(b) {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Reads the next value; `None` at the end of the input.
    pub fn next_value(&mut self) -> Result<Option<Edn>, EdnError> {
        if self.peek()?.is_none() {
            return Ok(None);
        }
        self.value_at(0).map(Some)
    }

    /// Reads one value; its error if the input ends first.
    pub fn value(&mut self) -> Result<Edn, EdnError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Edn, EdnError> {
        if depth > MAX_EDN_DEPTH {
            return Err(self.error(format!("at most {MAX_EDN_DEPTH} nested collections")));
        }
        let Some(b) = self.peek()? else {
            return Err(self.error("a value"));
        };
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
                    return Err(EdnError {
                        line: self.line,
                        expected: "a map with an even number of forms (key value pairs)".into(),
                        found: format!("{} forms", items.len()),
                    });
                }
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Ok(Edn::Map(pairs))
            }
            b'#' => match self.bytes.get(self.pos + 1) {
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
                let c = match token {
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
                let token = self.token().to_owned();
                if token.is_empty() {
                    return Err(self.error("a value"));
                }
                atom(&token).ok_or(EdnError {
                    line,
                    expected: "a value (nil, true, false, a number, a keyword, a symbol)".into(),
                    found: format!("{token:?}"),
                })
            }
        }
    }

    fn items(&mut self, close: u8, depth: usize) -> Result<Vec<Edn>, EdnError> {
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

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(|&b| !is_delimiter(b)) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.bytes[start..self.pos]).unwrap_or("")
    }

    fn string(&mut self) -> Result<Edn, EdnError> {
        let start_line = self.line;
        self.pos += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(EdnError {
                    line: self.line,
                    expected: format!("`\"` to close the string opened on line {start_line}"),
                    found: "the end of the input".into(),
                });
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\n' => {
                    self.line += 1;
                    out.push(b);
                }
                b'\\' => {
                    let Some(&e) = self.bytes.get(self.pos) else {
                        continue;
                    };
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'"' | b'\\' => out.push(e),
                        b'u' => {
                            let hex = self
                                .bytes
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
        String::from_utf8(out).map(Edn::Str).map_err(|_| EdnError {
            line: start_line,
            expected: "a string in UTF-8".into(),
            found: "invalid UTF-8".into(),
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
        let mut r = EdnReader::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some(v) = r.next_value()? {
            out.push(v);
        }
        Ok(out)
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
