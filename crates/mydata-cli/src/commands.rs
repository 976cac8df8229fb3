//! Command definitions and their implementations.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use mydata_protocol::codes::DatasetCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::ids::{CbcIv, ClientId, ResourceId, SecretKey};
use mydata_protocol::jwe::{self, ContentIv, JweMode};
use mydata_protocol::package::Limits;
use mydata_protocol::package::dp::{
    self, BuildOptions, DpPackageBuilder, DpSigner, FileCompression, SignatureEncoding,
    TrustAnchors, VerifyOptions,
};
use mydata_protocol::package::sp::{self, Dataset, Outcome, PackagingMode};
use mydata_protocol::param::{ParamCipher, ParamMode};
use serde_json::json;

use crate::exit::runtime;

/// Errors of the command layer: usage problems and I/O around the core.
type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The MyData reference implementation's command-line tool.
#[derive(Parser, Debug)]
#[command(name = "mydata", version, about)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

impl Cli {
    /// Whether this is `mydata serve`, which installs its own log subscriber (spec
    /// `operations.md`).
    pub fn is_serve(&self) -> bool {
        matches!(self.cmd, Cmd::Serve(_))
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build and verify data packages.
    #[command(subcommand)]
    Package(PackageCmd),
    /// Encrypt and decrypt pid / tx_id / secret_key parameters.
    #[command(subcommand)]
    Param(ParamCmd),
    /// Encrypt and decrypt MyData-API JWE bodies.
    #[command(subcommand)]
    Jwe(JweCmd),
    /// Run the platform server.
    Serve(crate::server_cmds::ServeArgs),
    /// Run the sandbox DP (every catalogue dataset, for the fixture citizens).
    SandboxDp(crate::server_cmds::SandboxDpArgs),
    /// Run a local signing agent for a sandbox card (certificate logins without hardware).
    #[command(
        after_help = "Example:\n  mydata card-agent --card fixtures/pki/identity/cer-A120345672.p12 --origin http://127.0.0.1:8080"
    )]
    CardAgent(crate::card_agent::Args),
    /// Register, list, suspend, delete and rotate SP services (operator); collect and verify
    /// packages as an SP.
    #[command(subcommand)]
    Sp(crate::server_cmds::SpCmd),
    /// Register, list, suspend, delete and rotate DP datasets (operator).
    #[command(subcommand)]
    Dp(crate::server_cmds::DpCmd),
    /// Check the configuration of `mydata serve` (operator).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Run a conformance suite against a platform, an SP or a DP implementation.
    #[command(subcommand)]
    Conformance(ConformanceCmd),
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print the effective configuration (file, environment, flags; secrets redacted) and its
    /// problems; exit 1 when `mydata serve` would refuse it.
    Check(crate::server_cmds::ConfigCheckArgs),
}

#[derive(Subcommand, Debug)]
enum ConformanceCmd {
    /// Play SP and DP toward a platform and check the rules of protocol.md observable from outside.
    #[command(
        after_help = "Example:\n  mydata conformance platform --sandbox --platform http://127.0.0.1:8080 --junit platform.xml"
    )]
    Platform(crate::conformance_platform::Args),
    /// Play the platform toward an SP and check its reactions through the conformance hook.
    #[command(
        after_help = "Example:\n  mydata conformance sp --sp http://127.0.0.1:8090 --listen 127.0.0.1:8099 --junit sp.xml"
    )]
    Sp(crate::conformance_sp::Args),
    /// Play the platform toward a DP (its authorization server and its DP-API calls) and check
    /// tokens, transaction_uid handling, answers and packages.
    #[command(
        after_help = "Example:\n  mydata conformance dp --profile dp-profile.json --junit dp.xml\n  mydata conformance dp --sandbox --dp-url http://127.0.0.1:8081 --platform-url http://127.0.0.1:9100"
    )]
    Dp(crate::conformance_dp::Args),
}

#[derive(Subcommand, Debug)]
enum PackageCmd {
    /// Build a signed DP package from data files.
    #[command(
        after_help = "Example:\n  mydata package build --key dp.key --cert dp.pem -o pkg.zip household.json"
    )]
    Build(BuildArgs),
    /// Build the package an SP receives from DP packages and outcomes.
    #[command(
        after_help = "Example:\n  mydata package build-sp --mode B -o sp.zip --dataset API.AAAAAAAAAA=pkg.zip --dataset API.BBBBBBBBBB=504"
    )]
    BuildSp(BuildSpArgs),
    /// Verify a DP package, or an SP package and every DP package in it.
    #[command(
        after_help = "Example:\n  mydata package verify --trust fixtures/pki/root-ca.pem sp.zip"
    )]
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
struct BuildArgs {
    /// The DP's private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The DP's certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Where to write the package.
    #[arg(short, long)]
    out: PathBuf,
    /// Write the signature as Base64 text (older DPs).
    #[arg(long)]
    base64_signature: bool,
    /// Write `META-INFO\` with backslashes (older DPs).
    #[arg(long)]
    backslash: bool,
    /// Compression of data files.
    #[arg(long, value_enum, default_value_t = Compression::Auto)]
    compression: Compression,
    /// Data files; each is stored under its file name, or under NAME with NAME=PATH.
    #[arg(required = true)]
    files: Vec<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Compression {
    Auto,
    Deflate,
    Store,
}

#[derive(Args, Debug)]
struct BuildSpArgs {
    /// Packaging mode.
    #[arg(long, value_enum, default_value_t = Mode::A)]
    mode: Mode,
    /// Where to write the package.
    #[arg(short, long)]
    out: PathBuf,
    /// A dataset, in request order: RESOURCE_ID=PATH (a DP package), RESOURCE_ID=204 (no data)
    /// or RESOURCE_ID=CODE (failed with that code); append @NAME for the resource_name.
    #[arg(long = "dataset", required = true)]
    datasets: Vec<String>,
    /// Print the build summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Mode {
    A,
    B,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// The package.
    package: PathBuf,
    /// Verification time: unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (default: now).
    #[arg(long)]
    at: Option<String>,
    /// Trust anchor (PEM; repeat): the signing certificate must chain to one. Without it the
    /// chain is NOT checked, and the output says so.
    #[arg(
        long = "trust",
        alias = "trust-anchors",
        alias = "trust-anchor",
        value_name = "PEM"
    )]
    trust: Vec<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Print elapsed time, throughput and peak memory.
    #[arg(long)]
    stats: bool,
    /// Most uncompressed bytes accepted.
    #[arg(long)]
    max_total_bytes: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum ParamCmd {
    /// Encrypt a value.
    #[command(
        after_help = "Example:\n  mydata param encrypt --secret 0123456789abcdef --iv fedcba9876543210 A120345672"
    )]
    Encrypt(ParamArgs),
    /// Decrypt a value.
    #[command(
        after_help = "Example:\n  mydata param decrypt --secret 0123456789abcdef --iv fedcba9876543210 BASE64VALUE"
    )]
    Decrypt(ParamArgs),
}

#[derive(Args, Debug)]
struct ParamArgs {
    /// The SP's client_secret (16 characters; the key is the secret twice).
    #[arg(long)]
    secret: String,
    /// The SP's cbc_iv (16 characters; unused with --gcm).
    #[arg(long)]
    iv: String,
    /// AES/GCM mode instead of AES/CBC.
    #[arg(long)]
    gcm: bool,
    /// The value.
    value: String,
}

#[derive(Subcommand, Debug)]
enum JweCmd {
    /// Encrypt a zip (as the MyData-API payload) or, with --raw, any file.
    #[command(
        after_help = "Example:\n  mydata jwe encrypt --key SECRET_KEY_OF_32_CHARACTERS____ --client-id CLI.SANDBOX001 sp.zip > body.jwe"
    )]
    Encrypt(JweEncryptArgs),
    /// Decrypt a MyData-API body.
    #[command(
        after_help = "Example:\n  mydata jwe decrypt --key SECRET_KEY_OF_32_CHARACTERS____ -o sp.zip body.jwe"
    )]
    Decrypt(JweDecryptArgs),
}

#[derive(Args, Debug)]
struct JweEncryptArgs {
    /// The SP's secret_key (32 characters).
    #[arg(long)]
    key: String,
    /// A256GCMKW + A256GCM instead of A256KW + A256CBC-HS512.
    #[arg(long)]
    gcm: bool,
    /// The SP's cbc_iv, used as the content IV in CBC mode (default: random IV).
    #[arg(long)]
    iv: Option<String>,
    /// The SP's client_id, for the payload's filename (required unless --raw).
    #[arg(long)]
    client_id: Option<String>,
    /// Encrypt the file's bytes as they are, not wrapped in the payload JSON.
    #[arg(long)]
    raw: bool,
    /// The input file (- for standard input).
    input: PathBuf,
}

#[derive(Args, Debug)]
struct JweDecryptArgs {
    /// The SP's secret_key (32 characters).
    #[arg(long)]
    key: String,
    /// Expect A256GCMKW + A256GCM.
    #[arg(long)]
    gcm: bool,
    /// Require the payload filename to be {client_id}.zip.
    #[arg(long)]
    client_id: Option<String>,
    /// Write the plaintext as it is, without parsing the payload JSON.
    #[arg(long)]
    raw: bool,
    /// Where to write the zip (or the raw plaintext); standard output when absent.
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// The compact JWE file (- for standard input).
    input: PathBuf,
}

/// Runs a parsed command; returns the exit status.
pub fn run(cli: Cli) -> CliResult<i32> {
    match cli.cmd {
        Cmd::Serve(a) => crate::server_cmds::serve(a),
        Cmd::SandboxDp(a) => crate::server_cmds::sandbox_dp(a),
        Cmd::CardAgent(a) => crate::card_agent::run(a),
        Cmd::Sp(c) => crate::server_cmds::sp(c),
        Cmd::Dp(c) => crate::server_cmds::dp(c),
        Cmd::Config(ConfigCmd::Check(a)) => crate::server_cmds::config_check(a),
        Cmd::Conformance(ConformanceCmd::Platform(a)) => crate::conformance_platform::run(a),
        Cmd::Conformance(ConformanceCmd::Sp(a)) => crate::conformance_sp::run(a),
        Cmd::Conformance(ConformanceCmd::Dp(a)) => crate::conformance_dp::run(a),
        Cmd::Package(PackageCmd::Build(a)) => package_build(a),
        Cmd::Package(PackageCmd::BuildSp(a)) => package_build_sp(a),
        Cmd::Package(PackageCmd::Verify(a)) => package_verify(a),
        Cmd::Param(ParamCmd::Encrypt(a)) => param(a, true),
        Cmd::Param(ParamCmd::Decrypt(a)) => param(a, false),
        Cmd::Jwe(JweCmd::Encrypt(a)) => jwe_encrypt(a),
        Cmd::Jwe(JweCmd::Decrypt(a)) => jwe_decrypt(a),
    }
}

fn read_input(p: &Path) -> CliResult<Vec<u8>> {
    let mut v = Vec::new();
    if p == Path::new("-") {
        std::io::stdin().read_to_end(&mut v)?;
    } else {
        File::open(p)
            .map_err(|e| runtime(format!("{}: {e}", p.display())))?
            .read_to_end(&mut v)?;
    }
    Ok(v)
}

fn read_path(p: &Path) -> CliResult<Vec<u8>> {
    std::fs::read(p).map_err(|e| runtime(format!("{}: {e}", p.display())))
}

fn package_build(a: BuildArgs) -> CliResult<i32> {
    let signer = DpSigner::from_pem(&read_path(&a.key)?, &read_path(&a.cert)?)?;
    let opts = BuildOptions {
        signature: if a.base64_signature {
            SignatureEncoding::Base64
        } else {
            SignatureEncoding::Binary
        },
        backslash_meta: a.backslash,
        compression: match a.compression {
            Compression::Auto => FileCompression::Auto,
            Compression::Deflate => FileCompression::Deflate,
            Compression::Store => FileCompression::Store,
        },
    };
    let tmp = a.out.with_extension("zip.partial");
    let out = BufWriter::with_capacity(
        1 << 20,
        // A DP package holds a citizen's data: 0600 (D48).
        mydata_server::datadir::create_file(&tmp)?,
    );
    let result = (|| -> CliResult<()> {
        let mut b = DpPackageBuilder::new(out, &signer, opts);
        for spec in &a.files {
            let (name, path) = match spec.split_once('=') {
                Some((n, p)) => (n.to_owned(), PathBuf::from(p)),
                None => {
                    let p = PathBuf::from(spec);
                    let n = p
                        .file_name()
                        .ok_or_else(|| format!("{spec}: not a file"))?
                        .to_string_lossy()
                        .into_owned();
                    (n, p)
                }
            };
            let mut f =
                File::open(&path).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
            b.add_file(&name, &mut f)?;
        }
        b.finish()?.flush()?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, &a.out)?;
            outln!("{}", a.out.display())?;
            Ok(0)
        }
        Err(e) => {
            // Nothing half-written is left behind.
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn package_build_sp(a: BuildSpArgs) -> CliResult<i32> {
    let mut bufs = Vec::new();
    let mut specs = Vec::new();
    for d in &a.datasets {
        let (id, rest) = d
            .split_once('=')
            .ok_or_else(|| format!("{d}: expected RESOURCE_ID=PATH|CODE[@NAME]"))?;
        let id: ResourceId = id.parse()?;
        let (what, name) = match rest.split_once('@') {
            Some((w, n)) => (w, n.to_owned()),
            None => (rest, String::new()),
        };
        match what.parse::<u16>() {
            Ok(204) => specs.push((id, name, None, Some(DatasetCode::NoData))),
            Ok(c) => {
                let code = DatasetCode::from_wire(c)
                    .filter(|c| c.is_failure())
                    .ok_or_else(|| format!("{c} is not a failure code"))?;
                specs.push((id, name, None, Some(code)));
            }
            Err(_) => {
                bufs.push(read_path(Path::new(what))?);
                specs.push((id, name, Some(bufs.len() - 1), None));
            }
        }
    }
    let mut readers: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
    let mut slots: Vec<Option<&mut &[u8]>> = readers.iter_mut().map(Some).collect();
    let datasets = specs
        .into_iter()
        .map(|(resource_id, resource_name, buf, code)| {
            let outcome = match (buf, code) {
                (Some(i), _) => Outcome::Package(slots[i].take().expect("each buffer used once")),
                (None, Some(DatasetCode::NoData)) => Outcome::NoData,
                (None, Some(c)) => Outcome::Failed(c),
                (None, None) => Outcome::NoData,
            };
            Dataset {
                resource_id,
                resource_name,
                outcome,
            }
        })
        .collect();
    let mode = match a.mode {
        Mode::A => PackagingMode::A,
        Mode::B => PackagingMode::B,
    };
    let out = mydata_server::datadir::create_file(&a.out)?;
    let (_, summary) = sp::build(out, mode, datasets)?;
    if a.json {
        outln!(
            "{}",
            json!({"manifest": summary.manifest, "withheld": summary.withheld, "unable_to_deliver": summary.unable_to_deliver()})
        )?;
    } else {
        outln!("{}", a.out.display())?;
    }
    Ok(0)
}

fn now() -> UnixTime {
    UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default(),
    )
}

/// Peak resident memory of this process in KiB (Linux `VmHWM`), when known.
fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn error_json(e: &mydata_protocol::Error) -> serde_json::Value {
    json!({"kind": e.kind(), "file": e.file(), "message": e.to_string()})
}

fn is_sp_package(path: &Path) -> CliResult<bool> {
    let f = File::open(path).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
    // An unreadable zip is reported by the DP verifier with its precise error.
    Ok(matches!(
        mydata_protocol::package::detect(f),
        Ok(mydata_protocol::package::PackageKind::Sp)
    ))
}

fn package_verify(a: VerifyArgs) -> CliResult<i32> {
    let at = match &a.at {
        Some(s) => UnixTime::parse(s)?,
        None => now(),
    };
    let pems: Vec<Vec<u8>> = a
        .trust
        .iter()
        .map(|p| read_path(p))
        .collect::<CliResult<_>>()?;
    let anchors = if pems.is_empty() {
        None
    } else {
        Some(TrustAnchors::from_pem(
            &pems.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        )?)
    };
    let mut limits = Limits::default();
    if let Some(m) = a.max_total_bytes {
        limits.max_total_bytes = m;
    }
    let opts = VerifyOptions {
        at,
        trust: anchors.as_ref(),
        limits,
    };
    let started = Instant::now();
    let sp_kind = is_sp_package(&a.package)?;
    let file =
        File::open(&a.package).map_err(|e| runtime(format!("{}: {e}", a.package.display())))?;
    let (ok, mut report, bytes) = if sp_kind {
        match sp::verify(file, &opts) {
            Ok(reports) => {
                let ok = reports.iter().all(|r| r.ok());
                let bytes = reports
                    .iter()
                    .filter_map(|r| r.package.as_ref()?.as_ref().ok())
                    .map(|p| p.data_bytes)
                    .sum::<u64>();
                let datasets: Vec<_> = reports
                    .iter()
                    .map(|r| {
                        let mut v = json!({"resource_id": r.entry.resource_id, "resource_name": r.entry.resource_name, "code": r.entry.code, "filename": r.entry.filename});
                        match &r.package {
                            None => v["verified"] = json!(null),
                            Some(Ok(p)) => v["verified"] = json!(p),
                            Some(Err(e)) => v["error"] = error_json(e),
                        }
                        v
                    })
                    .collect();
                (
                    ok,
                    json!({"ok": ok, "kind": "sp", "datasets": datasets}),
                    bytes,
                )
            }
            Err(e) => (
                false,
                json!({"ok": false, "kind": "sp", "error": error_json(&e)}),
                0,
            ),
        }
    } else {
        match dp::verify(file, &opts) {
            Ok(p) => {
                let bytes = p.data_bytes;
                (true, json!({"ok": true, "kind": "dp", "package": p}), bytes)
            }
            Err(e) => (
                false,
                json!({"ok": false, "kind": "dp", "error": error_json(&e)}),
                0,
            ),
        }
    };
    // Without trust anchors the signature is checked against the certificate the package
    // carries, whoever issued it: say so, in both outputs.
    report["chain_checked"] = json!(anchors.is_some());
    let secs = started.elapsed().as_secs_f64();
    if a.stats {
        report["stats"] = json!({
            "seconds": secs,
            "data_bytes": bytes,
            "mib_per_second": bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9),
            "peak_rss_kib": peak_rss_kib(),
        });
    }
    if a.json {
        outln!("{report}")?;
    } else {
        print_human(&a.package, &report)?;
    }
    Ok(if ok { 0 } else { 1 })
}

fn print_human(path: &Path, r: &serde_json::Value) -> std::io::Result<()> {
    let fail = |e: &serde_json::Value| match e["file"].as_str() {
        Some(f) => format!("FAILED: {f}: {}", e["message"].as_str().unwrap_or("")),
        None => format!("FAILED: {}", e["message"].as_str().unwrap_or("")),
    };
    if let Some(e) = r.get("error") {
        outln!("{}: {}", path.display(), fail(e))?;
    } else if let Some(p) = r.get("package") {
        outln!(
            "{}: OK ({} files, signed by {})",
            path.display(),
            p["files"].as_array().map_or(0, Vec::len),
            p["signer"]["subject"].as_str().unwrap_or("?")
        )?;
        for f in p["files"].as_array().into_iter().flatten() {
            outln!(
                "  {}  {}  {} bytes",
                f["digest"].as_str().unwrap_or(""),
                f["name"].as_str().unwrap_or(""),
                f["size"]
            )?;
        }
    } else {
        let ok = r["ok"].as_bool().unwrap_or(false);
        outln!("{}: {}", path.display(), if ok { "OK" } else { "FAILED" })?;
        for d in r["datasets"].as_array().into_iter().flatten() {
            let status = match (d.get("error"), d["verified"].is_null()) {
                (Some(e), _) => fail(e),
                (None, true) => "no file".to_owned(),
                (None, false) => "OK".to_owned(),
            };
            outln!(
                "  {} code {} {}: {status}",
                d["resource_id"].as_str().unwrap_or(""),
                d["code"],
                d["resource_name"].as_str().unwrap_or("")
            )?;
        }
    }
    if r["chain_checked"] == json!(false) {
        outln!(
            "  certificate chain NOT checked: give --trust CA.pem (repeat) to require that the \
             signing certificate chains to a trust anchor"
        )?;
    }
    if let Some(s) = r.get("stats") {
        eprintln!(
            "stats: {:.3} s, {} bytes, {:.1} MiB/s, peak RSS {} KiB",
            s["seconds"].as_f64().unwrap_or(0.0),
            s["data_bytes"],
            s["mib_per_second"].as_f64().unwrap_or(0.0),
            s["peak_rss_kib"]
        );
    }
    Ok(())
}

fn param(a: ParamArgs, encrypt: bool) -> CliResult<i32> {
    let mode = if a.gcm {
        ParamMode::Gcm
    } else {
        ParamMode::Cbc
    };
    let c = ParamCipher::from_raw(&a.secret, &a.iv, mode)?;
    let result = if encrypt {
        c.encrypt(&a.value)
    } else {
        c.decrypt(&a.value)
    };
    match result {
        Ok(v) => {
            outln!("{v}")?;
            Ok(0)
        }
        Err(e) => {
            eprintln!("mydata: {e} (return code {})", e.return_code());
            Ok(1)
        }
    }
}

fn jwe_encrypt(a: JweEncryptArgs) -> CliResult<i32> {
    let key: SecretKey = a.key.parse()?;
    let mode = if a.gcm { JweMode::Gcm } else { JweMode::Cbc };
    let iv: Option<CbcIv> = a.iv.as_deref().map(str::parse).transpose()?;
    let content_iv = iv.as_ref().map_or(ContentIv::Random, ContentIv::SpCbcIv);
    let input = read_input(&a.input)?;
    let out = if a.raw {
        jwe::encrypt_compact(&input, &key, mode, content_iv)?
    } else {
        let cid: ClientId = a
            .client_id
            .as_deref()
            .ok_or("--client-id is required unless --raw")?
            .parse()?;
        jwe::encrypt_package(&cid, &input, &key, mode, content_iv)?
    };
    outln!("{out}")?;
    Ok(0)
}

fn jwe_decrypt(a: JweDecryptArgs) -> CliResult<i32> {
    let key: SecretKey = a.key.parse()?;
    let mode = if a.gcm { JweMode::Gcm } else { JweMode::Cbc };
    let cid: Option<ClientId> = a.client_id.as_deref().map(str::parse).transpose()?;
    let input = String::from_utf8(read_input(&a.input)?).map_err(|_| "the JWE is not text")?;
    let result = if a.raw {
        jwe::decrypt_compact(&input, &key, mode)
    } else {
        jwe::decrypt_package(&input, &key, mode, cid.as_ref()).map(|d| {
            eprintln!("{}", d.filename);
            d.zip
        })
    };
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mydata: {e}");
            return Ok(1);
        }
    };
    match a.out {
        // The decrypted package is personal data: 0600 (D48).
        Some(p) => mydata_server::datadir::create_file(&p)?.write_all(&bytes)?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    Ok(0)
}
