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
//! Readers stream: memory stays bounded by one record (an NDJSON line is cut at
//! [`MAX_LINE_BYTES`]) however large the file. They know the byte offset and line after each
//! row, so an import can stop after any row and a later chunk [`RowReader::resume`] there.

use std::collections::HashMap;
use std::fmt;

use csv_async::{AsyncReaderBuilder, ErrorKind, StringRecord};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt};

use imports::ImportFormat;

/// The columns (CSV) or fields (NDJSON) of a row.
pub const COLUMNS: [&str; 4] = ["sku", "name", "quantity", "price"];

/// Longest NDJSON line read; longer lines are rejected without being held in memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

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
    /// The file is not what its format says (not UTF-8, wrong CSV header). Permanent.
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
        /// The CSV reader.
        records: csv_async::AsyncReader<R>,
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
                    .create_reader(reader);
                let header: Vec<String> = records
                    .headers()
                    .await
                    .map_err(csv_error)?
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
                    .create_reader(reader);
                Self::csv(records, header, at)
            }
        }
    }

    fn csv(
        records: csv_async::AsyncReader<R>,
        header: Vec<String>,
        base: Position,
    ) -> Result<Self, FileError> {
        Ok(Self {
            format: Format::Csv {
                columns: columns(&header)?,
                header,
                records,
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
                if !records.read_record(record).await.map_err(csv_error)? {
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
                    .take(MAX_LINE_BYTES as u64 + 1)
                    .read_until(b'\n', buffer)
                    .await
                    .map_err(FileError::Read)?;
                if read == 0 {
                    return Ok(None);
                }
                at.offset += read as u64;
                at.line += 1;
                let line = base_line + at.line;
                if buffer.len() > MAX_LINE_BYTES && buffer.last() != Some(&b'\n') {
                    at.offset += skip_line(reader).await?;
                    return Ok(Some(Err(Rejection {
                        line,
                        reason: format!("line is longer than {MAX_LINE_BYTES} bytes"),
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
    if found != expected || header.len() != COLUMNS.len() {
        return Err(FileError::Invalid(format!(
            "the CSV header must name the columns {}; found {:?}",
            COLUMNS.join(","),
            header.join(",")
        )));
    }
    Ok(columns)
}

fn ndjson_row(text: &str) -> Result<Row, String> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return Err("line is not a JSON object".into());
    };
    if let Some(unknown) = fields.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
        return Err(format!("unknown field {unknown}"));
    }
    validate(|name| match fields.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

fn csv_error(error: csv_async::Error) -> FileError {
    match error.into_kind() {
        ErrorKind::Io(io) => FileError::Read(io),
        ErrorKind::Utf8 { pos, .. } => FileError::Invalid(format!(
            "line {} is not UTF-8 text",
            pos.map_or(0, |p| p.line())
        )),
        other => FileError::Invalid(format!("the file is not valid CSV: {other:?}")),
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
            examples: examples.iter().take(Self::EXAMPLES).cloned().collect(),
        }
    }

    /// Records a rejected row.
    pub fn add(&mut self, rejection: Rejection) {
        self.count += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(rejection.to_string());
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
        let long = format!("{{\"sku\":\"{}\"}}\n", "x".repeat(MAX_LINE_BYTES));
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
        assert_eq!(reasons[1], "line 2: unknown field color");
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
        let long = format!("{{\"sku\":\"{}\"}}\n", "x".repeat(MAX_LINE_BYTES));
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
}
