//! The rows of an import file: their schema, validation, and streaming readers for CSV and
//! NDJSON. `[To customize]`: this is the example domain (a product catalogue); change
//! [`Row`], [`COLUMNS`] and [`validate`] to your own records.
//!
//! Schema: `sku` (1 to 64 letters, digits, `-` or `_`; the item's key), `name` (1 to 200
//! characters), `quantity` (a whole number from 0 to 1,000,000,000), `price` (a decimal with at
//! most two fraction digits, from 0 to 1,000,000,000.00). A CSV file starts with a header
//! naming exactly these columns, in any order; an NDJSON file has one JSON object per line
//! with these fields.
//!
//! Readers stream: memory stays bounded by one record however large the file. An NDJSON line
//! longer than [`MAX_RECORD_BYTES`] is rejected without being held; a CSV record (which may span
//! lines inside quotes) longer than that, or of more than [`MAX_FIELDS`] fields, makes the file
//! invalid before the CSV parser has buffered more of it (a quote opened and never closed would
//! otherwise take the rest of the file into one record). They know the byte offset and line
//! after each row, so an import can stop after any row and a later chunk [`RowReader::resume`]
//! there.
//!
//! No text made here carries the file's bytes: a rejection or a file error names the line, the
//! column and the rule broken, never the value (it may be another tenant's data, or terminal
//! escapes), and is at most [`MAX_REASON_BYTES`] long.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use csv_async::{AsyncReaderBuilder, ErrorKind, StringRecord};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, ReadBuf};

use imports::ImportFormat;

/// The columns (CSV) or fields (NDJSON) of a row.
pub const COLUMNS: [&str; 4] = ["sku", "name", "quantity", "price"];

/// Longest record read, terminator excluded: an NDJSON line (longer ones are rejected without
/// being held in memory) or a CSV record (a longer one makes the file invalid). A valid row is
/// under 1 KiB (a 200-character name is at most 800 bytes); 64 KiB leaves room for padding and
/// keeps a job's buffers (this, the CSV parser's copy of it, the read buffers) under 300 KiB
/// however large or malformed its file. `[To customize]` with [`Row`].
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Most fields a CSV record may have; more makes the file invalid (a row of the wrong field
/// count up to this is only rejected). Bounds the parser's field index as the record size
/// bounds its bytes.
pub const MAX_FIELDS: usize = 64;

/// Longest text a rejection or a file error carries (a longer one is cut at a character
/// boundary). None carries file content; this bounds what a checkpoint, an import's `error`
/// and a parked job's `dlq.reason` hold per row or file.
pub const MAX_REASON_BYTES: usize = 256;

/// `text` cut to at most [`MAX_REASON_BYTES`], at a character boundary.
pub fn bounded(mut text: String) -> String {
    if text.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A valid row, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Stock-keeping unit: the item's key.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Units in stock.
    pub quantity: u64,
    /// Unit price in cents.
    pub price_cents: u64,
}

impl Row {
    /// The price as a decimal string, e.g. `9.99`.
    pub fn price(&self) -> String {
        format!("{}.{:02}", self.price_cents / 100, self.price_cents % 100)
    }
}

/// Why a row was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The row's line in the file (1-based).
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Why a file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file is not what its format says (not UTF-8, wrong CSV header, a record over the
    /// limits). Permanent. The text names the line and the problem, never the file's bytes.
    #[error("{0}")]
    Invalid(String),
    /// Reading the object failed midway (connection reset, timeout). Retryable.
    #[error("reading the object failed")]
    Read(#[source] std::io::Error),
}

/// Checks the fields of one row. Missing fields are empty strings.
pub fn validate(field: impl Fn(&str) -> Option<String>) -> Result<Row, String> {
    let value = |name: &str| field(name).unwrap_or_default();
    let sku = value("sku");
    if sku.is_empty()
        || sku.len() > 64
        || !sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("sku must be 1 to 64 letters, digits, '-' or '_'".into());
    }
    let name = value("name").trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err("name must be 1 to 200 printable characters".into());
    }
    let quantity = value("quantity")
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|q| *q <= 1_000_000_000)
        .ok_or("quantity must be a whole number from 0 to 1000000000")?;
    let price_cents = parse_price(value("price").trim())
        .ok_or("price must be a decimal from 0 to 1000000000.00 with at most 2 decimals")?;
    Ok(Row {
        sku,
        name,
        quantity,
        price_cents,
    })
}

fn parse_price(text: &str) -> Option<u64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let fraction_ok = fraction.is_none_or(|f| digits(f) && f.len() <= 2);
    if !digits(whole) || whole.len() > 10 || !fraction_ok {
        return None;
    }
    let fraction = fraction.unwrap_or("");
    let cents = whole.parse::<u64>().ok()? * 100 + format!("{fraction:0<2}").parse::<u64>().ok()?;
    (cents <= 100_000_000_000).then_some(cents)
}

/// One row of a file: valid, or rejected with its reason.
pub type RowResult = Result<Row, Rejection>;

/// Where a reader is in its file: everything before `offset` (bytes) has been read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// Bytes of the file before the next row.
    pub offset: u64,
    /// Lines of the file before the next row.
    pub line: u64,
}

/// Streams the rows of a file.
pub struct RowReader<R: AsyncBufRead + Unpin + Send> {
    format: Format<R>,
    /// Where the stream started in the file.
    base: Position,
}

enum Format<R: AsyncBufRead + Unpin + Send> {
    /// A CSV file, with the position of each column.
    Csv {
        /// The CSV reader, on a stream that fails a record over the limits before the reader
        /// buffers it (boxed: it is most of the reader's size).
        records: Box<csv_async::AsyncReader<BoundedRecords<R>>>,
        /// The header's names, in file order.
        header: Vec<String>,
        /// Column name to field index.
        columns: HashMap<String, usize>,
        /// The record buffer, reused.
        record: StringRecord,
    },
    /// An NDJSON file.
    Ndjson {
        /// The byte stream.
        reader: R,
        /// Where the reader is, relative to the stream's start.
        at: Position,
        /// The line buffer, reused.
        buffer: Vec<u8>,
    },
}

impl<R: AsyncBufRead + AsyncRead + Unpin + Send> RowReader<R> {
    /// Starts reading a whole file from `reader` as `format`; a CSV header is read and checked
    /// here.
    pub async fn open(reader: R, format: ImportFormat) -> Result<Self, FileError> {
        match format {
            ImportFormat::Ndjson => Ok(Self::ndjson(reader, Position::default())),
            ImportFormat::Csv => {
                let mut records = AsyncReaderBuilder::new()
                    .flexible(true)
                    .create_reader(BoundedRecords::new(reader));
                let header: Vec<String> = records
                    .headers()
                    .await
                    .map_err(|e| csv_error(e, 0))?
                    .iter()
                    .map(str::to_owned)
                    .collect();
                Self::csv(records, header, Position::default())
            }
        }
    }

    /// Goes on reading a file from `at`, where an earlier reader stopped; `reader` streams the
    /// file from that offset. A CSV file's `header` is the one [`header`](Self::header) gave.
    pub fn resume(
        reader: R,
        format: ImportFormat,
        header: Option<&[String]>,
        at: Position,
    ) -> Result<Self, FileError> {
        match format {
            ImportFormat::Ndjson => Ok(Self::ndjson(reader, at)),
            ImportFormat::Csv => {
                let header = header
                    .ok_or_else(|| {
                        FileError::Invalid("a CSV continuation needs its header".into())
                    })?
                    .to_vec();
                let records = AsyncReaderBuilder::new()
                    .flexible(true)
                    .has_headers(false)
                    .create_reader(BoundedRecords::new(reader));
                Self::csv(records, header, at)
            }
        }
    }

    fn csv(
        records: csv_async::AsyncReader<BoundedRecords<R>>,
        header: Vec<String>,
        base: Position,
    ) -> Result<Self, FileError> {
        Ok(Self {
            format: Format::Csv {
                columns: columns(&header)?,
                header,
                records: Box::new(records),
                record: StringRecord::new(),
            },
            base,
        })
    }

    fn ndjson(reader: R, base: Position) -> Self {
        Self {
            format: Format::Ndjson {
                reader,
                at: Position::default(),
                buffer: Vec::new(),
            },
            base,
        }
    }

    /// A CSV file's header names, in file order; `None` for NDJSON.
    pub fn header(&self) -> Option<&[String]> {
        match &self.format {
            Format::Csv { header, .. } => Some(header),
            Format::Ndjson { .. } => None,
        }
    }

    /// Where the next row starts in the file: after the last row [`next`](Self::next) gave.
    pub fn position(&self) -> Position {
        let relative = match &self.format {
            Format::Csv { records, .. } => Position {
                offset: records.position().byte(),
                line: records.position().line().saturating_sub(1),
            },
            Format::Ndjson { at, .. } => *at,
        };
        Position {
            offset: self.base.offset + relative.offset,
            line: self.base.line + relative.line,
        }
    }

    /// The next row, `None` at the end of the file.
    pub async fn next(&mut self) -> Result<Option<RowResult>, FileError> {
        let base_line = self.base.line;
        match &mut self.format {
            Format::Csv {
                records,
                columns,
                record,
                ..
            } => {
                let read = records.read_record(record).await;
                if !read.map_err(|e| csv_error(e, base_line))? {
                    return Ok(None);
                }
                let line = base_line + record.position().map_or(0, |p| p.line());
                if record.len() != COLUMNS.len() {
                    return Ok(Some(Err(Rejection {
                        line,
                        reason: format!(
                            "expected {} fields, found {}",
                            COLUMNS.len(),
                            record.len()
                        ),
                    })));
                }
                let row = validate(|name| {
                    columns
                        .get(name)
                        .and_then(|i| record.get(*i))
                        .map(str::to_owned)
                });
                Ok(Some(row.map_err(|reason| Rejection { line, reason })))
            }
            Format::Ndjson { reader, at, buffer } => loop {
                buffer.clear();
                let read = (&mut *reader)
                    .take(MAX_RECORD_BYTES as u64 + 1)
                    .read_until(b'\n', buffer)
                    .await
                    .map_err(FileError::Read)?;
                if read == 0 {
                    return Ok(None);
                }
                at.offset += read as u64;
                at.line += 1;
                let line = base_line + at.line;
                if buffer.len() > MAX_RECORD_BYTES && buffer.last() != Some(&b'\n') {
                    at.offset += skip_line(reader).await?;
                    return Ok(Some(Err(Rejection {
                        line,
                        reason: format!("line is longer than {MAX_RECORD_BYTES} bytes"),
                    })));
                }
                let text = std::str::from_utf8(buffer)
                    .map_err(|_| FileError::Invalid(format!("line {line} is not UTF-8 text")))?;
                if text.trim().is_empty() {
                    continue;
                }
                return Ok(Some(
                    ndjson_row(text).map_err(|reason| Rejection { line, reason }),
                ));
            },
        }
    }
}

/// Discards the rest of an over-long line; returns how many bytes that was.
async fn skip_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<u64, FileError> {
    let mut skipped = 0;
    loop {
        let available = reader.fill_buf().await.map_err(FileError::Read)?;
        if available.is_empty() {
            return Ok(skipped);
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(skipped + end as u64 + 1);
            }
            None => {
                let len = available.len();
                reader.consume(len);
                skipped += len as u64;
            }
        }
    }
}

/// Column name to field index, if `header` names exactly [`COLUMNS`].
fn columns(header: &[String]) -> Result<HashMap<String, usize>, FileError> {
    let columns: HashMap<String, usize> = header
        .iter()
        .enumerate()
        .map(|(i, name)| (name.trim().to_ascii_lowercase(), i))
        .collect();
    let mut expected: Vec<&str> = COLUMNS.to_vec();
    expected.sort_unstable();
    let mut found: Vec<&str> = columns.keys().map(String::as_str).collect();
    found.sort_unstable();
    if found == expected && header.len() == COLUMNS.len() {
        return Ok(columns);
    }
    // The header's own text is the file's: only the expected names and a count are told.
    let problem = match COLUMNS.iter().find(|c| !columns.contains_key(**c)) {
        Some(missing) => format!("it has no column {missing}"),
        None => format!("it has {} columns", header.len()),
    };
    Err(FileError::Invalid(format!(
        "line 1: the CSV header must name exactly the columns {}; {problem}",
        COLUMNS.join(", ")
    )))
}

fn ndjson_row(text: &str) -> Result<Row, String> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return Err("line is not a JSON object".into());
    };
    // The unknown field's name is the file's: only the allowed names are told.
    if fields.keys().any(|k| !COLUMNS.contains(&k.as_str())) {
        return Err(format!("has a field other than {}", COLUMNS.join(", ")));
    }
    validate(|name| match fields.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// A CSV reader's error as a [`FileError`]; lines are counted from `base_line`. The parser's
/// own description is not passed on: it may quote the file.
fn csv_error(error: csv_async::Error, base_line: u64) -> FileError {
    let line = base_line + error.position().map_or(0, |p| p.line());
    match error.into_kind() {
        ErrorKind::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref::<OverLimit>()) {
            Some(over) => FileError::Invalid(over.describe(base_line)),
            None => FileError::Read(io),
        },
        ErrorKind::Utf8 { .. } => FileError::Invalid(format!("line {line} is not UTF-8 text")),
        _ => FileError::Invalid(format!("line {line}: the file is not valid CSV")),
    }
}

/// A CSV record over [`MAX_RECORD_BYTES`] or [`MAX_FIELDS`], as the I/O error
/// [`BoundedRecords`] fails with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe(0))]
struct OverLimit {
    /// The record's first line, counted from the stream's start (1-based).
    line: u64,
    /// Which limit.
    limit: Limit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Bytes,
    Fields,
}

impl OverLimit {
    /// E.g. `line 7: a record is longer than 65536 bytes`, with lines counted from `base_line`.
    fn describe(&self, base_line: u64) -> String {
        let line = base_line + self.line;
        match self.limit {
            Limit::Bytes => {
                format!("line {line}: a record is longer than {MAX_RECORD_BYTES} bytes")
            }
            Limit::Fields => format!("line {line}: a record has more than {MAX_FIELDS} fields"),
        }
    }
}

/// Where [`BoundedRecords`] is in the CSV syntax (RFC 4180 as `csv-core` reads it by default:
/// `,` between fields, `"` quotes a field only at its start, `""` in a quoted field is a
/// quote, and `\r`, `\n` or `\r\n` end a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// At the start of a field (or of a record).
    FieldStart,
    /// In an unquoted field.
    Unquoted,
    /// In a quoted field.
    Quoted,
    /// After a `"` in a quoted field: a second one is a quote, anything else ends the quoting.
    QuoteInQuoted,
}

/// A byte stream that fails, with an [`OverLimit`] I/O error, as soon as one CSV record is
/// longer than [`MAX_RECORD_BYTES`] or has more than [`MAX_FIELDS`] fields, having passed on
/// only the record's bytes within the limit. The CSV parser behind it buffers a whole record
/// (and, with `flexible`, any number of fields), so bounding what it is given bounds its
/// memory. It follows the quoting to know where records end, as the parser does: a checkpoint
/// is at a record's start, so a resumed stream starts in step.
struct BoundedRecords<R> {
    inner: R,
    syntax: Syntax,
    /// Bytes of the current record so far, terminator excluded.
    record_bytes: usize,
    /// Fields of the current record so far.
    fields: usize,
    /// `\n` bytes seen.
    newlines: u64,
    /// The line the current record started on (1-based).
    record_line: u64,
    /// The limit the stream broke, returned from every read after the bytes before it.
    failed: Option<OverLimit>,
}

impl<R> BoundedRecords<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            syntax: Syntax::FieldStart,
            record_bytes: 0,
            fields: 1,
            newlines: 0,
            record_line: 1,
            failed: None,
        }
    }

    /// Follows `bytes`; on a breach, says how many of them came before it.
    fn scan(&mut self, bytes: &[u8]) -> Result<(), (usize, OverLimit)> {
        for (i, &byte) in bytes.iter().enumerate() {
            let ends_record = match (self.syntax, byte) {
                (Syntax::Quoted, b'"') => {
                    self.syntax = Syntax::QuoteInQuoted;
                    false
                }
                (Syntax::Quoted, _) => false,
                (Syntax::QuoteInQuoted, b'"') => {
                    self.syntax = Syntax::Quoted;
                    false
                }
                (Syntax::FieldStart, b'"') => {
                    self.syntax = Syntax::Quoted;
                    false
                }
                (_, b',') => {
                    self.syntax = Syntax::FieldStart;
                    self.fields += 1;
                    false
                }
                (_, b'\r' | b'\n') => true,
                _ => {
                    self.syntax = Syntax::Unquoted;
                    false
                }
            };
            if byte == b'\n' {
                self.newlines += 1;
            }
            if ends_record {
                self.syntax = Syntax::FieldStart;
                self.record_bytes = 0;
                self.fields = 1;
                self.record_line = self.newlines + 1;
                continue;
            }
            self.record_bytes += 1;
            let limit = if self.record_bytes > MAX_RECORD_BYTES {
                Limit::Bytes
            } else if self.fields > MAX_FIELDS {
                Limit::Fields
            } else {
                continue;
            };
            let line = self.record_line;
            return Err((i, OverLimit { line, limit }));
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for BoundedRecords<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let over_limit = |over: OverLimit| io::Error::new(io::ErrorKind::InvalidData, over);
        if let Some(over) = this.failed {
            return Poll::Ready(Err(over_limit(over)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        match this.scan(&buf.filled()[before..]) {
            Ok(()) => Poll::Ready(Ok(())),
            // The bytes before the breach are passed on (they may end earlier records); the
            // next read fails. Passing none would read as the end of the file.
            Err((within, over)) => {
                this.failed = Some(over);
                if within == 0 {
                    return Poll::Ready(Err(over_limit(over)));
                }
                buf.set_filled(before + within);
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// A short account of rejected rows: the count and the first few reasons. Its size is
/// bounded however many rows are rejected, across any number of chunks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejections {
    count: u64,
    examples: Vec<String>,
}

impl Rejections {
    const EXAMPLES: usize = imports::Checkpoint::MAX_EXAMPLES;

    /// The rejections an earlier chunk counted: `count` rows, with `examples`.
    pub fn carried(count: u64, examples: &[String]) -> Self {
        Self {
            count,
            examples: examples
                .iter()
                .take(Self::EXAMPLES)
                .map(|e| bounded(e.clone()))
                .collect(),
        }
    }

    /// Records a rejected row.
    pub fn add(&mut self, rejection: Rejection) {
        self.count += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(bounded(rejection.to_string()));
        }
    }

    /// Adds `other`'s rejections, which come after these in the file.
    pub fn extend(&mut self, other: Self) {
        self.count += other.count;
        let room = Self::EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.into_iter().take(room));
    }

    /// How many rows were rejected.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The examples kept (`line N: reason`), for a checkpoint.
    pub fn examples(&self) -> &[String] {
        &self.examples
    }

    /// `None` when nothing was rejected, else e.g. `2 rows rejected: line 3: ...; line 9: ...`.
    pub fn summary(&self) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let examples = &self.examples;
        let more = if self.count > self.examples.len() as u64 {
            format!("; and {} more", self.count - self.examples.len() as u64)
        } else {
            String::new()
        };
        let noun = if self.count == 1 { "row" } else { "rows" };
        Some(format!(
            "{} {noun} rejected: {}{more}",
            self.count,
            examples.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8], format: ImportFormat) -> Result<Vec<RowResult>, FileError> {
        let mut reader = RowReader::open(tokio::io::BufReader::new(bytes), format).await?;
        let mut rows = Vec::new();
        while let Some(row) = reader.next().await? {
            rows.push(row);
        }
        Ok(rows)
    }

    fn widget() -> Row {
        Row {
            sku: "W-1".into(),
            name: "Widget".into(),
            quantity: 3,
            price_cents: 999,
        }
    }

    #[tokio::test]
    async fn csv_columns_may_come_in_any_order() {
        let rows = read_all(
            b"price,sku,quantity,name\n9.99,W-1,3,Widget\n",
            ImportFormat::Csv,
        )
        .await
        .unwrap();
        assert_eq!(rows, [Ok(widget())]);
    }

    #[tokio::test]
    async fn invalid_csv_rows_are_rejected_with_their_line() {
        let csv = b"sku,name,quantity,price\nW-1,Widget,3,9.99\nbad sku!,X,1,1\nW-2,Gadget,-1,1\nW-3,Thing,1\n";
        let rows = read_all(csv, ImportFormat::Csv).await.unwrap();
        assert_eq!(rows[0], Ok(widget()));
        assert_eq!(rows[1].as_ref().unwrap_err().line, 3);
        assert!(rows[1].as_ref().unwrap_err().reason.starts_with("sku"));
        assert!(rows[2].as_ref().unwrap_err().reason.starts_with("quantity"));
        assert_eq!(
            rows[3].as_ref().unwrap_err().reason,
            "expected 4 fields, found 3"
        );
    }

    #[tokio::test]
    async fn a_csv_with_the_wrong_columns_is_an_invalid_file() {
        let err = read_all(b"id,title\n1,x\n", ImportFormat::Csv)
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::Invalid(reason) if reason.contains("header")));
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_are_an_invalid_file() {
        let mut garbage = b"sku,name,quantity,price\n".to_vec();
        garbage.extend_from_slice(&[0xff, 0xfe, 0x00, 0x9f, b'\n']);
        assert!(matches!(
            read_all(&garbage, ImportFormat::Csv).await,
            Err(FileError::Invalid(_))
        ));
        assert!(matches!(
            read_all(&[0xff, 0xfe, b'\n'], ImportFormat::Ndjson).await,
            Err(FileError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn ndjson_accepts_numbers_or_strings_and_skips_blank_lines() {
        let ndjson = b"{\"sku\":\"W-1\",\"name\":\"Widget\",\"quantity\":3,\"price\":9.99}\n\n{\"sku\":\"W-1\",\"name\":\"Widget\",\"quantity\":\"3\",\"price\":\"9.99\"}";
        let rows = read_all(ndjson, ImportFormat::Ndjson).await.unwrap();
        assert_eq!(rows, [Ok(widget()), Ok(widget())]);
    }

    #[tokio::test]
    async fn ndjson_rejects_non_objects_unknown_fields_and_overlong_lines() {
        let long = format!("{{\"sku\":\"{}\"}}\n", "x".repeat(MAX_RECORD_BYTES));
        let ndjson = format!(
            "[1,2]\n{{\"sku\":\"W-1\",\"color\":\"red\"}}\n{long}{{\"sku\":\"W-1\",\"name\":\"Widget\",\"quantity\":3,\"price\":\"9.99\"}}\n"
        );
        let rows = read_all(ndjson.as_bytes(), ImportFormat::Ndjson)
            .await
            .unwrap();
        let reasons: Vec<String> = rows[..3]
            .iter()
            .map(|r| r.as_ref().unwrap_err().to_string())
            .collect();
        assert_eq!(reasons[0], "line 1: line is not a JSON object");
        assert_eq!(
            reasons[1],
            "line 2: has a field other than sku, name, quantity, price"
        );
        assert!(reasons[2].starts_with("line 3: line is longer than"));
        assert_eq!(
            rows[3],
            Ok(widget()),
            "reading resumes after an over-long line"
        );
    }

    /// Reads `bytes` whole, and again stopping after each row and resuming from the position
    /// the reader gave: every split must yield the same rows with the same lines.
    async fn assert_resumes_anywhere(bytes: &[u8], format: ImportFormat) {
        let whole = read_all(bytes, format).await.unwrap();
        for stop_after in 0..=whole.len() {
            let mut reader = RowReader::open(tokio::io::BufReader::new(bytes), format)
                .await
                .unwrap();
            let mut rows = Vec::new();
            for _ in 0..stop_after {
                rows.push(reader.next().await.unwrap().unwrap());
            }
            let at = reader.position();
            let header = reader.header().map(<[String]>::to_vec);
            let rest = &bytes[usize::try_from(at.offset).unwrap()..];
            let mut resumed = RowReader::resume(
                tokio::io::BufReader::new(rest),
                format,
                header.as_deref(),
                at,
            )
            .unwrap();
            while let Some(row) = resumed.next().await.unwrap() {
                rows.push(row);
            }
            assert_eq!(rows, whole, "{format:?}, resumed after {stop_after} rows");
            assert_eq!(resumed.position().offset, bytes.len() as u64);
        }
    }

    #[tokio::test]
    async fn a_reader_resumes_after_any_row_with_the_same_rows_and_lines() {
        let csv = "sku,name,quantity,price\r\nW-1,Widget,3,9.99\r\n\"W-2\",\"Ga,dget\",1,1\nbad!,X,1,1\n\nW-3,Thing \u{e9},2,0.5";
        assert_resumes_anywhere(csv.as_bytes(), ImportFormat::Csv).await;
        let long = format!("{{\"sku\":\"{}\"}}\n", "x".repeat(MAX_RECORD_BYTES));
        let ndjson = format!(
            "{{\"sku\":\"W-1\",\"name\":\"Widget\",\"quantity\":3,\"price\":9.99}}\n\n{long}[1]\r\n{{\"sku\":\"W-2\",\"name\":\"\u{e9}\",\"quantity\":1,\"price\":1}}"
        );
        assert_resumes_anywhere(ndjson.as_bytes(), ImportFormat::Ndjson).await;
    }

    #[test]
    fn carried_rejections_keep_the_earliest_examples_and_add_up() {
        let mut earlier = Rejections::carried(7, &["line 1: bad".into()]);
        let mut later = Rejections::default();
        for line in 10..20 {
            later.add(Rejection {
                line,
                reason: "worse".into(),
            });
        }
        earlier.extend(later);
        assert_eq!(earlier.count(), 17);
        assert_eq!(earlier.examples().len(), 5);
        assert_eq!(earlier.examples()[0], "line 1: bad");
        assert_eq!(earlier.examples()[1], "line 10: worse");
    }

    #[test]
    fn prices_are_exact_cents() {
        assert_eq!(parse_price("0"), Some(0));
        assert_eq!(parse_price("9.9"), Some(990));
        assert_eq!(parse_price("1000000000.00"), Some(100_000_000_000));
        for bad in ["", "-1", "1.234", "1e3", ".5", "1.", "1000000000.01", "abc"] {
            assert_eq!(parse_price(bad), None, "{bad}");
        }
        assert_eq!(widget().price(), "9.99");
    }

    #[test]
    fn the_rejection_summary_counts_and_gives_examples() {
        let mut rejections = Rejections::default();
        assert_eq!(rejections.summary(), None);
        for line in 1..=7 {
            rejections.add(Rejection {
                line,
                reason: "bad".into(),
            });
        }
        assert_eq!(
            rejections.summary().unwrap(),
            "7 rows rejected: line 1: bad; line 2: bad; line 3: bad; line 4: bad; line 5: bad; and 2 more"
        );
    }

    // No file bytes in any text, and bounded reading.

    /// Stands for another tenant's data in a file: it must never reach a reason.
    const SECRET: &str = "TENANT-7-SECRET";

    /// A reason made from a file: bounded, printable, and none of the file's content.
    fn assert_clean(reason: &str) {
        assert!(reason.len() <= MAX_REASON_BYTES, "{} bytes", reason.len());
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
        for content in [SECRET, "\u{1b}", "[31m", "{", "\""] {
            assert!(!reason.contains(content), "{reason:?} holds {content:?}");
        }
    }

    fn invalid(result: Result<Vec<RowResult>, FileError>) -> String {
        match result {
            Err(FileError::Invalid(reason)) => reason,
            other => panic!("expected an invalid file, got {other:?}"),
        }
    }

    /// `bytes` as a source that counts what is read from it.
    struct Counted<R> {
        inner: R,
        read: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
            let read = buf.filled().len() - before;
            self.read
                .fetch_add(read, std::sync::atomic::Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
    }

    /// Reads `source` as CSV until the file fails; gives the rows before, the reason, and the
    /// bytes read from `source`.
    async fn read_until_invalid(
        source: impl AsyncRead + Unpin + Send,
    ) -> (Vec<RowResult>, String, usize) {
        let read = std::sync::Arc::default();
        let counted = Counted {
            inner: source,
            read: std::sync::Arc::clone(&read),
        };
        let mut rows = Vec::new();
        let result = async {
            let mut reader =
                RowReader::open(tokio::io::BufReader::new(counted), ImportFormat::Csv).await?;
            while let Some(row) = reader.next().await? {
                rows.push(row);
            }
            Ok(Vec::new())
        }
        .await;
        let reason = invalid(result);
        (
            rows,
            reason,
            read.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// What reading a file over the limit may take from it at most: the record limit and the
    /// read buffers (the test's `BufReader` and the CSV reader's own, 8 KiB), with the rows
    /// before it.
    const READ_BOUND: usize = MAX_RECORD_BYTES + 2 * 64 * 1024;

    #[tokio::test]
    async fn an_ndjson_file_read_as_csv_fails_naming_the_header_problem_not_its_content() {
        let small = format!(
            "{{\"sku\":\"{SECRET}\",\"name\":\"\\u001b[31m\",\"quantity\":1,\"price\":1}}\n"
        );
        let reason = invalid(read_all(small.as_bytes(), ImportFormat::Csv).await);
        assert_clean(&reason);
        assert_eq!(
            reason,
            "line 1: the CSV header must name exactly the columns sku, name, quantity, price; \
             it has no column sku"
        );
        // A large object on one line, as an NDJSON file of one big record is.
        let large = format!(
            "{{\"sku\":\"W-1\",\"name\":\"{}\",\"quantity\":1,\"price\":1}}\n",
            SECRET.repeat(400 * 1024 / SECRET.len())
        );
        let reason = invalid(read_all(large.as_bytes(), ImportFormat::Csv).await);
        assert_clean(&reason);
        assert_eq!(
            reason,
            format!("line 1: a record is longer than {MAX_RECORD_BYTES} bytes")
        );
    }

    #[tokio::test]
    async fn a_csv_header_of_the_wrong_shape_is_told_by_the_expected_columns() {
        let extra = invalid(
            read_all(
                format!("sku,name,quantity,price,{SECRET}\n").as_bytes(),
                ImportFormat::Csv,
            )
            .await,
        );
        assert_clean(&extra);
        assert!(extra.ends_with("; it has 5 columns"), "{extra}");
        let missing = invalid(read_all(b"sku,name,\x1b[31m,price\n", ImportFormat::Csv).await);
        assert_clean(&missing);
        assert!(
            missing.ends_with("; it has no column quantity"),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn a_csv_with_a_100_kb_first_line_fails_with_a_bounded_reason() {
        let mut csv = SECRET.repeat(100 * 1024 / SECRET.len()).into_bytes();
        csv.extend_from_slice(b"\nW-1,Widget,3,9.99\n");
        let (rows, reason, _) = read_until_invalid(&csv[..]).await;
        assert!(rows.is_empty());
        assert_clean(&reason);
        assert_eq!(
            reason,
            format!("line 1: a record is longer than {MAX_RECORD_BYTES} bytes")
        );
    }

    #[tokio::test]
    async fn escape_bytes_in_a_field_never_reach_a_rejection() {
        let csv = format!(
            "sku,name,quantity,price\n\x1b[31m{SECRET},Widget,3,9.99\nW-1,\x1b[31m{SECRET},3,9.99\n\
             W-1,Widget,\x1b[31m,9.99\nW-1,Widget,3,{SECRET}\nW-1,\x1b[31m\n"
        );
        let ndjson = format!(
            "{{\"\\u001b[31m{SECRET}\":1}}\n{{\"sku\":\"W-1\",\"name\":\"\\u001b[31m{SECRET}\",\"quantity\":3,\"price\":1}}\n\x1b[31m{SECRET}\n"
        );
        for (file, format) in [(csv, ImportFormat::Csv), (ndjson, ImportFormat::Ndjson)] {
            let rows = read_all(file.as_bytes(), format).await.unwrap();
            assert!(!rows.is_empty());
            let mut rejections = Rejections::default();
            for row in rows {
                let rejection = row.unwrap_err();
                assert_clean(&rejection.to_string());
                rejections.add(rejection);
            }
            // The summary holds up to five examples, each bounded.
            let summary = rejections.summary().unwrap();
            for example in summary.split("; ") {
                assert_clean(example);
            }
        }
    }

    #[tokio::test]
    async fn a_quote_never_closed_fails_the_file_after_the_record_limit_without_reading_the_rest() {
        let mut csv = b"sku,name,quantity,price\nW-1,Widget,3,9.99\nW-2,\"Gadget,1,1\n".to_vec();
        while csv.len() < 4 * 1024 * 1024 {
            csv.extend_from_slice(format!("{SECRET},Widget,3,9.99\n").as_bytes());
        }
        let (rows, reason, read) = read_until_invalid(&csv[..]).await;
        assert_eq!(rows, [Ok(widget())]);
        assert_clean(&reason);
        assert_eq!(
            reason,
            format!("line 3: a record is longer than {MAX_RECORD_BYTES} bytes")
        );
        assert!(read <= READ_BOUND, "{read} bytes of the file were read");
    }

    #[tokio::test]
    async fn a_ten_megabyte_line_fails_the_file_without_being_held() {
        let csv = b"sku,name,quantity,price\nW-1,Widget,3,9.99\n"
            .chain(tokio::io::repeat(b'x').take(10 * 1024 * 1024))
            .chain(&b"\nW-2,Gadget,1,1\n"[..]);
        let (rows, reason, read) = read_until_invalid(csv).await;
        assert_eq!(rows, [Ok(widget())]);
        assert_eq!(
            reason,
            format!("line 3: a record is longer than {MAX_RECORD_BYTES} bytes")
        );
        assert!(read <= READ_BOUND, "{read} bytes of the file were read");
    }

    #[tokio::test]
    async fn a_record_of_too_many_fields_fails_the_file_but_a_few_too_many_is_a_rejection() {
        let csv = format!(
            "sku,name,quantity,price\nW-1,Widget,3,9.99,x\n{}\n",
            ",".repeat(MAX_FIELDS)
        );
        let (rows, reason, _) = read_until_invalid(csv.as_bytes()).await;
        assert_eq!(
            rows[0].as_ref().unwrap_err().reason,
            "expected 4 fields, found 5"
        );
        assert_eq!(
            reason,
            format!("line 3: a record has more than {MAX_FIELDS} fields")
        );
    }

    #[tokio::test]
    async fn the_record_limit_follows_quotes_and_passes_on_no_more_than_the_limit() {
        // Quoted separators and line breaks are inside one record; records just under the
        // limit, many of them, pass whole.
        let under = format!(
            "\"{}\",\"a,\"\"b\"\"\r\nc\"\r\n",
            "x".repeat(MAX_RECORD_BYTES - 16)
        );
        let file = under.repeat(40);
        let mut passed = Vec::new();
        BoundedRecords::new(file.as_bytes())
            .read_to_end(&mut passed)
            .await
            .unwrap();
        assert_eq!(passed, file.as_bytes());
        // One byte more: the stream stops at the limit and fails, on the record's first line.
        let over = format!("a\n\"\n{}\"\n", "x".repeat(MAX_RECORD_BYTES));
        let mut passed = Vec::new();
        let mut stream = BoundedRecords::new(over.as_bytes());
        let error = stream.read_to_end(&mut passed).await.unwrap_err();
        assert_eq!(
            passed.len(),
            2 + MAX_RECORD_BYTES,
            "the record's bytes within the limit"
        );
        let over = error
            .get_ref()
            .unwrap()
            .downcast_ref::<OverLimit>()
            .unwrap();
        assert_eq!(
            over.describe(10),
            format!("line 12: a record is longer than {MAX_RECORD_BYTES} bytes")
        );
    }

    #[tokio::test]
    async fn a_resumed_csv_reader_tells_the_file_line_of_a_record_over_the_limit() {
        let header = ["sku", "name", "quantity", "price"].map(String::from);
        let rest = format!("W-1,Widget,3,9.99\n{}\n", "x".repeat(MAX_RECORD_BYTES + 1));
        let at = Position {
            offset: 1000,
            line: 41,
        };
        let mut reader = RowReader::resume(
            tokio::io::BufReader::new(rest.as_bytes()),
            ImportFormat::Csv,
            Some(&header),
            at,
        )
        .unwrap();
        assert_eq!(reader.next().await.unwrap(), Some(Ok(widget())));
        let reason = match reader.next().await {
            Err(FileError::Invalid(reason)) => reason,
            other => panic!("expected an invalid file, got {other:?}"),
        };
        assert_eq!(
            reason,
            format!("line 43: a record is longer than {MAX_RECORD_BYTES} bytes")
        );
    }

    #[test]
    fn a_reason_is_cut_at_a_character_boundary() {
        let long = "\u{e9}".repeat(MAX_REASON_BYTES);
        let cut = bounded(long);
        assert_eq!(cut.len(), MAX_REASON_BYTES);
        assert_eq!(bounded("é".repeat(200) + "x").len(), MAX_REASON_BYTES);
        assert_eq!(
            bounded(format!("x{}", "é".repeat(200))).len(),
            MAX_REASON_BYTES - 1
        );
        let carried = Rejections::carried(1, &["x".repeat(10_000)]);
        assert_eq!(carried.examples()[0].len(), MAX_REASON_BYTES);
    }
}
