//! Package-verify throughput beside `openssl dgst -sha256` on the same package.
//!
//! `cargo bench -p mydata-cli --bench package_verify` builds a 1 GiB DP package
//! (8 stored PDF-like files of incompressible bytes; MYDATA_BENCH_MIB changes
//! the size), then times, best of three runs each on a warm page cache:
//! `openssl dgst -sha256 package.zip`, and `mydata package verify` as a separate
//! process (so its peak RSS is the verifier's alone). It prints the figures
//! and the targets (≥ 80 % of openssl's rate, peak RSS < 64 MB); it asserts
//! nothing.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use mydata_protocol::package::dp::{BuildOptions, DpPackageBuilder, DpSigner};

/// Incompressible bytes from xorshift64, generated as they are read.
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize & !7;
        let n = if n == 0 {
            (self.left as usize).min(buf.len())
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let b = self.state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn best_of<F: FnMut() -> f64>(n: usize, mut f: F) -> f64 {
    (0..n).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // Built but not run by `cargo test --all-targets`.
        return;
    }
    let mib: u64 = std::env::var("MYDATA_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("target/bench-data");
    let pkg = dir.join(format!("package-{mib}MiB.zip"));
    if !pkg.exists() {
        let key = std::fs::read(root.join("fixtures/pki/dp-moi.key")).expect("fixture key");
        let cert = std::fs::read(root.join("fixtures/pki/dp-moi.pem")).expect("fixture cert");
        let signer = DpSigner::from_pem(&key, &cert).expect("signer");
        let tmp = pkg.with_extension("partial");
        let out = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&tmp).expect("create"),
        );
        let started = Instant::now();
        let mut b = DpPackageBuilder::new(out, &signer, BuildOptions::default());
        let files = 8u64;
        for i in 0..files {
            let mut noise = Noise {
                state: 0x9E37_79B9_7F4A_7C15 ^ (i + 1),
                left: (mib << 20) / files,
            };
            b.add_file(&format!("record-{i}.pdf"), &mut noise)
                .expect("add");
        }
        b.add_file("summary.json", &mut &br#"{"bench":true}"#[..])
            .expect("add");
        b.finish().expect("finish");
        std::fs::rename(&tmp, &pkg).expect("rename");
        println!(
            "built {} ({mib} MiB of data) in {:.2} s",
            pkg.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let size = std::fs::metadata(&pkg).expect("package").len();
    let size_mib = size as f64 / (1 << 20) as f64;
    let pkg_s = pkg.to_string_lossy().into_owned();

    let openssl_secs = best_of(3, || {
        let t = Instant::now();
        let out = Command::new("openssl")
            .args(["dgst", "-sha256", &pkg_s])
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl dgst failed");
        t.elapsed().as_secs_f64()
    });
    let mut peak_kib = 0u64;
    let ours_secs = best_of(3, || {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_mydata"))
            .args([
                "package",
                "verify",
                "--json",
                "--stats",
                "--at",
                "2027-01-01",
                &pkg_s,
            ])
            .output()
            .expect("mydata");
        let secs = t.elapsed().as_secs_f64();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["ok"], true, "the bench package must verify: {v}");
        peak_kib = peak_kib.max(v["stats"]["peak_rss_kib"].as_u64().unwrap_or(0));
        secs
    });
    let (o_rate, m_rate) = (size_mib / openssl_secs, size_mib / ours_secs);
    let ratio = m_rate / o_rate * 100.0;
    let peak_mb = peak_kib as f64 * 1024.0 / 1e6;
    println!(
        "package verify throughput, {size_mib:.0} MiB package, best of 3 (wall clock, whole process)"
    );
    println!("  openssl dgst -sha256   {openssl_secs:7.3} s  {o_rate:8.1} MiB/s");
    println!(
        "  mydata package verify  {ours_secs:7.3} s  {m_rate:8.1} MiB/s  = {ratio:.0} % of openssl (target >= 80 %: {})",
        if ratio >= 80.0 { "met" } else { "MISSED" }
    );
    println!(
        "  mydata peak RSS        {peak_mb:7.1} MB (target < 64 MB: {})",
        if peak_mb < 64.0 { "met" } else { "MISSED" }
    );
}
