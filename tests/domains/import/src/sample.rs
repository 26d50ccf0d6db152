//! The sample files the demo and the chaos soak import, and the check of the values their
//! imports left in the items table.
//!
//! A check that counts rows cannot see an old value coming back (a redelivered chunk 0 writing
//! over what chunk 2 wrote, two writes of one SKU applied out of order): the count is the same.
//! So every SKU of a sample file appears [`REPEATS`] times, a quarter of the file apart, with a
//! different name, quantity and price each time, and the check reads every SKU back and
//! compares it with the last valid row of the file that names it.
//!
//! Row `r` of a file of `n` rows names SKU `r mod d` of the file, `d = ceil(n / REPEATS)`:
//! each SKU first appears in the first quarter of the file and last in the last quarter, so in
//! a file that takes several chunks its values change from chunk to chunk. In a file of a few
//! rows the repeats are a few rows apart: the processor splits them into separate requests, in
//! order. SKUs are `D{file}-{n}`: no two files of a burst share one, since the items table is
//! keyed by SKU alone and two imports of one SKU would race legitimately.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use import_processor::Row;
use tokio::task::JoinSet;

/// How many times each SKU appears in a sample file (fewer for the last SKUs when the rows do
/// not divide evenly).
pub(crate) const REPEATS: usize = 4;

/// Keys per `BatchGetItem` request: DynamoDB's limit.
const KEYS_PER_READ: usize = 100;
/// `BatchGetItem` requests in flight at once.
const READS_IN_FLIGHT: usize = 8;
/// Rounds of retrying unprocessed keys before giving up.
const UNPROCESSED_ROUNDS: u32 = 8;
/// Mismatches quoted in a failed check.
const EXAMPLES: usize = 3;

/// A generated sample file: its number in the burst (which names its SKUs), its rows, and
/// which of them are invalid. Its content is a function of these, so what its import must
/// leave behind is computed again at check time rather than kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SampleFile {
    /// The file's number in the burst.
    pub(crate) file: usize,
    /// Data rows (the header not counted).
    pub(crate) rows: usize,
    /// Every this-many-th row is invalid (a quantity that is not a number).
    pub(crate) bad_every: Option<usize>,
}

/// One row of a sample file as written.
struct SampleRow {
    row: Row,
    valid: bool,
}

impl SampleFile {
    /// Distinct SKUs in the file.
    pub(crate) fn skus(&self) -> usize {
        self.rows.div_ceil(REPEATS)
    }

    /// Row `r` (0-based): SKU `r mod skus`, in its `r / skus`-th version.
    fn row(&self, r: usize) -> SampleRow {
        let (file, skus) = (self.file, self.skus());
        let (sku, version) = (r % skus, r / skus);
        SampleRow {
            row: Row {
                sku: format!("D{file}-{sku}"),
                name: format!("Demo item {sku} of file {file} version {version}"),
                quantity: r as u64,
                price_cents: (version * 100 + r % 100) as u64,
            },
            valid: self.bad_every.is_none_or(|every| r % every != every - 1),
        }
    }

    fn all_rows(&self) -> impl Iterator<Item = SampleRow> + '_ {
        (0..self.rows).map(|r| self.row(r))
    }

    /// Writes the file as CSV; returns its valid and invalid row counts.
    pub(crate) fn write_csv(&self, out: &mut impl std::io::Write) -> std::io::Result<(u64, u64)> {
        writeln!(out, "sku,name,quantity,price")?;
        let mut invalid = 0;
        for SampleRow { row, valid } in self.all_rows() {
            write!(out, "{},{},", row.sku, row.name)?;
            if valid {
                write!(out, "{}", row.quantity)?;
            } else {
                invalid += 1;
                out.write_all(b"lots")?;
            }
            writeln!(out, ",{}", row.price())?;
        }
        Ok((self.rows as u64 - invalid, invalid))
    }

    /// What importing the file must leave in the items table: for each of its SKUs, the last
    /// valid row that names it, or `None` if no row of it is valid (then the SKU must be
    /// absent).
    pub(crate) fn expected(&self) -> Expected {
        let mut last = BTreeMap::new();
        for SampleRow { row, valid } in self.all_rows() {
            let slot = last.entry(row.sku.clone()).or_insert(None);
            if valid {
                *slot = Some(row);
            }
        }
        Expected { last }
    }
}

/// What an import must have left in the items table, SKU by SKU.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expected {
    last: BTreeMap<String, Option<Row>>,
}

impl Expected {
    /// Every SKU the file names.
    pub(crate) fn skus(&self) -> impl Iterator<Item = &str> {
        self.last.keys().map(String::as_str)
    }

    /// SKUs the import writes: those with a valid row. The items table holds this many items
    /// of the import, fewer than its rows written, which count every valid row.
    pub(crate) fn items(&self) -> u64 {
        self.last.values().filter(|row| row.is_some()).count() as u64
    }
}

/// An item as the items table (or the chaos soak's fake downstream) holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The import that wrote it last.
    pub(crate) import_id: String,
    /// Its values.
    pub(crate) row: Row,
}

/// A SKU whose stored item is not its file's last valid row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// The import that names the SKU.
    pub(crate) import_id: String,
    /// The SKU.
    pub(crate) sku: String,
    /// The file's last valid row of the SKU (`None`: no valid row, so no item).
    pub(crate) expected: Option<Row>,
    /// What is stored (`None`: no item).
    pub(crate) found: Option<Stored>,
}

/// The value check over every completed import: each SKU its file names, compared with its
/// stored item.
#[derive(Debug, Default)]
pub(crate) struct ValueCheck {
    /// SKUs compared.
    pub(crate) skus: u64,
    /// SKUs whose stored item is not the expected one.
    pub(crate) mismatches: u64,
    /// Imports with at least one mismatch.
    pub(crate) imports: u64,
    /// The first few mismatches.
    pub(crate) examples: Vec<Mismatch>,
}

impl ValueCheck {
    /// Compares every SKU of every import's file (import id, what it must leave) with
    /// `stored` (items by SKU).
    pub(crate) fn of<'a>(
        imports: impl IntoIterator<Item = (&'a str, &'a Expected)>,
        stored: &HashMap<String, Stored>,
    ) -> Self {
        let mut check = Self::default();
        for (import_id, expected) in imports {
            check.compare(import_id, expected, stored);
        }
        check
    }

    /// Compares every SKU of `expected`, the file of import `import_id`, with `stored` (items
    /// by SKU). An expected row must be stored exactly, by this import; a SKU without a valid
    /// row must be absent.
    fn compare(&mut self, import_id: &str, expected: &Expected, stored: &HashMap<String, Stored>) {
        let before = self.mismatches;
        for (sku, want) in &expected.last {
            self.skus += 1;
            let found = stored.get(sku);
            let matches = match (want, found) {
                (Some(row), Some(item)) => item.row == *row && item.import_id == import_id,
                (None, None) => true,
                _ => false,
            };
            if matches {
                continue;
            }
            self.mismatches += 1;
            if self.examples.len() < EXAMPLES {
                self.examples.push(Mismatch {
                    import_id: import_id.to_owned(),
                    sku: sku.clone(),
                    expected: want.clone(),
                    found: found.cloned(),
                });
            }
        }
        self.imports += u64::from(self.mismatches > before);
    }

    /// The failed check as one problem line, or `None` if every value matched.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.mismatches == 0 {
            return None;
        }
        let examples: Vec<String> = self.examples.iter().map(Mismatch::to_string).collect();
        Some(format!(
            "{} of {} SKUs (of {} imports) do not hold their file's last valid row, e.g. {}",
            self.mismatches,
            self.skus,
            self.imports,
            examples.join("; ")
        ))
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of import {}: expected ", self.sku, self.import_id)?;
        match &self.expected {
            Some(row) => write_row(f, row)?,
            None => f.write_str("no item")?,
        }
        f.write_str(", found ")?;
        match &self.found {
            Some(item) => {
                write_row(f, &item.row)?;
                write!(f, " of import {}", item.import_id)
            }
            None => f.write_str("no item"),
        }
    }
}

fn write_row(f: &mut fmt::Formatter<'_>, row: &Row) -> fmt::Result {
    write!(
        f,
        "(quantity {}, price {}, {:?})",
        row.quantity,
        row.price(),
        row.name
    )
}

/// Reads every SKU of every import's file back from the items table `table` and compares it
/// with what the import must have left there.
pub(crate) async fn check_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    imports: &[(&str, Expected)],
) -> anyhow::Result<ValueCheck> {
    let skus = imports
        .iter()
        .flat_map(|(_, expected)| expected.skus().map(str::to_owned))
        .collect();
    let stored = read_items(dynamodb, table, skus).await?;
    Ok(ValueCheck::of(
        imports.iter().map(|(id, expected)| (*id, expected)),
        &stored,
    ))
}

/// Reads the items of `skus` from `table` with `BatchGetItem` (strongly consistent, 100 keys a
/// request, a few requests in flight, unprocessed keys retried); SKUs without an item are
/// absent from the answer.
pub(crate) async fn read_items(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    skus: Vec<String>,
) -> anyhow::Result<HashMap<String, Stored>> {
    let mut items = HashMap::with_capacity(skus.len());
    let mut reads = JoinSet::new();
    for keys in skus.chunks(KEYS_PER_READ) {
        if reads.len() >= READS_IN_FLIGHT
            && let Some(read) = reads.join_next().await
        {
            items.extend(read??);
        }
        reads.spawn(read_batch(
            dynamodb.clone(),
            table.to_owned(),
            keys.to_vec(),
        ));
    }
    while let Some(read) = reads.join_next().await {
        items.extend(read??);
    }
    Ok(items)
}

/// One `BatchGetItem` of up to 100 SKUs, with its unprocessed keys asked again.
async fn read_batch(
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    skus: Vec<String>,
) -> anyhow::Result<Vec<(String, Stored)>> {
    let mut keys: Vec<HashMap<String, AttributeValue>> = skus
        .into_iter()
        .map(|sku| HashMap::from([("sku".to_owned(), AttributeValue::S(sku))]))
        .collect();
    let mut found = Vec::with_capacity(keys.len());
    for round in 0..UNPROCESSED_ROUNDS {
        if keys.is_empty() {
            break;
        }
        if round > 0 {
            // Unprocessed keys mean the table is at capacity: back off.
            tokio::time::sleep(Duration::from_millis(50 << round.min(5))).await;
        }
        let request = KeysAndAttributes::builder()
            .set_keys(Some(std::mem::take(&mut keys)))
            .consistent_read(true)
            .build()?;
        let output = dynamodb
            .batch_get_item()
            .request_items(&table, request)
            .send()
            .await
            .context("reading the items table (BatchGetItem)")?;
        if let Some(items) = output.responses.and_then(|mut r| r.remove(&table)) {
            for item in &items {
                let stored = stored(item)?;
                found.push((stored.row.sku.clone(), stored));
            }
        }
        keys = output
            .unprocessed_keys
            .and_then(|mut u| u.remove(&table))
            .map(|k| k.keys)
            .unwrap_or_default();
    }
    ensure!(
        keys.is_empty(),
        "{} keys of the items table still unprocessed after {UNPROCESSED_ROUNDS} rounds",
        keys.len()
    );
    Ok(found)
}

/// An item of the items table as the processor writes it.
fn stored(item: &HashMap<String, AttributeValue>) -> anyhow::Result<Stored> {
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().or_else(|_| v.as_n()).ok())
            .with_context(|| format!("an item without {name}: {item:?}"))
    };
    let row = Row {
        sku: text("sku")?.clone(),
        name: text("name")?.clone(),
        quantity: text("quantity")?
            .parse()
            .with_context(|| format!("an item with a bad quantity: {item:?}"))?,
        price_cents: cents(text("price")?)
            .with_context(|| format!("an item with a bad price: {item:?}"))?,
    };
    Ok(Stored {
        import_id: text("import_id")?.clone(),
        row,
    })
}

/// A DynamoDB number (`12`, `12.3`, `12.30`) as cents.
fn cents(number: &str) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 2 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(whole.parse::<u64>().ok()? * 100 + format!("{fraction:0<2}").parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rows: usize, bad_every: Option<usize>) -> SampleFile {
        SampleFile {
            file: 7,
            rows,
            bad_every,
        }
    }

    fn csv(sample: SampleFile) -> String {
        let mut bytes = Vec::new();
        sample.write_csv(&mut bytes).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    /// What a correct import of `sample` by `import_id` stores.
    fn stored_by(import_id: &str, sample: SampleFile) -> HashMap<String, Stored> {
        sample
            .expected()
            .last
            .into_iter()
            .filter_map(|(sku, row)| {
                let import_id = import_id.to_owned();
                row.map(|row| (sku, Stored { import_id, row }))
            })
            .collect()
    }

    #[test]
    fn a_generated_file_has_the_rows_it_claims() {
        let mut bytes = Vec::new();
        let counts = file(2500, Some(1000)).write_csv(&mut bytes).unwrap();
        assert_eq!(counts, (2498, 2));
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.lines().count(), 2501);
        assert_eq!(text.lines().filter(|l| l.contains(",lots,")).count(), 2);
        assert!(
            text.starts_with(
                "sku,name,quantity,price\nD7-0,Demo item 0 of file 7 version 0,0,0.00\n"
            )
        );
    }

    #[test]
    fn every_sku_repeats_from_the_first_quarter_of_the_file_to_the_last_with_new_values() {
        let text = csv(file(15_000, None));
        let mut seen: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
        for (r, line) in text.lines().skip(1).enumerate() {
            let (sku, values) = line.split_once(',').unwrap();
            seen.entry(sku).or_default().push((r, values));
        }
        assert_eq!(seen.len(), 3750);
        for rows in seen.values() {
            assert_eq!(rows.len(), REPEATS);
            assert!(rows[0].0 < 3750 && rows[REPEATS - 1].0 >= 11_250);
            for pair in rows.windows(2) {
                assert_eq!(pair[1].0 - pair[0].0, 3750);
                let fields = |values: &str| values.split(',').map(str::to_owned).collect();
                let (a, b): (Vec<String>, Vec<String>) = (fields(pair[0].1), fields(pair[1].1));
                assert!((0..3).all(|i| a[i] != b[i]), "{a:?} then {b:?}");
            }
        }
    }

    #[test]
    fn a_small_file_repeats_its_skus_too() {
        let expected = file(10, None).expected();
        assert_eq!(
            expected.skus().collect::<Vec<_>>(),
            ["D7-0", "D7-1", "D7-2"]
        );
        assert_eq!(expected.items(), 3);
        // D7-0 is rows 0, 3, 6 and 9: the last wins.
        assert_eq!(expected.last["D7-0"].as_ref().unwrap().quantity, 9);
    }

    #[test]
    fn the_expected_value_is_the_last_valid_row_and_a_sku_with_none_has_no_item() {
        // 8 rows, 2 SKUs: D7-0 is rows 0, 2, 4, 6 and D7-1 rows 1, 3, 5, 7; every 2nd is bad.
        let expected = file(8, Some(2)).expected();
        assert_eq!(expected.last["D7-0"].as_ref().unwrap().quantity, 6);
        assert_eq!(expected.last["D7-1"], None);
        assert_eq!(expected.items(), 1);
    }

    #[test]
    fn a_correct_import_passes_the_value_check() {
        let sample = file(2500, Some(1000));
        let mut check = ValueCheck::default();
        check.compare(
            "import-1",
            &sample.expected(),
            &stored_by("import-1", sample),
        );
        assert_eq!(
            (check.skus, check.mismatches, check.problem()),
            (625, 0, None)
        );
    }

    #[test]
    fn an_older_value_written_over_a_newer_one_fails_the_value_check() {
        let sample = file(40, None);
        let mut stored = stored_by("import-1", sample);
        // Chunk 0 redone after the rest: D7-3's first version (row 3) comes back.
        stored.get_mut("D7-3").unwrap().row = sample.row(3).row;
        let mut check = ValueCheck::default();
        check.compare("import-1", &sample.expected(), &stored);
        assert_eq!((check.skus, check.mismatches, check.imports), (10, 1, 1));
        let problem = check.problem().unwrap();
        assert!(
            problem.starts_with("1 of 10 SKUs (of 1 imports)"),
            "{problem}"
        );
        assert!(
            problem.contains(
                "D7-3 of import import-1: expected (quantity 33, price 3.33, \"Demo item 3 of \
                 file 7 version 3\"), found (quantity 3, price 0.03, \"Demo item 3 of file 7 \
                 version 0\") of import import-1"
            ),
            "{problem}"
        );
    }

    #[test]
    fn a_missing_item_an_unexpected_item_and_another_imports_item_fail_the_value_check() {
        let sample = file(8, Some(2));
        let mut stored = stored_by("import-1", sample);
        let mut check = ValueCheck::default();
        check.compare("import-2", &sample.expected(), &stored);
        assert_eq!(check.mismatches, 1, "written by another import");
        stored.clear();
        check.compare("import-1", &sample.expected(), &stored);
        assert_eq!(check.mismatches, 2, "missing");
        stored.insert(
            "D7-1".into(),
            Stored {
                import_id: "import-1".into(),
                row: sample.row(1).row,
            },
        );
        check.compare("import-1", &sample.expected(), &stored);
        assert_eq!(
            check.mismatches, 4,
            "missing, and present without a valid row"
        );
        assert_eq!((check.imports, check.examples.len()), (3, EXAMPLES));
    }

    #[test]
    fn a_stored_price_reads_back_as_cents_however_dynamodb_spells_it() {
        assert_eq!(cents("12"), Some(1200));
        assert_eq!(cents("12.3"), Some(1230));
        assert_eq!(cents("12.30"), Some(1230));
        assert_eq!(cents("0.07"), Some(7));
        assert_eq!(cents("1.234"), None);
        assert_eq!(cents("x"), None);
    }
}
