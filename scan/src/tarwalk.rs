//! A bounded tar reader for image layers: walks the headers of a tar stream (ustar, GNU
//! long names, PAX extended headers) and hands out each entry's path, type and size, with
//! its data read only when asked. Every header extension is capped ([`Limits`]): a layer
//! of a million long-name headers, or one long name of a gigabyte, costs a bounded amount
//! of memory and ends in a [`TarError`], never in an allocation of what the header claims.
//! Pure: reads from any `Read`, no disk, no network.

use std::io::{self, Read};

const BLOCK: usize = 512;

/// What one layer may claim before its reading stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest GNU long name or long link (Linux's `PATH_MAX` is 4096).
    pub long_name: u64,
    /// Largest PAX extended header (a path, times, xattrs: kilobytes in practice).
    pub pax: u64,
    /// Entries in the layer (a large distribution image has a few hundred thousand).
    pub entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            long_name: 64 * 1024,
            pax: 1024 * 1024,
            entries: 2_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("reading the layer: {0}")]
    Read(#[from] io::Error),
    #[error("a tar header's checksum does not match (entry {entry})")]
    Checksum { entry: u64 },
    #[error("a tar header's {field} field is not a number (entry {entry})")]
    Number { field: &'static str, entry: u64 },
    #[error("a {what} of {size} bytes, over the limit of {limit} (entry {entry})")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
        entry: u64,
    },
    #[error("more than {0} entries in one layer")]
    TooMany(u64),
    #[error("the layer ends inside an entry")]
    Truncated,
}

/// The type of an entry, as far as a scan cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// Links, devices, FIFOs and anything else.
    Other,
}

/// One entry's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// As the archive names it (long name or PAX `path` applied), lossily UTF-8.
    pub path: String,
    pub kind: Kind,
    pub size: u64,
}

/// Walks a tar stream entry by entry.
pub struct Walker<R> {
    r: R,
    limits: Limits,
    entries: u64,
    /// Data of the current entry not yet read, and the padding after it.
    left: u64,
    pad: u64,
    done: bool,
}

impl<R: Read> Walker<R> {
    pub fn new(r: R, limits: Limits) -> Walker<R> {
        Walker {
            r,
            limits,
            entries: 0,
            left: 0,
            pad: 0,
            done: false,
        }
    }

    /// The next entry, skipping what is left of the current one; None at the end.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        self.skip_rest()?;
        let mut long_name: Option<Vec<u8>> = None;
        let mut pax_path: Option<Vec<u8>> = None;
        loop {
            if self.done {
                return Ok(None);
            }
            let mut h = [0u8; BLOCK];
            if !self.read_block(&mut h)? {
                self.done = true;
                return Ok(None);
            }
            if h.iter().all(|&b| b == 0) {
                // The end-of-archive marker; what follows is padding.
                self.done = true;
                return Ok(None);
            }
            self.entries += 1;
            if self.entries > self.limits.entries {
                return Err(TarError::TooMany(self.limits.entries));
            }
            let entry = self.entries;
            check_sum(&h).ok_or(TarError::Checksum { entry })?;
            let size = number(&h[124..136]).ok_or(TarError::Number {
                field: "size",
                entry,
            })?;
            let typeflag = h[156];
            match typeflag {
                b'L' | b'K' | b'x' | b'g' => {
                    let (what, limit) = match typeflag {
                        b'L' | b'K' => ("long name", self.limits.long_name),
                        _ => ("PAX header", self.limits.pax),
                    };
                    if size > limit {
                        return Err(TarError::TooLarge {
                            what,
                            size,
                            limit,
                            entry,
                        });
                    }
                    let data = self.read_data(size)?;
                    match typeflag {
                        b'L' => long_name = Some(trim_nul(data)),
                        b'x' => {
                            if let Some(p) = pax_value(&data, b"path") {
                                pax_path = Some(p.to_vec());
                            }
                        }
                        // A long link target or global PAX header: nothing a scan needs.
                        _ => {}
                    }
                }
                _ => {
                    let name = pax_path
                        .take()
                        .or_else(|| long_name.take())
                        .unwrap_or_else(|| header_name(&h));
                    let kind = match typeflag {
                        b'0' | 0 | b'7' => Kind::File,
                        b'5' => Kind::Dir,
                        _ => Kind::Other,
                    };
                    // Only files carry data here: links and directories claim none.
                    let size = if matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6') {
                        0
                    } else {
                        size
                    };
                    self.left = size;
                    self.pad = padding(size);
                    return Ok(Some(Entry {
                        path: String::from_utf8_lossy(&name).into_owned(),
                        kind,
                        size,
                    }));
                }
            }
        }
    }

    /// The current entry's data, whole, if it is at most `max` bytes (else an error naming
    /// it). The entry is then done with.
    pub fn read_current(&mut self, what: &'static str, max: u64) -> Result<Vec<u8>, TarError> {
        if self.left > max {
            return Err(TarError::TooLarge {
                what,
                size: self.left,
                limit: max,
                entry: self.entries,
            });
        }
        let n = self.left;
        self.left = 0;
        let mut buf = Vec::with_capacity(n as usize);
        (&mut self.r).take(n).read_to_end(&mut buf)?;
        if (buf.len() as u64) < n {
            return Err(TarError::Truncated);
        }
        Ok(buf)
    }

    /// The reader, past the end of the archive (what follows counts toward a digest).
    pub fn into_inner(self) -> R {
        self.r
    }

    fn skip_rest(&mut self) -> Result<(), TarError> {
        let n = std::mem::take(&mut self.left) + std::mem::take(&mut self.pad);
        let skipped = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        if skipped < n {
            return Err(TarError::Truncated);
        }
        Ok(())
    }

    /// An extension's data (bounded by the caller) and its padding.
    fn read_data(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        self.left = size;
        self.pad = padding(size);
        let data = self.read_current("extension", size)?;
        self.skip_rest()?;
        Ok(data)
    }

    /// One header block; false at a clean end of the stream.
    fn read_block(&mut self, b: &mut [u8; BLOCK]) -> Result<bool, TarError> {
        let mut got = 0;
        while got < BLOCK {
            match self.r.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(TarError::Truncated),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The header's checksum: the sum of its bytes, the checksum field counted as spaces
/// (unsigned, or signed as some old tars wrote it).
fn check_sum(h: &[u8; BLOCK]) -> Option<()> {
    let want = number(&h[148..156])?;
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    (want == unsigned || i64::try_from(want).ok() == Some(signed)).then_some(())
}

/// A numeric field: octal ASCII (NUL or space terminated), or GNU base-256 (high bit set).
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut n: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let text = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect::<Vec<u8>>();
    if text.is_empty() {
        return Some(0);
    }
    let mut n: u64 = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        n = n.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// `name`, with ustar's `prefix` before it.
fn header_name(h: &[u8; BLOCK]) -> Vec<u8> {
    let name = trim_nul(h[..100].to_vec());
    if &h[257..262] != b"ustar" {
        return name;
    }
    let prefix = trim_nul(h[345..500].to_vec());
    if prefix.is_empty() {
        return name;
    }
    let mut full = prefix;
    full.push(b'/');
    full.extend(name);
    full
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
    v
}

/// The value of `key` in PAX records (`<len> <key>=<value>\n`, `len` counting the whole
/// record); the last one wins. Malformed records end the search.
fn pax_value<'a>(mut data: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut found = None;
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        if len <= space + 1 || len > data.len() {
            break;
        }
        let record = &data[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|&b| b == b'=')
            && &record[..eq] == key
        {
            found = Some(&record[eq + 1..]);
        }
        data = &data[len..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(tar: &[u8]) -> Result<Vec<Entry>, TarError> {
        let mut w = Walker::new(tar, Limits::default());
        let mut out = Vec::new();
        while let Some(e) = w.next_entry()? {
            out.push(e);
        }
        Ok(out)
    }

    fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    }

    #[test]
    fn reads_what_the_tar_crate_writes_long_names_included() {
        let long = format!("usr/share/{}/file", "d".repeat(200));
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, "etc/os-release", b"ID=alpine\n");
        append(&mut b, &long, b"x");
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_cksum();
        b.append_data(&mut dir, "var/lib/", &[][..]).unwrap();
        let tar = b.into_inner().unwrap();
        let entries = walk(&tar).unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["etc/os-release", long.as_str(), "var/lib/"]);
        assert_eq!(entries[0].kind, Kind::File);
        assert_eq!(entries[0].size, 10);
        assert_eq!(entries[2].kind, Kind::Dir);

        let mut w = Walker::new(&tar[..], Limits::default());
        w.next_entry().unwrap();
        assert_eq!(w.read_current("file", 100).unwrap(), b"ID=alpine\n");
        let e = w.read_current("file", 100).unwrap();
        assert!(e.is_empty(), "read once");
    }

    #[test]
    fn a_pax_path_names_the_next_entry() {
        let long = format!("lib/{}/installed", "p".repeat(300));
        let record = format!("path={long}\n");
        // A record's length counts itself.
        let mut len = record.len() + 4;
        if format!("{len} {record}").len() != len {
            len += 1;
        }
        let pax = format!("{len} {record}");
        assert_eq!(pax.len(), len);
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(pax.len() as u64);
        h.set_path("PaxHeaders/x").unwrap();
        h.set_cksum();
        b.append(&h, pax.as_bytes()).unwrap();
        append(&mut b, "short", b"abc");
        let entries = walk(&b.into_inner().unwrap()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].path, long);
    }

    /// A GNU long-name header claiming a gigabyte: refused from its header, nothing
    /// allocated for it.
    #[test]
    fn extensions_over_their_limit_are_refused_from_the_header() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 30);
        h.set_path("././@LongLink").unwrap();
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend(vec![b'a'; 4096]);
        let e = walk(&tar).unwrap_err();
        assert!(
            matches!(e, TarError::TooLarge { what: "long name", size, .. } if size == 1 << 30),
            "{e}"
        );
        let few = Limits {
            entries: 2,
            ..Default::default()
        };
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..3 {
            append(&mut b, &format!("f{i}"), b"");
        }
        let tar = b.into_inner().unwrap();
        let mut w = Walker::new(&tar[..], few);
        assert!(w.next_entry().unwrap().is_some());
        assert!(w.next_entry().unwrap().is_some());
        assert!(matches!(w.next_entry(), Err(TarError::TooMany(2))));
    }

    #[test]
    fn bad_checksums_numbers_and_truncation_are_errors() {
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, "f", b"hello");
        let tar = b.into_inner().unwrap();
        let mut bad = tar.clone();
        bad[0] ^= 1;
        assert!(matches!(walk(&bad), Err(TarError::Checksum { .. })));
        let mut w = Walker::new(&tar[..600], Limits::default());
        w.next_entry().unwrap();
        assert!(matches!(w.next_entry(), Err(TarError::Truncated)));
        assert!(matches!(walk(&tar[..100]), Err(TarError::Truncated)));
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"  12 \0"), Some(0o12));
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(number(&[0xff; 12]), None, "negative base-256");
        assert_eq!(
            number(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(number(b"0009"), None);
        assert!(walk(&[]).unwrap().is_empty(), "an empty layer");
    }

    #[test]
    fn pax_records() {
        assert_eq!(pax_value(b"11 path=ab\n", b"path"), Some(&b"ab"[..]));
        assert_eq!(
            pax_value(b"11 path=ab\n11 path=cd\n", b"path"),
            Some(&b"cd"[..])
        );
        assert_eq!(pax_value(b"99 path=ab\n", b"path"), None);
        assert_eq!(pax_value(b"x path=ab\n", b"path"), None);
        assert_eq!(pax_value(b"1 ", b"path"), None);
    }
}
