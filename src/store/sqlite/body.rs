//! How a batch's body is kept in `event_batches.body`: its events as a JSON array, as text when
//! it is short, compressed when it is long.
//!
//! A long body is a BLOB: one codec byte ([`LZ4`]), the JSON's length (four bytes, little
//! endian) and the JSON as one LZ4 block. A turn of a large run commits hundreds of kilobytes of
//! events whose keys, names and times repeat; SQLite copies such a value twice (the bound
//! parameter, then the record) and writes it as a chain of overflow pages to the log and again
//! at the checkpoint. Compressed it is a tenth of that: a 20k-task fan-out's log went from
//! 8.1 MB to about 1 MB and the run from 225 to 176 ms (`benches/alternate.py`, the README's
//! performance section). A short body stays text, readable with `sqlite3` and `json_each`.

/// The codec byte of an LZ4-compressed body.
const LZ4: u8 = 1;

/// Bodies this long or longer are compressed: a shorter one fits in its b-tree page anyway.
pub(super) const COMPRESS_FROM: usize = 4096;

/// LZ4 writes at least one byte for every 255 it restores (a match's length is counted in
/// bytes of 255), so a block can claim no more than this many bytes per byte it holds. A
/// damaged length is refused before anything is allocated for it.
const MOST_PER_BYTE: usize = 255;

/// How long a body's buffers may stay with the thread between batches: a turn of a large run
/// is a few hundred kilobytes; a rare huge one is not kept.
const KEEP: usize = 4 << 20;

/// A body as it is bound to the insert.
pub(super) enum Stored<'a> {
    Text(&'a str),
    Compressed(&'a [u8]),
}

std::thread_local! {
    /// The thread's buffers for a body's JSON and its compressed form, reused from batch to
    /// batch: fresh each time, their pages were the kernel's to zero on every turn (a fifth of
    /// the scheduler thread's samples in a 20k-task run).
    static BUFFERS: std::cell::RefCell<(String, Vec<u8>)> = Default::default();
}

/// Calls `put` with the body `fill` writes, as it is stored: the JSON itself when short, else
/// compressed.
pub(super) fn with_stored<R>(
    fill: impl FnOnce(&mut String),
    put: impl FnOnce(Stored<'_>) -> R,
) -> R {
    BUFFERS.with(|buffers| match buffers.try_borrow_mut() {
        Ok(mut buffers) => {
            let (json, packed) = &mut *buffers;
            json.clear();
            fill(json);
            let out = put(encode(json, packed));
            if json.capacity() > KEEP {
                *json = String::new();
            }
            if packed.capacity() > KEEP {
                *packed = Vec::new();
            }
            out
        }
        // Only if `put` appended again on this thread; then with buffers of its own.
        Err(_) => {
            let (mut json, mut packed) = (String::new(), Vec::new());
            fill(&mut json);
            put(encode(&json, &mut packed))
        }
    })
}

fn encode<'a>(json: &'a str, packed: &'a mut Vec<u8>) -> Stored<'a> {
    let Ok(len) = u32::try_from(json.len()) else {
        return Stored::Text(json); // over 4 GiB: SQLite refuses it either way, with its error
    };
    if json.len() < COMPRESS_FROM {
        return Stored::Text(json);
    }
    let header = 5;
    let size = header + lz4_flex::block::get_maximum_output_size(json.len());
    if packed.len() < size {
        packed.resize(size, 0); // zeroed where it grows; what is beyond the output is not read
    }
    packed[0] = LZ4;
    packed[1..header].copy_from_slice(&len.to_le_bytes());
    match lz4_flex::block::compress_into(json.as_bytes(), &mut packed[header..]) {
        Ok(written) => Stored::Compressed(&packed[..header + written]),
        // The buffer is the bound the crate computes, so this does not happen; the text is
        // still a correct body.
        Err(_) => Stored::Text(json),
    }
}

/// The JSON of a stored body, or why it cannot be read.
pub(super) fn decode(
    stored: rusqlite::types::ValueRef<'_>,
) -> Result<std::borrow::Cow<'_, str>, String> {
    use rusqlite::types::ValueRef;
    match stored {
        ValueRef::Text(text) => std::str::from_utf8(text)
            .map(std::borrow::Cow::Borrowed)
            .map_err(|e| format!("the batch's text is not UTF-8: {e}")),
        ValueRef::Blob(blob) => decompress(blob).map(std::borrow::Cow::Owned),
        other => Err(format!(
            "the batch's body is {}, not events",
            match other {
                ValueRef::Null => "NULL",
                ValueRef::Integer(_) => "an integer",
                _ => "a number",
            }
        )),
    }
}

fn decompress(blob: &[u8]) -> Result<String, String> {
    let Some((&codec, rest)) = blob.split_first() else {
        return Err("the batch's body is an empty BLOB".into());
    };
    if codec != LZ4 {
        return Err(format!(
            "the batch's body is compressed with codec {codec}, which this conductor does not know \
             (a newer conductor wrote it?)"
        ));
    }
    let (Some(len), Some(block)) = (rest.get(..4), rest.get(4..)) else {
        return Err("the batch's compressed body is cut short".into());
    };
    let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
    if len > block.len().saturating_mul(MOST_PER_BYTE) {
        return Err(format!(
            "the batch's compressed body claims {len} bytes, more than its {} bytes can hold",
            block.len()
        ));
    }
    let json = lz4_flex::block::decompress(block, len)
        .map_err(|e| format!("the batch's compressed body is damaged: {e}"))?;
    String::from_utf8(json).map_err(|e| format!("the batch's body is not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::ValueRef;

    fn events(n: usize) -> String {
        let one = r#"{"seq":1,"at":"2026-12-02T07:08:23.354Z","event":"task_finished","task":"t1","status":"completed"}"#;
        format!("[{}]", vec![one; n].join(","))
    }

    fn stored(json: &str) -> Result<Vec<u8>, String> {
        with_stored(
            |buf| buf.push_str(json),
            |stored| match stored {
                Stored::Compressed(blob) => Ok(blob.to_vec()),
                Stored::Text(text) => Err(text.to_string()),
            },
        )
    }

    #[test]
    fn a_long_body_is_compressed_and_reads_back_the_same() {
        let json = events(200);
        let blob = stored(&json).expect("compressed");
        assert!(
            blob.len() * 10 < json.len(),
            "{} -> {}",
            json.len(),
            blob.len()
        );
        assert_eq!(decode(ValueRef::Blob(&blob)).unwrap(), json);
        // The buffers are reused: a shorter body after a longer one is not the longer's tail.
        let shorter = events(50);
        let blob = stored(&shorter).expect("compressed");
        assert_eq!(decode(ValueRef::Blob(&blob)).unwrap(), shorter);
    }

    #[test]
    fn a_short_body_stays_text() {
        let json = events(2);
        assert_eq!(stored(&json), Err(json.clone()));
        assert_eq!(decode(ValueRef::Text(json.as_bytes())).unwrap(), json);
    }

    #[test]
    fn a_damaged_body_is_an_error_not_a_panic_or_a_huge_allocation() {
        let blob = stored(&events(200)).expect("compressed");
        let mut claims_too_much = blob.clone();
        claims_too_much[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode(ValueRef::Blob(&claims_too_much)).unwrap_err();
        assert!(err.contains("claims 4294967295 bytes"), "{err}");
        let mut unknown = blob.clone();
        unknown[0] = 9;
        assert!(decode(ValueRef::Blob(&unknown))
            .unwrap_err()
            .contains("codec 9"));
        let cut = &blob[..blob.len() / 2];
        assert!(decode(ValueRef::Blob(cut)).unwrap_err().contains("damaged"));
        assert!(decode(ValueRef::Blob(&blob[..3]))
            .unwrap_err()
            .contains("cut short"));
        assert!(decode(ValueRef::Blob(&[])).unwrap_err().contains("empty"));
        assert!(decode(ValueRef::Null).unwrap_err().contains("NULL"));
        // Garbage of every length up to a few hundred bytes after a valid header.
        for n in 0..300 {
            let mut garbage = vec![LZ4];
            garbage.extend_from_slice(&(n as u32 * 7).to_le_bytes());
            garbage.extend((0..n).map(|i| (i * 131 % 251) as u8));
            let _ = decode(ValueRef::Blob(&garbage));
        }
    }
}
