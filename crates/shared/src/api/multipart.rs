//! `multipart/form-data` (RFC 7578, RFC 2046 section 5.1): the checks made on the request's
//! `Content-Type`, an incremental [`Scanner`] that parses a body fed in chunks of any size
//! without buffering part bodies, and the rule that picks the form's one file
//! ([`FilePicker`]).

use std::fmt;
use std::ops::Range;

use crate::api::ApiError;
use crate::image::format::essence;

/// Form fields that may carry the image.
pub const FILE_FIELDS: [&str; 2] = ["image", "file"];

/// Whether a `Content-Type` announces a multipart form.
pub fn is_multipart(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| essence(ct) == "multipart/form-data")
}

/// Extracts and validates the boundary of a `multipart/form-data` content type (RFC 2046:
/// 1 to 70 characters from a restricted set, not ending in a space, optionally quoted).
pub fn boundary(content_type: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::InvalidMultipart(format!("invalid multipart boundary: {why}"));
    let raw = content_type
        .split(';')
        .skip(1)
        .filter_map(|param| param.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim())
        .ok_or_else(|| bad("missing"))?;
    let value = match raw.strip_prefix('"') {
        Some(quoted) => quoted
            .strip_suffix('"')
            .ok_or_else(|| bad("unterminated quote"))?,
        None => raw,
    };
    if value.is_empty() || value.len() > 70 {
        return Err(bad("must be 1 to 70 characters"));
    }
    if value.ends_with(' ') {
        return Err(bad("must not end with a space"));
    }
    if !value.bytes().all(is_bchar) {
        return Err(bad("contains a character RFC 2046 does not allow"));
    }
    Ok(value.to_string())
}

/// RFC 2046 `bchars`.
fn is_bchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b)
}

/// Picks the single file of a form from `(field name, is a file)` pairs: exactly one file
/// across the [`FILE_FIELDS`], else an error saying what is wrong.
pub fn pick_file_field<'a>(
    fields: impl IntoIterator<Item = (&'a str, bool)>,
) -> Result<&'a str, ApiError> {
    let mut picker = FilePicker::default();
    let mut found = None;
    for (name, is_file) in fields {
        if picker.offer(name, is_file)? {
            found = Some(name);
        }
    }
    picker.finish()?;
    found.ok_or_else(FilePicker::no_file)
}

/// [`pick_file_field`] for a form whose parts go by one at a time: it answers as early as the
/// parts seen so far allow.
#[derive(Clone, Debug, Default)]
pub struct FilePicker {
    found: bool,
}

impl FilePicker {
    /// Whether the part named `name` is the form's file. An error as soon as the form cannot
    /// be valid any more: a non-file part in a [`FILE_FIELDS`] field, or a second file there.
    pub fn offer(&mut self, name: &str, is_file: bool) -> Result<bool, ApiError> {
        if !FILE_FIELDS.contains(&name) {
            return Ok(false);
        }
        if !is_file {
            return Err(ApiError::InvalidMultipart(format!(
                "field `{name}` must be a file"
            )));
        }
        if std::mem::replace(&mut self.found, true) {
            return Err(ApiError::InvalidMultipart("send exactly one file".into()));
        }
        Ok(true)
    }

    /// At the end of the form: an error unless a file was found.
    pub fn finish(&self) -> Result<(), ApiError> {
        if self.found {
            Ok(())
        } else {
            Err(Self::no_file())
        }
    }

    fn no_file() -> ApiError {
        ApiError::InvalidMultipart("no file in field `image` or `file`".into())
    }
}

/// The most parts a form may have.
pub const MAX_PARTS: usize = 64;
/// The most bytes of headers one part may have.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Why a body is not a well-formed form. Every message is fit for clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormError {
    /// No delimiter line anywhere: not a form, or another boundary.
    NoDelimiter,
    /// The body ends before the closing delimiter.
    Unterminated,
    /// A delimiter line goes on with something other than `--` or a line break.
    BadDelimiter,
    /// A part's headers are longer than [`MAX_HEADER_BYTES`].
    HeadersTooLong,
    /// More than [`MAX_PARTS`] parts.
    TooManyParts,
    /// A header line without a colon.
    BadHeader,
    /// A part without `Content-Disposition: form-data` and a `name`.
    NoDisposition,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDelimiter => f.write_str("malformed multipart body: no delimiter line"),
            Self::Unterminated => {
                f.write_str("malformed multipart body: it ends before the closing delimiter")
            }
            Self::BadDelimiter => f.write_str("malformed multipart body: a bad delimiter line"),
            Self::HeadersTooLong => write!(
                f,
                "malformed multipart body: part headers longer than {MAX_HEADER_BYTES} bytes"
            ),
            Self::TooManyParts => write!(f, "a form may have at most {MAX_PARTS} parts"),
            Self::BadHeader => f.write_str("malformed multipart body: a bad part header line"),
            Self::NoDisposition => f.write_str(
                "every part needs a `Content-Disposition: form-data` header with a name",
            ),
        }
    }
}

impl std::error::Error for FormError {}

impl From<FormError> for ApiError {
    fn from(e: FormError) -> Self {
        Self::InvalidMultipart(e.to_string())
    }
}

/// A part's headers, as far as a form needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartHead {
    /// The field name (`Content-Disposition: form-data; name="..."`).
    pub name: String,
    /// The file name; its presence makes the part a file, even when it is empty.
    pub filename: Option<String>,
    /// The part's `Content-Type`, if any.
    pub content_type: Option<String>,
}

impl PartHead {
    /// Whether the part is a file upload.
    pub fn is_file(&self) -> bool {
        self.filename.is_some()
    }
}

/// What the scanner found in a chunk, in body order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A part begins, with these headers.
    Part(PartHead),
    /// Bytes of the current part's body: first the last `carried` bytes fed before this
    /// chunk (held back because they might have begun a delimiter; they are always
    /// `scanner.delimiter()[..carried]`), then `range` of this chunk. Never empty.
    Data { carried: usize, range: Range<usize> },
    /// The current part's body is over.
    PartEnd,
    /// The closing delimiter: the form is complete. Whatever follows is epilogue, ignored.
    End,
}

/// Where the scanner is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first delimiter (the preamble is ignored).
    Preamble,
    /// Just after `--boundary`.
    DelimiterEnd,
    /// After `--boundary-`.
    CloseDash,
    /// After `--boundary` and transport padding (spaces and tabs).
    Padding,
    /// After the CR that ends a delimiter line.
    DelimiterCr,
    /// In a part's headers.
    Headers,
    /// In a part's body.
    Body,
    /// After the closing delimiter.
    Epilogue,
}

/// An incremental `multipart/form-data` parser: a state machine fed byte chunks of any size,
/// reporting part headers, data ranges and part ends as [`Event`]s. It keeps no part data:
/// only a part's headers (at most [`MAX_HEADER_BYTES`]) and a count of the bytes at the end
/// of a chunk that may begin a delimiter.
#[derive(Clone, Debug)]
pub struct Scanner {
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    /// Boyer-Moore-Horspool shifts for [`Self::delimiter`].
    shift: [u8; 256],
    state: State,
    /// How many bytes of the delimiter the last chunk ended with.
    held: usize,
    headers: Vec<u8>,
    parts: usize,
}

impl Scanner {
    /// A scanner for a body with this boundary (as checked by [`boundary`]: 1 to 70 bytes).
    pub fn new(boundary: &str) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        let len = delimiter.len();
        let mut shift = [len.min(255) as u8; 256];
        for (i, &b) in delimiter[..len - 1].iter().enumerate() {
            shift[usize::from(b)] = (len - 1 - i).min(255) as u8;
        }
        Self {
            delimiter,
            shift,
            state: State::Preamble,
            // A body may open with `--boundary`, without a line break before it.
            held: 2,
            headers: Vec::new(),
            parts: 0,
        }
    }

    /// `CRLF--boundary`: what [`Event::Data::carried`] bytes are a prefix of.
    pub fn delimiter(&self) -> &[u8] {
        &self.delimiter
    }

    /// How many bytes at the end of the chunks fed so far are held back because they may
    /// begin a delimiter; in a part's body, a later [`Event::Data`] may carry them.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether the closing delimiter has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Epilogue
    }

    /// Scans the next chunk, appending what it finds to `events`.
    pub fn feed(&mut self, chunk: &[u8], events: &mut Vec<Event>) -> Result<(), FormError> {
        let mut at = 0;
        while at < chunk.len() {
            at = match self.state {
                State::Preamble | State::Body => self.scan(chunk, at, events),
                State::Headers => self.header_bytes(chunk, at, events)?,
                State::Epilogue => chunk.len(),
                _ => {
                    self.delimiter_line(chunk[at], events)?;
                    at + 1
                }
            };
        }
        Ok(())
    }

    /// At the end of the body: an error unless the form was closed.
    pub fn finish(&self) -> Result<(), FormError> {
        match self.state {
            State::Epilogue => Ok(()),
            State::Preamble => Err(FormError::NoDelimiter),
            _ => Err(FormError::Unterminated),
        }
    }

    /// Looks for the delimiter from `at`; part bytes before it are data (in a body) or
    /// ignored (in the preamble). Returns where scanning goes on.
    fn scan(&mut self, chunk: &[u8], at: usize, events: &mut Vec<Event>) -> usize {
        let mut carried = 0;
        let mut from = at;
        if self.held > 0 {
            let rest = &self.delimiter[self.held..];
            let n = rest.len().min(chunk.len() - at);
            if chunk[at..at + n] == rest[..n] {
                if n < rest.len() {
                    self.held += n;
                    return at + n;
                }
                self.held = 0;
                self.found_delimiter(events);
                return at + n;
            }
            // Not a delimiter after all. The delimiter holds a CR only at its start, so no
            // later delimiter can begin inside the held bytes: they are all data.
            carried = std::mem::take(&mut self.held);
        }
        let (data_end, next) = match self.find(&chunk[from..]) {
            Some(i) => (from + i, None),
            None => {
                let tail = self.held_tail(&chunk[from..]);
                self.held = tail;
                (chunk.len() - tail, Some(chunk.len()))
            }
        };
        if self.state == State::Body && (carried > 0 || data_end > from) {
            events.push(Event::Data {
                carried,
                range: from..data_end,
            });
        }
        from = data_end;
        match next {
            Some(end) => end,
            None => {
                self.found_delimiter(events);
                from + self.delimiter.len()
            }
        }
    }

    /// The first whole delimiter in `hay` (Boyer-Moore-Horspool).
    fn find(&self, hay: &[u8]) -> Option<usize> {
        let d = &self.delimiter;
        let last = d.len() - 1;
        let mut i = 0;
        while i + last < hay.len() {
            let b = hay[i + last];
            if b == d[last] && hay[i..i + last] == d[..last] {
                return Some(i);
            }
            i += usize::from(self.shift[usize::from(b)]);
        }
        None
    }

    /// How many bytes at the end of `hay` are the start of a delimiter. Only the last CR can
    /// start one, as the delimiter holds no other CR.
    fn held_tail(&self, hay: &[u8]) -> usize {
        let window = hay.len().saturating_sub(self.delimiter.len() - 1);
        match hay[window..].iter().rposition(|&b| b == b'\r') {
            Some(i) if self.delimiter.starts_with(&hay[window + i..]) => hay.len() - window - i,
            _ => 0,
        }
    }

    fn found_delimiter(&mut self, events: &mut Vec<Event>) {
        if self.state == State::Body {
            events.push(Event::PartEnd);
        }
        self.state = State::DelimiterEnd;
    }

    /// One byte of what follows `--boundary` on its line.
    fn delimiter_line(&mut self, b: u8, events: &mut Vec<Event>) -> Result<(), FormError> {
        self.state = match (self.state, b) {
            (State::DelimiterEnd, b'-') => State::CloseDash,
            (State::CloseDash, b'-') => {
                events.push(Event::End);
                State::Epilogue
            }
            (State::DelimiterEnd | State::Padding, b' ' | b'\t') => State::Padding,
            (State::DelimiterEnd | State::Padding, b'\r') => State::DelimiterCr,
            (State::DelimiterCr, b'\n') => {
                self.parts += 1;
                if self.parts > MAX_PARTS {
                    return Err(FormError::TooManyParts);
                }
                self.headers.clear();
                State::Headers
            }
            _ => return Err(FormError::BadDelimiter),
        };
        Ok(())
    }

    /// Gathers header bytes up to the blank line that ends them.
    fn header_bytes(
        &mut self,
        chunk: &[u8],
        at: usize,
        events: &mut Vec<Event>,
    ) -> Result<usize, FormError> {
        for (i, &b) in chunk[at..].iter().enumerate() {
            self.headers.push(b);
            let h = &self.headers;
            // An empty header block is a lone CRLF.
            if b == b'\n' && (h.as_slice() == b"\r\n" || h.ends_with(b"\r\n\r\n")) {
                let head = parse_part_head(&h[..h.len() - 2])?;
                events.push(Event::Part(head));
                self.state = State::Body;
                return Ok(at + i + 1);
            }
            if h.len() > MAX_HEADER_BYTES {
                return Err(FormError::HeadersTooLong);
            }
        }
        Ok(chunk.len())
    }
}

/// Parses a part's header lines (each ending in CRLF).
fn parse_part_head(block: &[u8]) -> Result<PartHead, FormError> {
    let mut disposition: Option<String> = None;
    let mut content_type: Option<String> = None;
    // The header a folded (indented) line continues.
    let mut last: Option<&mut Option<String>> = None;
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            match last.as_mut().and_then(|h| h.as_mut()) {
                Some(value) => {
                    value.push(' ');
                    value.push_str(text.trim());
                    continue;
                }
                None => return Err(FormError::BadHeader),
            }
        }
        let (name, value) = text.split_once(':').ok_or(FormError::BadHeader)?;
        let value = Some(value.trim().to_string());
        let name = name.trim();
        last = if name.eq_ignore_ascii_case("content-disposition") {
            disposition = disposition.or(value);
            Some(&mut disposition)
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = content_type.or(value);
            Some(&mut content_type)
        } else {
            None
        };
    }
    let (kind, params) = split_disposition(disposition.as_deref().unwrap_or_default());
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(FormError::NoDisposition);
    }
    let mut name = None;
    let mut filename = None;
    let mut filename_ext = None;
    for (key, value) in params {
        let slot = match key.to_ascii_lowercase().as_str() {
            "name" => &mut name,
            "filename" => &mut filename,
            "filename*" => &mut filename_ext,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    Ok(PartHead {
        name: name.ok_or(FormError::NoDisposition)?,
        filename: filename.or(filename_ext),
        content_type,
    })
}

/// Splits `form-data; name="a"; filename="b"` into its type and parameters. Values are
/// tokens or quoted strings (with backslash escapes); a `;` inside quotes is part of one.
fn split_disposition(value: &str) -> (&str, Vec<(String, String)>) {
    let (kind, mut rest) = value.split_once(';').unwrap_or((value, ""));
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let mut value = String::new();
        rest = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        '\\' => value.extend(chars.next().map(|(_, c)| c)),
                        c => value.push(c),
                    }
                }
                &quoted[end..]
            }
            None => {
                let end = after.find(';').unwrap_or(after.len());
                value.push_str(after[..end].trim());
                &after[end..]
            }
        };
        params.push((key, value));
    }
    (kind.trim(), params)
}

/// What the digest that binds an `Idempotency-Key` to a `multipart/form-data` body starts
/// with: then the file part's declared type (empty if none), a newline, and the file's
/// bytes. Nothing else of the form counts (not the boundary, the framing or other fields),
/// so a client that rebuilds the same form gets its first image. A header value has no
/// newline, so the type and the bytes cannot run together.
pub const FORM_DIGEST_PREFIX: &[u8] = b"multipart/form-data file; type=";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").unwrap(),
            "abc"
        );
        assert_eq!(
            boundary("multipart/form-data; charset=utf-8; BOUNDARY=\"a b'c\"").unwrap(),
            "a b'c"
        );
        assert_eq!(
            boundary("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW")
                .unwrap(),
            "----WebKitFormBoundary7MA4YWxkTrZu0gW"
        );
        for bad in [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"\"",
            "multipart/form-data; boundary=\"abc",
            "multipart/form-data; boundary=\"abc \"",
            "multipart/form-data; boundary=a\u{0}b",
            "multipart/form-data; boundary=a<b>",
            "multipart/form-data; boundary=é",
        ] {
            assert!(boundary(bad).is_err(), "{bad:?}");
        }
        assert!(boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))).is_err());
        assert!(is_multipart(Some("Multipart/Form-Data; boundary=x")));
        assert!(!is_multipart(Some("image/png")));
        assert!(!is_multipart(None));
    }

    #[test]
    fn exactly_one_file() {
        assert_eq!(pick_file_field([("image", true)]), Ok("image"));
        assert_eq!(
            pick_file_field([("note", false), ("file", true)]),
            Ok("file")
        );
        assert!(pick_file_field([]).is_err());
        assert!(pick_file_field([("image", false)]).is_err());
        assert!(pick_file_field([("other", true)]).is_err());
        assert!(pick_file_field([("image", true), ("file", true)]).is_err());
        assert!(pick_file_field([("image", true), ("image", true)]).is_err());
    }

    const B: &str = "----WebKitFormBoundary7MA4YWxkTrZu0gW";

    /// What a form parses to: each part's head and body, and whether it was closed.
    type Parsed = Result<Vec<(PartHead, Vec<u8>)>, FormError>;

    /// Feeds `body` cut at `cuts` and rebuilds the parts from the events.
    fn parse_chunked(boundary: &str, body: &[u8], cuts: &[usize]) -> Parsed {
        let mut scanner = Scanner::new(boundary);
        let mut parts: Vec<(PartHead, Vec<u8>)> = Vec::new();
        let mut events = Vec::new();
        let mut in_part = false;
        let mut ended = false;
        let mut start = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(body.len())).collect();
        bounds.sort_unstable();
        bounds.push(body.len());
        for end in bounds {
            let chunk = &body[start..end.max(start)];
            start = end.max(start);
            events.clear();
            scanner.feed(chunk, &mut events)?;
            for event in events.drain(..) {
                match event {
                    Event::Part(head) => {
                        assert!(!in_part && !ended);
                        in_part = true;
                        parts.push((head, Vec::new()));
                    }
                    Event::Data { carried, range } => {
                        assert!(in_part);
                        assert!(carried > 0 || !range.is_empty(), "empty data event");
                        let data = &mut parts.last_mut().unwrap().1;
                        data.extend_from_slice(&scanner.delimiter()[..carried]);
                        data.extend_from_slice(&chunk[range]);
                    }
                    Event::PartEnd => {
                        assert!(in_part);
                        in_part = false;
                    }
                    Event::End => {
                        assert!(!in_part);
                        ended = true;
                    }
                }
            }
        }
        scanner.finish()?;
        assert!(ended && scanner.is_done());
        Ok(parts)
    }

    fn parse(boundary: &str, body: &[u8]) -> Parsed {
        parse_chunked(boundary, body, &[])
    }

    /// A form, byte for byte, like a browser sends it.
    fn form(boundary: &str, parts: &[(PartHead, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (head, data) in parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", head.name);
            if let Some(f) = &head.filename {
                disposition.push_str(&format!("; filename=\"{f}\""));
            }
            body.extend_from_slice(disposition.as_bytes());
            body.extend_from_slice(b"\r\n");
            if let Some(t) = &head.content_type {
                body.extend_from_slice(format!("Content-Type: {t}\r\n").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        body
    }

    fn text_part(name: &str, data: &[u8]) -> (PartHead, Vec<u8>) {
        let head = PartHead {
            name: name.into(),
            ..Default::default()
        };
        (head, data.to_vec())
    }

    fn file_part(name: &str, data: &[u8]) -> (PartHead, Vec<u8>) {
        let head = PartHead {
            name: name.into(),
            filename: Some("photo.png".into()),
            content_type: Some("image/png".into()),
        };
        (head, data.to_vec())
    }

    #[test]
    fn parses_a_browser_form() {
        let parts = vec![
            text_part("note", b"a cat"),
            file_part("image", b"\x89PNG\r\n\x1a\n..."),
            text_part("empty", b""),
        ];
        assert_eq!(parse(B, &form(B, &parts)), Ok(parts));
    }

    #[test]
    fn file_first_then_a_large_field() {
        let big = vec![b'x'; 1024 * 1024];
        let parts = vec![
            file_part("image", b"\xff\xd8\xffdata"),
            text_part("notes", &big),
        ];
        let body = form(B, &parts);
        assert_eq!(parse_chunked(B, &body, &[1000, 70_000, 500_000]), Ok(parts));
    }

    #[test]
    fn preamble_padding_and_epilogue() {
        let body = format!(
            "This is the preamble.\r\n--{B} \t\r\nContent-Disposition: form-data; name=a\r\n\r\n\
             1\r\n--{B}--  \r\nepilogue --{B}\r\n garbage"
        );
        assert_eq!(parse(B, body.as_bytes()), Ok(vec![text_part("a", b"1")]));
        // Closing delimiter at the very end, without a line break.
        let body = format!("--{B}\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n--{B}--");
        assert_eq!(parse(B, body.as_bytes()), Ok(vec![text_part("a", b"")]));
    }

    #[test]
    fn delimiter_lookalikes_are_data() {
        let tricky = format!("\r\n--{}\r\r\n-\r\n--x--{B}", &B[..B.len() - 1]);
        let parts = vec![file_part("file", tricky.as_bytes())];
        let body = form(B, &parts);
        for cut in 0..body.len() {
            assert_eq!(
                parse_chunked(B, &body, &[cut]),
                Ok(parts.clone()),
                "cut at {cut}"
            );
        }
        // Every byte its own chunk.
        let cuts: Vec<usize> = (0..body.len()).collect();
        assert_eq!(parse_chunked(B, &body, &cuts), Ok(parts));
    }

    #[test]
    fn headers() {
        let body = format!(
            "--{B}\r\ncontent-disposition: Form-Data; NAME=\"a;b \\\"q\\\"\"; filename=x.png\r\n\
             X-Other: 1\r\nContent-Type: image/png;\r\n  charset=binary\r\n\r\nz\r\n--{B}--"
        );
        let head = PartHead {
            name: "a;b \"q\"".into(),
            filename: Some("x.png".into()),
            content_type: Some("image/png; charset=binary".into()),
        };
        assert_eq!(parse(B, body.as_bytes()), Ok(vec![(head, b"z".to_vec())]));
        let utf8 = format!("--{B}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"chat é.png\"\r\n\r\n\r\n--{B}--");
        let parts = parse(B, utf8.as_bytes()).unwrap();
        assert_eq!(parts[0].0.filename.as_deref(), Some("chat é.png"));
        assert!(parts[0].0.is_file());
    }

    #[test]
    fn bad_forms() {
        let one = form(B, &[file_part("image", b"abc")]);
        let unclosed = &one[..one.len() - B.len() - 6];
        assert_eq!(parse(B, unclosed), Err(FormError::Unterminated));
        assert_eq!(parse(B, &one[..60]), Err(FormError::Unterminated));
        assert_eq!(
            parse(B, b"this is not multipart"),
            Err(FormError::NoDelimiter)
        );
        assert_eq!(parse(B, b""), Err(FormError::NoDelimiter));
        assert_eq!(parse("other", &one), Err(FormError::NoDelimiter));
        assert_eq!(parse(B, format!("--{B}--\r\n").as_bytes()), Ok(vec![]));
        let no_disposition = format!("--{B}\r\nContent-Type: image/png\r\n\r\nxx\r\n--{B}--\r\n");
        assert_eq!(
            parse(B, no_disposition.as_bytes()),
            Err(FormError::NoDisposition)
        );
        let no_headers = format!("--{B}\r\n\r\nxx\r\n--{B}--\r\n");
        assert_eq!(
            parse(B, no_headers.as_bytes()),
            Err(FormError::NoDisposition)
        );
        let no_name =
            format!("--{B}\r\nContent-Disposition: form-data; filename=a\r\n\r\n\r\n--{B}--");
        assert_eq!(parse(B, no_name.as_bytes()), Err(FormError::NoDisposition));
        let attachment =
            format!("--{B}\r\nContent-Disposition: attachment; name=a\r\n\r\n\r\n--{B}--");
        assert_eq!(
            parse(B, attachment.as_bytes()),
            Err(FormError::NoDisposition)
        );
        let no_colon = format!("--{B}\r\nContent-Disposition form-data\r\n\r\n\r\n--{B}--");
        assert_eq!(parse(B, no_colon.as_bytes()), Err(FormError::BadHeader));
        let fold_first = format!("--{B}\r\n folded\r\n\r\n\r\n--{B}--");
        assert_eq!(parse(B, fold_first.as_bytes()), Err(FormError::BadHeader));
        for line in ["X", "-x", " x", "\n"] {
            let bad = format!("--{B}{line}\r\n");
            assert_eq!(
                parse(B, bad.as_bytes()),
                Err(FormError::BadDelimiter),
                "{line:?}"
            );
        }
        let long = format!(
            "--{B}\r\nContent-Disposition: form-data; name=a\r\nX: {}\r\n\r\n\r\n--{B}--",
            "y".repeat(MAX_HEADER_BYTES)
        );
        assert_eq!(parse(B, long.as_bytes()), Err(FormError::HeadersTooLong));
        let many: Vec<_> = (0..=MAX_PARTS).map(|_| text_part("n", b"v")).collect();
        assert_eq!(parse(B, &form(B, &many)), Err(FormError::TooManyParts));
        assert_eq!(
            parse(B, &form(B, &many[..MAX_PARTS])).map(|p| p.len()),
            Ok(MAX_PARTS)
        );
    }

    #[test]
    fn errors_are_invalid_multipart() {
        let e = ApiError::from(FormError::TooManyParts);
        assert_eq!((e.status(), e.code()), (400, "invalid_multipart"));
    }

    #[test]
    fn picker_answers_early() {
        let mut picker = FilePicker::default();
        assert_eq!(picker.offer("note", false), Ok(false));
        assert_eq!(picker.offer("photo", true), Ok(false));
        assert!(picker.finish().is_err());
        assert_eq!(picker.offer("image", true), Ok(true));
        assert_eq!(picker.finish(), Ok(()));
        assert!(picker.offer("file", true).is_err());
        assert!(FilePicker::default().offer("image", false).is_err());
    }

    /// Any bytes, with CR, LF, dashes and pieces of the boundary over-represented.
    fn tricky_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            any::<u8>().prop_map(|b| vec![b]),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"-".to_vec()),
            (0..B.len()).prop_map(|n| format!("\r\n--{}", &B[..n]).into_bytes()),
        ];
        // A part's data never holds the whole delimiter (the pieces above can still build
        // one, a byte at a time): such a form is not the form the tests mean.
        let delimiter = format!("\r\n--{B}").into_bytes();
        proptest::collection::vec(piece, 0..max)
            .prop_map(|v| v.concat())
            .prop_filter("data holds the delimiter", move |data| {
                !data
                    .windows(delimiter.len())
                    .any(|w| w == delimiter.as_slice())
            })
    }

    fn any_part() -> impl Strategy<Value = (PartHead, Vec<u8>)> {
        (
            "[a-z]{1,8}",
            proptest::option::of("[a-z.]{0,8}"),
            proptest::option::of("[a-z]{1,5}/[a-z]{1,5}"),
            tricky_bytes(40),
        )
            .prop_map(|(name, filename, content_type, data)| {
                (
                    PartHead {
                        name,
                        filename,
                        content_type,
                    },
                    data,
                )
            })
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_parts_of_the_whole(
            parts in proptest::collection::vec(any_part(), 0..6),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let body = form(B, &parts);
            let cuts: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
            prop_assert_eq!(parse(B, &body), Ok(parts.clone()));
            prop_assert_eq!(parse_chunked(B, &body, &cuts), Ok(parts));
        }

        #[test]
        fn garbage_gives_the_same_answer_whatever_the_chunking(
            body in tricky_bytes(200),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let cuts: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
            prop_assert_eq!(parse_chunked(B, &body, &cuts), parse(B, &body));
        }

        #[test]
        fn truncated_forms_are_unterminated(
            parts in proptest::collection::vec(any_part(), 1..4),
            cut in any::<proptest::sample::Index>(),
        ) {
            let body = form(B, &parts);
            // Anything short of the closing `--` of the last delimiter.
            let end = body.len() - 4;
            let cut = cut.index(end);
            let got = parse(B, &body[..cut]);
            let want = if cut < B.len() + 2 { FormError::NoDelimiter } else { FormError::Unterminated };
            prop_assert_eq!(got, Err(want));
        }

        #[test]
        fn boundary_never_panics(s in "\\PC{0,120}") {
            let _ = boundary(&s);
        }

        #[test]
        fn valid_boundaries_round_trip(b in "[A-Za-z0-9'()+_,./:=?-]{1,70}") {
            let plain = format!("multipart/form-data; boundary={b}");
            prop_assert_eq!(boundary(&plain).unwrap(), b.clone());
            let quoted = format!("multipart/form-data; boundary=\"{b}\"");
            prop_assert_eq!(boundary(&quoted).unwrap(), b);
        }
    }
}
