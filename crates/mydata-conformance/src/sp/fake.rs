//! The suite's side of the platform: a scripted MyData-API (`GET /service/data`) that records
//! every request, and the packages it serves (real JWEs of real SP packages holding DP packages
//! signed with the sandbox DP key).

use std::collections::{HashMap, VecDeque};
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mydata_protocol::codes::DatasetCode;
use mydata_protocol::ids::{ClientId, PermissionTicket, ResourceId, SecretKey};
use mydata_protocol::jwe::{self, ContentIv, JweMode};
use mydata_protocol::package::dp::{BuildOptions, DpPackageBuilder, DpSigner};
use mydata_protocol::package::names::MANIFEST;
use mydata_protocol::package::sp::{self, Dataset, Outcome, PackagingMode};
use mydata_sp::SpConfig;

/// The sandbox DP key and certificate (fixtures/pki, issued by the sandbox root CA).
const DP_KEY: &[u8] = include_bytes!("../../../../fixtures/pki/dp-moi.key");
const DP_CERT: &[u8] = include_bytes!("../../../../fixtures/pki/dp-moi.pem");

/// One scripted answer of the MyData-API.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// A status without a body, with an optional `Retry-After`.
    Status(u16, Option<&'static str>),
    /// 200 with this compact JWE.
    Jwe(String),
}

/// One request seen.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// When the request arrived.
    pub at: Instant,
    /// Its `tx_id` header.
    pub tx_id: Option<String>,
}

struct Script {
    replies: VecDeque<Reply>,
    after: Reply,
    seen: Vec<Seen>,
}

/// The scripted MyData-API: answers by `permission_ticket`.
#[derive(Default)]
pub(crate) struct FakeApi {
    scripts: Mutex<HashMap<String, Script>>,
}

impl FakeApi {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Script>> {
        match self.scripts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Scripts the answers for `ticket`; once they are used up every request gets 201.
    pub fn script(&self, ticket: &PermissionTicket, replies: Vec<Reply>) {
        self.lock().insert(
            ticket.as_str().to_owned(),
            Script {
                replies: replies.into(),
                after: Reply::Status(201, None),
                seen: Vec::new(),
            },
        );
    }

    /// The requests seen with `ticket`.
    pub fn seen(&self, ticket: &PermissionTicket) -> Vec<Seen> {
        self.lock()
            .get(ticket.as_str())
            .map(|s| s.seen.clone())
            .unwrap_or_default()
    }

    fn answer(&self, req: &HttpRequest) -> Reply {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let ticket = header("permission_ticket")
            .and_then(|t| t.parse::<PermissionTicket>().ok())
            .map(|t| t.as_str().to_owned());
        let mut scripts = self.lock();
        match ticket.and_then(|t| scripts.get_mut(&t)) {
            Some(s) => {
                s.seen.push(Seen {
                    at: Instant::now(),
                    tx_id: header("tx_id"),
                });
                s.replies.pop_front().unwrap_or_else(|| s.after.clone())
            }
            // A ticket the suite never issued: unknown (§8.1 row 3).
            None => Reply::Status(403, None),
        }
    }
}

async fn data(req: HttpRequest, api: web::Data<FakeApi>) -> HttpResponse {
    match api.answer(&req) {
        Reply::Status(code, retry) => {
            let mut b = HttpResponse::build(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            );
            b.insert_header(("cache-control", "no-store"));
            if let Some(r) = retry {
                b.insert_header(("retry-after", r));
            }
            b.finish()
        }
        Reply::Jwe(body) => HttpResponse::Ok()
            .insert_header(("cache-control", "no-store"))
            .insert_header(("content-type", "application/jwe"))
            .body(body),
    }
}

/// Starts the MyData-API on `listener` (current actix runtime).
pub(crate) fn serve(
    listener: std::net::TcpListener,
    api: Arc<FakeApi>,
) -> std::io::Result<ServerHandle> {
    let d = web::Data::from(api);
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(d.clone())
            .route("/service/data", web::get().to(data))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let h = srv.handle();
    actix_web::rt::spawn(srv);
    Ok(h)
}

/// A file of a DP package the suite builds.
pub(crate) struct FileSpec {
    /// Its name.
    pub name: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

/// What one dataset of a built package is.
pub(crate) enum Part {
    /// A DP package holding this file.
    File(FileSpec),
    /// A DP package holding this file whose manifest is altered after signing.
    Tampered(FileSpec),
    /// A failed dataset (code 504).
    Failed,
}

/// Builds packages and their JWEs.
pub(crate) struct Packer {
    signer: DpSigner,
}

impl Packer {
    /// With the sandbox DP signer.
    pub fn new() -> Result<Self, String> {
        Ok(Packer {
            signer: DpSigner::from_pem(DP_KEY, DP_CERT)
                .map_err(|e| format!("the sandbox DP key: {e}"))?,
        })
    }

    fn dp_package(&self, f: &FileSpec) -> Result<Vec<u8>, String> {
        let mut b = DpPackageBuilder::new(
            Cursor::new(Vec::new()),
            &self.signer,
            BuildOptions::default(),
        );
        b.add_file(f.name, &mut &f.bytes[..])
            .map_err(|e| e.to_string())?;
        Ok(b.finish().map_err(|e| e.to_string())?.into_inner())
    }

    /// The SP package of `parts` (one per requested id, in order) in `mode`.
    pub fn sp_package(
        &self,
        mode: PackagingMode,
        ids: &[ResourceId],
        parts: &[Part],
    ) -> Result<Vec<u8>, String> {
        let mut blobs = Vec::with_capacity(parts.len());
        for p in parts {
            blobs.push(match p {
                Part::File(f) => Some(self.dp_package(f)?),
                Part::Tampered(f) => Some(tamper_manifest(&self.dp_package(f)?)?),
                Part::Failed => None,
            });
        }
        let mut readers: Vec<Option<&[u8]>> = blobs.iter().map(|b| b.as_deref()).collect();
        let datasets = ids
            .iter()
            .zip(readers.iter_mut())
            .enumerate()
            .map(|(i, (id, r))| Dataset {
                resource_id: id.clone(),
                resource_name: format!("conformance dataset {}", i + 1),
                outcome: match r {
                    Some(r) => Outcome::Package(r as &mut dyn Read),
                    None => Outcome::Failed(DatasetCode::DpSystemError),
                },
            })
            .collect();
        sp::build(Cursor::new(Vec::new()), mode, datasets)
            .map(|(w, _)| w.into_inner())
            .map_err(|e| e.to_string())
    }

    /// The MyData-API JWE of `zip` for `sp`, under `key`, as the platform writes it (§12).
    pub fn jwe(sp: &SpConfig, zip: &[u8], key: &SecretKey) -> Result<String, String> {
        let iv = match sp.jwe_mode {
            JweMode::Cbc => ContentIv::SpCbcIv(&sp.cbc_iv),
            _ => ContentIv::Random,
        };
        let client_id: &ClientId = &sp.client_id;
        jwe::encrypt_package(client_id, zip, key, sp.jwe_mode, iv).map_err(|e| e.to_string())
    }
}

/// Rewrites a signed DP package with one character of its manifest's first digest changed.
fn tamper_manifest(zip: &[u8]) -> Result<Vec<u8>, String> {
    let mut input = zip::ZipArchive::new(Cursor::new(zip)).map_err(|e| e.to_string())?;
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..input.len() {
        let mut f = input.by_index(i).map_err(|e| e.to_string())?;
        let name = f.name().map_err(|e| e.to_string())?.into_owned();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        if name == MANIFEST || name.replace('\\', "/") == MANIFEST {
            bytes = alter_digest(&bytes)?;
        }
        out.start_file(name.as_str(), opts)
            .map_err(|e| e.to_string())?;
        out.write_all(&bytes).map_err(|e| e.to_string())?;
    }
    Ok(out.finish().map_err(|e| e.to_string())?.into_inner())
}

fn alter_digest(manifest: &[u8]) -> Result<Vec<u8>, String> {
    let text = String::from_utf8_lossy(manifest).into_owned();
    let at = text
        .find("<digest>")
        .map(|i| i + "<digest>".len())
        .ok_or("the DP manifest has no digest")?;
    let mut b = text.into_bytes();
    let c = b.get_mut(at).ok_or("the DP manifest digest is empty")?;
    *c = if *c == b'0' { b'1' } else { b'0' };
    Ok(b)
}
