//! The bundle's container: a plain tar archive, written deterministically, read as hostile.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{BundleError, RECORDS, RECORDS_CSV};

/// The most a small entry (manifest, proof, README) may hold when read back.
const SMALL_LIMIT: u64 = 16 * 1024 * 1024;

/// Writes entries into a tar file that only appears at its path once complete.
pub(crate) struct Writer {
    builder: tar::Builder<BufWriter<tempfile::NamedTempFile>>,
    mtime: u64,
    out: PathBuf,
}

impl Writer {
    pub fn create(out: &Path, mtime: u64) -> Result<Self, BundleError> {
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let file =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| BundleError::io(dir.display(), e))?;
        Ok(Writer {
            builder: tar::Builder::new(BufWriter::new(file)),
            mtime,
            out: out.to_path_buf(),
        })
    }

    fn header(&self, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header
    }

    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), BundleError> {
        let mut header = self.header(bytes.len() as u64);
        self.builder
            .append_data(&mut header, name, bytes)
            .map_err(|e| BundleError::io(self.out.display(), e))
    }

    pub fn add_file(&mut self, name: &str, path: &Path) -> Result<(), BundleError> {
        let file = File::open(path).map_err(|e| BundleError::io(path.display(), e))?;
        let len = file
            .metadata()
            .map_err(|e| BundleError::io(path.display(), e))?
            .len();
        let mut header = self.header(len);
        self.builder
            .append_data(&mut header, name, file)
            .map_err(|e| BundleError::io(self.out.display(), e))
    }

    /// Ends the archive, syncs it, and moves it to its path.
    pub fn finish(self) -> Result<(), BundleError> {
        let out = self.out;
        let fail = |e: &dyn std::fmt::Display| BundleError::io(out.display(), e);
        let buffered = self.builder.into_inner().map_err(|e| fail(&e))?;
        let file = buffered
            .into_inner()
            .map_err(|e| fail(&e.error().to_string()))?;
        file.as_file().sync_all().map_err(|e| fail(&e))?;
        file.persist(&out).map_err(|e| fail(&e.error))?;
        Ok(())
    }
}

/// A bundle read back: the small entries in memory, the records on disk, the CSV's hash.
pub(crate) struct Contents {
    pub small: BTreeMap<String, Vec<u8>>,
    pub records: PathBuf,
    pub records_sha256: String,
    pub csv_sha256: String,
    /// Keeps the extracted files until the check is done.
    _dir: tempfile::TempDir,
}

/// Whether `name` is an entry a bundle may hold; anything else is refused rather than left
/// unverified beside verified files.
fn expected(name: &str) -> bool {
    use super::*;
    [
        README,
        MANIFEST,
        PUBLIC_KEY,
        CHECKPOINT,
        WITNESSED,
        FIRST_PROOF,
        LAST_PROOF,
    ]
    .contains(&name)
        || name
            .strip_prefix("proofs/policy-")
            .and_then(|rest| rest.strip_suffix(".json"))
            .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

pub(crate) fn read(bundle: &Path) -> Result<Contents, BundleError> {
    let file = File::open(bundle).map_err(|e| BundleError::io(bundle.display(), e))?;
    let dir = tempfile::tempdir().map_err(|e| BundleError::io("a temporary directory", e))?;
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1024 * 1024, file));
    let malformed = |e: io::Error| BundleError::Malformed(format!("not a tar archive: {e}"));
    let mut small = BTreeMap::new();
    let mut extracted: BTreeMap<&str, (Option<PathBuf>, String)> = BTreeMap::new();
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let name = entry
            .path()
            .map_err(malformed)?
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| BundleError::Malformed("an entry name is not UTF-8".into()))?;
        let kind = entry.header().entry_type();
        // An archive rebuilt with a stock `tar` holds the proofs directory itself.
        if kind == tar::EntryType::Directory && name.trim_end_matches('/') == "proofs" {
            continue;
        }
        if kind != tar::EntryType::Regular {
            return Err(BundleError::Malformed(format!(
                "{name:?} is not a regular file"
            )));
        }
        let seen = small.contains_key(&name) || extracted.keys().any(|k| *k == name);
        if seen {
            return Err(BundleError::Malformed(format!("{name:?} appears twice")));
        }
        if name == RECORDS {
            let path = dir.path().join(RECORDS);
            let digest = copy_hashed(&mut entry, &path)?;
            extracted.insert(RECORDS, (Some(path), digest));
        } else if name == RECORDS_CSV {
            // Only its hash is needed: the checker renders the CSV again and compares.
            let mut sink = HashingWriter::new(io::sink());
            io::copy(&mut entry, &mut sink).map_err(malformed)?;
            extracted.insert(RECORDS_CSV, (None, sink.finish().1));
        } else if expected(&name) {
            let mut bytes = Vec::new();
            entry
                .by_ref()
                .take(SMALL_LIMIT + 1)
                .read_to_end(&mut bytes)
                .map_err(malformed)?;
            if bytes.len() as u64 > SMALL_LIMIT {
                return Err(BundleError::Malformed(format!(
                    "{name:?} is larger than {SMALL_LIMIT} bytes"
                )));
            }
            small.insert(name, bytes);
        } else {
            return Err(BundleError::Malformed(format!(
                "{name:?} is not part of a bundle (nothing in it would be verified)"
            )));
        }
    }
    let mut take = |name: &str| {
        extracted
            .remove(name)
            .ok_or_else(|| BundleError::Malformed(format!("{name} is missing")))
    };
    let (records, records_sha256) = take(RECORDS)?;
    let (_, csv_sha256) = take(RECORDS_CSV)?;
    let records = records.ok_or_else(|| BundleError::Malformed(format!("{RECORDS} is missing")))?;
    Ok(Contents {
        small,
        records,
        records_sha256,
        csv_sha256,
        _dir: dir,
    })
}

fn copy_hashed(from: &mut impl Read, to: &Path) -> Result<String, BundleError> {
    let file = File::create(to).map_err(|e| BundleError::io(to.display(), e))?;
    let mut out = HashingWriter::new(BufWriter::with_capacity(1024 * 1024, file));
    io::copy(from, &mut out).map_err(|e| BundleError::io(to.display(), e))?;
    let (inner, digest) = out.finish();
    inner
        .into_inner()
        .map_err(|e| BundleError::io(to.display(), e.error()))?;
    Ok(digest)
}

/// A writer that hashes what passes through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The inner writer and the hex SHA-256 of everything written.
    pub fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The hex SHA-256 of a file.
pub(crate) fn file_sha256(path: &Path) -> Result<String, BundleError> {
    let mut file = File::open(path).map_err(|e| BundleError::io(path.display(), e))?;
    let mut sink = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut sink).map_err(|e| BundleError::io(path.display(), e))?;
    Ok(sink.finish().1)
}
