//! DP package signing rate beside `openssl speed rsa2048` on the same machine.
//!
//! `cargo bench -p mydata-cli --bench sign_package` prints, in one run:
//! `openssl speed -seconds N rsa2048` sign/s (one process and `-multi 2`),
//! `DpSigner::sign` over a typical manifest (one thread and two threads), and
//! whole DP package builds (2 KiB JSON + 8 KiB CSV, signed, into a `Vec`) per
//! second, then the ratio of ours to openssl's single-thread rate against the
//! 80 % target. `MYDATA_BENCH_SECS` (default 3) sets the time per figure. It
//! asserts nothing about timing.
//!
//! RSA backend: the `openssl` crate, linked against the system libcrypto that
//! the `openssl` CLI itself uses, so the private-key operation is the same
//! code (same bignum assembly, same blinding) and the rate is openssl's by
//! construction; what we add per signature is SHA-256 of a few hundred bytes
//! and a fresh `EVP_MD_CTX`. The pure-Rust RustCrypto `rsa` crate
//! (`=0.10.0-rc.19`) is not measured here to keep it out of the workspace's
//! dependency graph; its constant-time `crypto-bigint` private-key operation is
//! known to run at a fraction of OpenSSL's rate, far below the 80 % target (a
//! separate build with the same key on the 2-core sandbox: ~770 sign/s against
//! `openssl speed`'s ~4050, about 19 %).

use std::io::Cursor;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mydata_protocol::date::UnixTime;
use mydata_protocol::package::dp::{
    self, BuildOptions, DpPackageBuilder, DpSigner, FileCompression, VerifyOptions,
};
use mydata_protocol::package::manifest::{self, DpManifestEntry};

const TARGET_PERCENT: f64 = 80.0;

/// `sign/s` of the `rsa 2048 bits` row of `openssl speed`, or `None` when the CLI is missing or the row is absent.
fn openssl_speed(secs: u64, multi: Option<u32>) -> Option<f64> {
    let mut cmd = Command::new("openssl");
    cmd.arg("speed").arg("-seconds").arg(secs.to_string());
    if let Some(n) = multi {
        cmd.arg("-multi").arg(n.to_string());
    }
    let out = cmd.arg("rsa2048").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 2048 bits 0.000247s 0.000017s   4051.3  59481.0"
    text.lines().rev().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        match cols.as_slice() {
            [
                "rsa",
                "2048",
                "bits",
                _sign,
                _verify,
                sign_per_s,
                _verify_per_s,
            ] => sign_per_s.parse().ok(),
            _ => None,
        }
    })
}

/// Operations per second of `op`, run on `threads` threads for `dur` after one warm-up call each.
fn rate<F: Fn() + Sync>(threads: usize, dur: Duration, op: F) -> f64 {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    op();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        op();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    total as f64 / started.elapsed().as_secs_f64()
}

/// Deterministic text of exactly `len` bytes built from `line(i)`.
fn text(len: usize, header: &str, line: impl Fn(usize) -> String) -> Vec<u8> {
    let mut s = String::from(header);
    let mut i = 0;
    while s.len() < len {
        s.push_str(&line(i));
        i += 1;
    }
    s.truncate(len);
    s.into_bytes()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // Built but not run by `cargo test --all-targets`.
        return;
    }
    let secs: u64 = std::env::var("MYDATA_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(3);
    let dur = Duration::from_secs(secs);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let key = std::fs::read(root.join("fixtures/pki/dp-moi.key")).expect("fixture key");
    let cert = std::fs::read(root.join("fixtures/pki/dp-moi.pem")).expect("fixture cert");
    let signer = DpSigner::from_pem(&key, &cert).expect("signer");

    // A typical manifest: a handful of files of one dataset.
    let entries: Vec<DpManifestEntry> = [
        "summary.json",
        "records.csv",
        "household-register.pdf",
        "attachments/photo-1.jpg",
    ]
    .iter()
    .enumerate()
    .map(|(i, name)| DpManifestEntry {
        filename: (*name).to_owned(),
        digest: format!(
            "{:064x}",
            0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)
        ),
    })
    .collect();
    let manifest_xml = manifest::write_dp(&entries);
    assert_eq!(
        signer.sign(manifest_xml.as_bytes()).expect("sign").len(),
        256
    );

    // A small package: 2 KiB JSON + 8 KiB CSV.
    let json = text(2048, "{\"records\":[", |i| {
        format!(
            "{{\"id\":{i},\"name\":\"王小明{i}\",\"date\":\"2026-01-{:02}\"}},",
            i % 28 + 1
        )
    });
    let csv = text(8192, "id,date,item,amount\n", |i| {
        format!(
            "{i},2026-01-{:02},item-{},{}\n",
            i % 28 + 1,
            i % 17,
            i * 37 % 1000
        )
    });
    let build = |compression: FileCompression| -> Vec<u8> {
        let opts = BuildOptions {
            compression,
            ..BuildOptions::default()
        };
        let mut b = DpPackageBuilder::new(Cursor::new(Vec::with_capacity(16 << 10)), &signer, opts);
        b.add_file("summary.json", &mut &json[..]).expect("add");
        b.add_file("records.csv", &mut &csv[..]).expect("add");
        b.finish().expect("finish").into_inner()
    };
    let sample = build(FileCompression::Auto);
    let at = UnixTime::parse("2027-01-01").expect("date");
    dp::verify(Cursor::new(&sample[..]), &VerifyOptions::at(at))
        .expect("the bench package must verify");

    println!(
        "DP package signing, RSA 2048 PKCS#1 v1.5 SHA-256 (fixtures/pki/dp-moi), {secs} s per figure, {cores} cores"
    );
    let cli = Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "openssl CLI not found".into());
    println!("  backend: openssl crate (system libcrypto); CLI: {cli}");

    // openssl first, alone, so nothing else competes for the cores.
    let o1 = openssl_speed(secs, None);
    let o2 = openssl_speed(secs, Some(2));
    let show = |r: Option<f64>| r.map_or("   n/a".to_owned(), |r| format!("{r:8.1}"));
    println!(
        "  openssl speed rsa2048            1 proc  {} sign/s",
        show(o1)
    );
    println!(
        "  openssl speed -multi 2 rsa2048   2 procs {} sign/s",
        show(o2)
    );

    let sign = || {
        std::hint::black_box(
            signer
                .sign(std::hint::black_box(manifest_xml.as_bytes()))
                .expect("sign"),
        );
    };
    let s1 = rate(1, dur, sign);
    let s2 = rate(2, dur, sign);
    println!(
        "  DpSigner::sign, {} B manifest     1 thr   {s1:8.1} sign/s",
        manifest_xml.len()
    );
    println!(
        "  DpSigner::sign, {} B manifest     2 thr   {s2:8.1} sign/s",
        manifest_xml.len()
    );

    let pack = || {
        std::hint::black_box(build(FileCompression::Auto));
    };
    let p1 = rate(1, dur, pack);
    let p2 = rate(2, dur, pack);
    let stored = rate(1, dur, || {
        std::hint::black_box(build(FileCompression::Store));
    });
    println!(
        "  package build+sign, 2+8 KiB -> {} B  1 thr   {p1:8.1} pkg/s",
        sample.len()
    );
    println!(
        "  package build+sign, 2+8 KiB -> {} B  2 thr   {p2:8.1} pkg/s",
        sample.len()
    );
    println!("  package build+sign, data stored      1 thr   {stored:8.1} pkg/s");
    println!(
        "  per package beyond the signature: {:.0} us (deflated data), {:.0} us (stored data): zip, deflate, hashing, buffers",
        1e6 / p1 - 1e6 / s1,
        1e6 / stored - 1e6 / s1
    );

    println!(
        "  pure-Rust `rsa` crate: not built here (kept out of the workspace); openssl backend chosen: \
         same libcrypto as `openssl speed`, so it reaches openssl's rate by construction, while the \
         pure-Rust private-key operation is known to be several times slower \
         (~5x for rsa 0.10.0-rc.19, measured separately)"
    );

    match o1 {
        Some(o1) => {
            let sign_pct = s1 / o1 * 100.0;
            let pkg_pct = p1 / o1 * 100.0;
            let verdict = |p: f64| if p >= TARGET_PERCENT { "PASS" } else { "BELOW" };
            println!(
                "ratio ours/openssl (single thread): sign {sign_pct:.1} % {}, package {pkg_pct:.1} % {} (target >= {TARGET_PERCENT:.0} %)",
                verdict(sign_pct),
                verdict(pkg_pct)
            );
        }
        None => println!("ratio ours/openssl: n/a (openssl speed did not run)"),
    }
}
