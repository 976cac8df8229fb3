//! Data packages: the DP package ([`dp`]) and the package the SP receives ([`sp`]).
//!
//! Both are zips read from a caller-supplied `Read + Seek` and written to a
//! caller-supplied `Write + Seek`. Reading is streaming: data files are hashed
//! in fixed-size chunks and never held whole in memory. Every hostile-input
//! rule of spec D6/D7 is enforced here ([`Limits`], [`names`]).

pub mod dp;
pub mod manifest;
pub mod names;
pub mod sp;
mod window;

use std::io::{Read, Seek};

use crate::error::{Error, Result};

/// Size of the read buffer used while hashing.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Resource limits applied while reading packages (spec D6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries one zip may hold.
    pub max_entries: usize,
    /// Most uncompressed bytes one package may hold, counted while reading.
    pub max_total_bytes: u64,
    /// Highest uncompressed:compressed ratio of one entry.
    pub max_ratio: u64,
    /// Largest `manifest.xml`.
    pub max_manifest_bytes: u64,
    /// Largest signature entry.
    pub max_signature_bytes: u64,
    /// Largest certificate entry.
    pub max_certificate_bytes: u64,
    /// Largest compressed inner DP package that may be read into memory (stored ones are read in place).
    pub max_inner_in_memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1000,
            max_total_bytes: 8 << 30,
            max_ratio: 1024,
            max_manifest_bytes: 1 << 20,
            max_signature_bytes: 64 << 10,
            max_certificate_bytes: 64 << 10,
            max_inner_in_memory: 256 << 20,
        }
    }
}

/// One file entry of a zip as seen before reading its data.
#[derive(Debug, Clone)]
pub(crate) struct EntryInfo {
    pub index: usize,
    /// The name with a legacy `META-INFO\` prefix normalised to `META-INFO/`.
    pub name: String,
    /// Whether the name was written in the legacy `META-INFO\` form.
    pub legacy_meta: bool,
    pub size: u64,
    pub stored: bool,
}

/// Opens a zip and checks entry count, names (spec D7, after normalising the
/// legacy `META-INFO\` prefix), duplicates, declared sizes and ratios.
/// Directory entries are checked and then left out of the result.
pub(crate) fn scan<R: Read + Seek>(
    reader: R,
    limits: &Limits,
) -> Result<(zip::ZipArchive<R>, Vec<EntryInfo>)> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| Error::Zip(e.to_string()))?;
    if zip.len() > limits.max_entries {
        return Err(Error::TooManyEntries {
            limit: limits.max_entries,
        });
    }
    let mut entries = Vec::with_capacity(zip.len());
    let mut declared = 0u64;
    let mut seen = std::collections::HashSet::new();
    for index in 0..zip.len() {
        let f = zip
            .by_index_raw(index)
            .map_err(|e| Error::Zip(e.to_string()))?;
        let name =
            String::from_utf8(f.name_raw().to_vec()).map_err(|_| Error::UnsafeEntryName {
                name: String::from_utf8_lossy(f.name_raw()).into_owned(),
                reason: "not UTF-8",
            })?;
        let is_dir = f.is_dir();
        let norm = names::normalise_meta(&name).into_owned();
        let legacy_meta = norm != name;
        let name = norm;
        names::check(&name)?;
        let (size, compressed) = (f.size(), f.compressed_size());
        let stored = f.compression() == zip::CompressionMethod::Stored;
        drop(f);
        declared = declared.saturating_add(size);
        if declared > limits.max_total_bytes {
            return Err(Error::TooLarge {
                what: "declared uncompressed size".into(),
                limit: limits.max_total_bytes,
            });
        }
        if !stored && size > compressed.saturating_mul(limits.max_ratio).max(4096) {
            return Err(Error::ZipBomb {
                name,
                reason: format!("declared ratio above {}:1", limits.max_ratio),
            });
        }
        if is_dir {
            continue;
        }
        if !seen.insert(name.clone()) {
            return Err(Error::DuplicateEntry(name));
        }
        entries.push(EntryInfo {
            index,
            name,
            legacy_meta,
            size,
            stored,
        });
    }
    Ok((zip, entries))
}

/// Reads a small entry whole, refusing more than `limit` bytes.
pub(crate) fn read_small<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    index: usize,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let f = zip.by_index(index).map_err(|e| Error::Zip(e.to_string()))?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(zip_io)?;
    if buf.len() as u64 > limit {
        return Err(Error::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    Ok(buf)
}

/// I/O errors raised by the zip reader (CRC mismatch, truncated data) are zip errors.
pub(crate) fn zip_io(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidData || e.kind() == std::io::ErrorKind::UnexpectedEof
    {
        Error::Zip(e.to_string())
    } else {
        Error::Io(e)
    }
}

/// Which kind of package a zip is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// A DP package: carries a manifest signature.
    Dp,
    /// An SP package: a manifest and no signature of its own.
    Sp,
}

/// Tells a DP package from an SP package by its metadata entries (without reading data).
pub fn detect<R: Read + Seek>(reader: R) -> Result<PackageKind> {
    let zip = zip::ZipArchive::new(reader).map_err(|e| Error::Zip(e.to_string()))?;
    let names: Vec<String> = zip
        .file_names_raw()
        .map(|n| names::normalise_meta(&String::from_utf8_lossy(n)).into_owned())
        .collect();
    if names.iter().any(|n| n == names::SIGNATURE) {
        Ok(PackageKind::Dp)
    } else if names.iter().any(|n| n == names::MANIFEST) {
        Ok(PackageKind::Sp)
    } else {
        Err(Error::MissingMetadata(names::MANIFEST))
    }
}
