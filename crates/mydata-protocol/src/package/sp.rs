//! The package an SP receives (brief §9.6, spec D10): DP packages stored byte
//! for byte as `{resource_id}.zip`, plus `META-INFO/manifest.xml` with a code
//! per dataset. Packaging mode A withholds every file when any dataset failed;
//! mode B ships what succeeded.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek, Write};

use serde::{Deserialize, Serialize};
use zip::write::SimpleFileOptions;

use super::dp::{self, VerifiedPackage, VerifyOptions};
use super::manifest::{self, SpManifestEntry};
use super::names::MANIFEST;
use super::window::Window;
use super::{read_small, scan, zip_io};
use crate::codes::DatasetCode;
use crate::error::{Error, Result};
use crate::ids::ResourceId;

/// Packaging mode an SP registered (brief §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PackagingMode {
    /// One dataset fails → nothing is delivered.
    #[default]
    A,
    /// Deliver what succeeded; failures carry their codes.
    B,
}

impl std::fmt::Display for PackagingMode {
    /// As registered and stored: `A` or `B`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PackagingMode::A => "A",
            PackagingMode::B => "B",
        })
    }
}

/// What happened to one dataset, as input to [`build`].
pub enum Outcome<'a> {
    /// The DP answered with a package (not yet copied).
    Package(&'a mut dyn Read),
    /// The DP answered 204: no data for this citizen.
    NoData,
    /// The dataset failed with this code.
    Failed(DatasetCode),
}

/// One dataset of an SP package, in request order.
pub struct Dataset<'a> {
    /// The dataset.
    pub resource_id: ResourceId,
    /// Its name as shown to the citizen.
    pub resource_name: String,
    /// What the DP answered.
    pub outcome: Outcome<'a>,
}

/// What [`build`] shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildSummary {
    /// The manifest lines written.
    pub manifest: Vec<SpManifestEntry>,
    /// Datasets that failed (code other than 200/204).
    pub failed: Vec<ResourceId>,
    /// Whether mode A withheld every file.
    pub withheld: bool,
}

impl BuildSummary {
    /// The `unable_to_deliver` list when the package is complete before the
    /// SP-API call (spec D22 allows it only for failures known at that moment):
    /// the failed ids when mode A withheld the files, or every id when nothing
    /// at all ships; empty otherwise (the call then carries `secret_key`).
    pub fn unable_to_deliver(&self) -> Vec<String> {
        let shipped = self.manifest.iter().any(|m| !m.filename.is_empty());
        if self.withheld {
            self.failed.iter().map(ToString::to_string).collect()
        } else if !shipped && !self.failed.is_empty() {
            self.manifest
                .iter()
                .map(|m| m.resource_id.clone())
                .collect()
        } else {
            Vec::new()
        }
    }
}

/// Writes an SP package. DP packages are copied unchanged and stored (not recompressed).
pub fn build<W: Write + Seek>(
    out: W,
    mode: PackagingMode,
    datasets: Vec<Dataset<'_>>,
) -> Result<(W, BuildSummary)> {
    let mut seen = std::collections::HashSet::new();
    for d in &datasets {
        if !seen.insert(d.resource_id.clone()) {
            return Err(Error::DuplicateResource(d.resource_id.to_string()));
        }
    }
    let failed: Vec<ResourceId> = datasets
        .iter()
        .filter(|d| matches!(d.outcome, Outcome::Failed(c) if c.is_failure()))
        .map(|d| d.resource_id.clone())
        .collect();
    let withheld = mode == PackagingMode::A && !failed.is_empty();
    let mut zip = zip::ZipWriter::new(out);
    let stored = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    let mut lines = Vec::with_capacity(datasets.len());
    for d in datasets {
        let (filename, code) = match d.outcome {
            Outcome::Package(r) if !withheld => {
                let name = format!("{}.zip", d.resource_id);
                zip.start_file(name.as_str(), stored)
                    .map_err(|e| Error::Zip(e.to_string()))?;
                std::io::copy(r, &mut zip)?;
                (name, DatasetCode::Delivered)
            }
            Outcome::Package(_) => (String::new(), DatasetCode::Delivered),
            Outcome::NoData => (String::new(), DatasetCode::NoData),
            Outcome::Failed(c) => (String::new(), c),
        };
        lines.push(SpManifestEntry {
            filename,
            resource_id: d.resource_id.to_string(),
            resource_name: d.resource_name,
            code: code.wire(),
        });
    }
    let deflate = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(MANIFEST, deflate)
        .map_err(|e| Error::Zip(e.to_string()))?;
    zip.write_all(manifest::write_sp(&lines).as_bytes())?;
    let w = zip.finish().map_err(|e| Error::Zip(e.to_string()))?;
    Ok((
        w,
        BuildSummary {
            manifest: lines,
            failed,
            withheld,
        },
    ))
}

/// The verification result of one dataset of an SP package.
#[derive(Debug)]
pub struct DatasetReport {
    /// The manifest line.
    pub entry: SpManifestEntry,
    /// `None` when no file ships for the dataset; otherwise the DP package's verification.
    pub package: Option<Result<VerifiedPackage>>,
}

impl DatasetReport {
    /// Whether this dataset is in order: no file expected, or a file that verifies.
    pub fn ok(&self) -> bool {
        !matches!(self.package, Some(Err(_)))
    }
}

/// Reads an SP package and verifies each DP package inside it.
///
/// Structural faults of the outer zip (unsafe names, limits, a manifest that
/// does not parse, a listed file that is missing, an unlisted file) fail the
/// whole call; a DP package that fails verification is reported in its
/// dataset's [`DatasetReport`].
pub fn verify<R: Read + Seek>(reader: R, opts: &VerifyOptions<'_>) -> Result<Vec<DatasetReport>> {
    let limits = &opts.limits;
    let (mut zip, entries) = scan(reader, limits)?;
    let mut by_name: HashMap<String, _> =
        entries.into_iter().map(|e| (e.name.clone(), e)).collect();
    let m = by_name
        .remove(MANIFEST)
        .ok_or(Error::MissingMetadata(MANIFEST))?;
    let lines = manifest::parse_sp(&read_small(
        &mut zip,
        m.index,
        limits.max_manifest_bytes,
        MANIFEST,
    )?)?;
    let mut wanted = Vec::new();
    let mut listed = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for l in &lines {
        // Consistency of each line (spec packages.md §5.2 step 3).
        let id: ResourceId = l.resource_id.parse().map_err(|_| {
            Error::Manifest(format!("resource_id {:?} is malformed", l.resource_id))
        })?;
        if !ids.insert(id.clone()) {
            return Err(Error::DuplicateResource(id.to_string()));
        }
        if l.filename.is_empty() {
            continue;
        }
        if l.filename != format!("{id}.zip") || l.code != DatasetCode::Delivered.wire() {
            return Err(Error::Manifest(format!(
                "{id}: a shipped file must be named {id}.zip and carry code 200"
            )));
        }
        if !listed.insert(l.filename.clone()) {
            return Err(Error::DuplicateEntry(l.filename.clone()));
        }
        let e = by_name
            .get(&l.filename)
            .ok_or_else(|| Error::MissingFile(l.filename.clone()))?;
        wanted.push(e.clone());
    }
    if let Some(extra) = by_name.keys().find(|k| !listed.contains(*k)) {
        return Err(Error::ExtraFile(extra.clone()));
    }
    // Find where each stored inner zip starts, then verify it in place.
    let mut places = HashMap::new();
    for e in &wanted {
        let start = if e.stored {
            let f = zip
                .by_index_raw(e.index)
                .map_err(|x| Error::Zip(x.to_string()))?;
            f.data_start()
        } else {
            None
        };
        places.insert(e.name.clone(), start);
    }
    let mut in_memory: HashMap<String, Vec<u8>> = HashMap::new();
    for e in wanted.iter().filter(|e| places[&e.name].is_none()) {
        if e.size > limits.max_inner_in_memory {
            return Err(Error::TooLarge {
                what: format!("compressed inner package {}", e.name),
                limit: limits.max_inner_in_memory,
            });
        }
        let mut f = zip
            .by_index(e.index)
            .map_err(|x| Error::Zip(x.to_string()))?;
        let mut v = Vec::new();
        (&mut f)
            .take(limits.max_inner_in_memory + 1)
            .read_to_end(&mut v)
            .map_err(zip_io)?;
        in_memory.insert(e.name.clone(), v);
    }
    let mut inner = zip.into_inner();
    let reports = lines
        .into_iter()
        .map(|entry| {
            if entry.filename.is_empty() {
                return DatasetReport {
                    entry,
                    package: None,
                };
            }
            let e = wanted
                .iter()
                .find(|w| w.name == entry.filename)
                .map(|w| (w.size, places[&w.name]));
            let result = match (e, in_memory.remove(&entry.filename)) {
                (_, Some(bytes)) => dp::verify(Cursor::new(bytes), opts),
                (Some((size, Some(start))), None) => {
                    dp::verify(Window::new(&mut inner, start, size), opts)
                }
                _ => Err(Error::MissingFile(entry.filename.clone())),
            };
            let package = Some(result.map_err(|source| Error::Dataset {
                resource_id: entry.resource_id.clone(),
                source: Box::new(source),
            }));
            DatasetReport { entry, package }
        })
        .collect();
    Ok(reports)
}
