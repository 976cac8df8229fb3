//! DP and SP packages against the sandbox PKI in fixtures/pki: every verification rule and hostile input.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;

use mydata_protocol::Error;
use mydata_protocol::codes::DatasetCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::package::Limits;
use mydata_protocol::package::dp::{
    self, BuildOptions, DpPackageBuilder, DpSigner, FileCompression, SignatureEncoding,
    TrustAnchors, VerifyOptions,
};
use mydata_protocol::package::manifest;
use mydata_protocol::package::sp::{self, Dataset, Outcome, PackagingMode};
use zip::write::SimpleFileOptions;

fn pki(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pki")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn signer(name: &str) -> DpSigner {
    DpSigner::from_pem(&pki(&format!("{name}.key")), &pki(&format!("{name}.pem"))).unwrap()
}

/// 2027-01-01, inside every sandbox certificate's validity except dp-expired.
const AT: UnixTime = UnixTime(1_798_761_600);

fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "household.json",
            r#"{"name":"王大明","id":"A120345672"}"#.as_bytes().to_vec(),
        ),
        ("household.pdf", b"%PDF-1.7 not really".to_vec()),
        ("records/land.csv", b"a,b\n1,2\n".to_vec()),
    ]
}

fn build_with(signer: &DpSigner, opts: BuildOptions) -> Vec<u8> {
    let mut b = DpPackageBuilder::new(Cursor::new(Vec::new()), signer, opts);
    for (n, d) in files() {
        b.add_file(n, &mut d.as_slice()).unwrap();
    }
    b.finish().unwrap().into_inner()
}

fn build() -> Vec<u8> {
    build_with(&signer("dp-moi"), BuildOptions::default())
}

fn verify(pkg: &[u8]) -> Result<dp::VerifiedPackage, Error> {
    dp::verify(Cursor::new(pkg), &VerifyOptions::at(AT))
}

/// Verifies under other limits.
fn verify_limited(pkg: &[u8], limits: Limits) -> Result<dp::VerifiedPackage, Error> {
    dp::verify(
        Cursor::new(pkg),
        &VerifyOptions {
            at: AT,
            trust: None,
            limits,
        },
    )
}

/// Entries of a zip as (name, bytes), in order.
fn entries(pkg: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(Cursor::new(pkg)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            (f.name().unwrap().into_owned(), v)
        })
        .collect()
}

/// A zip from (name, bytes, deflate?) entries.
fn zip_of(items: &[(String, Vec<u8>, bool)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (n, d, deflate) in items {
        let m = if *deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        w.start_file(
            n.as_str(),
            SimpleFileOptions::default().compression_method(m),
        )
        .unwrap();
        w.write_all(d).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Rebuilds a package through `f`, which may change entries.
fn rezip(pkg: &[u8], f: impl FnOnce(&mut Vec<(String, Vec<u8>, bool)>)) -> Vec<u8> {
    let mut items: Vec<_> = entries(pkg)
        .into_iter()
        .map(|(n, d)| (n, d, true))
        .collect();
    f(&mut items);
    zip_of(&items)
}

/// A package with a hand-made manifest, correctly signed by dp-moi.
fn signed_with_manifest(manifest: &str, data: &[(&str, &[u8])]) -> Vec<u8> {
    let s = signer("dp-moi");
    let mut items: Vec<(String, Vec<u8>, bool)> = data
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_vec(), true))
        .collect();
    items.push((
        "META-INFO/manifest.xml".into(),
        manifest.as_bytes().to_vec(),
        true,
    ));
    items.push((
        "META-INFO/manifest.sha256withrsa".into(),
        s.sign(manifest.as_bytes()).unwrap(),
        true,
    ));
    items.push((
        "META-INFO/certificate.cer".into(),
        s.certificate_pem().to_vec(),
        true,
    ));
    zip_of(&items)
}

#[test]
fn builds_and_verifies() {
    let pkg = build();
    let v = verify(&pkg).unwrap();
    let names: Vec<_> = v.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["household.json", "household.pdf", "records/land.csv"]
    );
    assert_eq!(v.signature_encoding, SignatureEncoding::Binary);
    assert!(
        v.signer.subject.contains("Sandbox DP MOI"),
        "{}",
        v.signer.subject
    );
    assert!(!v.signer.chain_checked);
    // The digests are plain SHA-256 of the file bytes.
    use sha2::Digest;
    assert_eq!(
        v.files[0].digest,
        hex::encode(sha2::Sha256::digest(&files()[0].1))
    );
    // Layout: data files, then the three metadata entries.
    let got: Vec<String> = entries(&pkg).into_iter().map(|e| e.0).collect();
    assert_eq!(
        &got[3..],
        [
            "META-INFO/manifest.xml",
            "META-INFO/manifest.sha256withrsa",
            "META-INFO/certificate.cer"
        ]
    );
}

#[test]
fn legacy_forms_verify() {
    let s = signer("dp-nhi");
    let opts = BuildOptions {
        signature: SignatureEncoding::Base64,
        backslash_meta: true,
        compression: FileCompression::Store,
    };
    let pkg = build_with(&s, opts);
    assert!(
        entries(&pkg)
            .iter()
            .any(|e| e.0 == "META-INFO\\manifest.xml")
    );
    let v = verify(&pkg).unwrap();
    assert_eq!(v.signature_encoding, SignatureEncoding::Base64);
    assert!(v.backslash_meta);
}

#[test]
fn certificate_time_and_chain() {
    let pkg = build();
    // Before the certificate's start (2025-06-01) and after its end (2036-06-01).
    for t in [1_748_736_000, 2_096_409_600] {
        let e = dp::verify(Cursor::new(&pkg), &VerifyOptions::at(UnixTime(t))).unwrap_err();
        assert!(matches!(e, Error::CertificateExpired { .. }), "{e}");
    }
    let roots = TrustAnchors::from_pem(&[&pki("sandbox-root-ca.pem")]).unwrap();
    let opts = VerifyOptions {
        at: AT,
        trust: Some(&roots),
        limits: Limits::default(),
    };
    assert!(
        dp::verify(Cursor::new(&pkg), &opts)
            .unwrap()
            .signer
            .chain_checked
    );

    let untrusted = build_with(&signer("dp-untrusted"), BuildOptions::default());
    assert!(verify(&untrusted).is_ok(), "valid without anchors");
    let e = dp::verify(Cursor::new(&untrusted), &opts).unwrap_err();
    assert!(matches!(e, Error::UntrustedCertificate(_)), "{e}");

    let expired = build_with(&signer("dp-expired"), BuildOptions::default());
    let e = verify(&expired).unwrap_err();
    assert!(matches!(e, Error::CertificateExpired { .. }), "{e}");
}

#[test]
fn verify_content_judges_everything_but_the_certificate_time_and_chain() {
    let roots = TrustAnchors::from_pem(&[&pki("sandbox-root-ca.pem")]).unwrap();
    let opts = VerifyOptions {
        at: AT,
        trust: Some(&roots),
        limits: Limits::default(),
    };
    // An expired and an untrusted certificate: refused by `verify`, their content is sound.
    for name in ["dp-expired", "dp-untrusted"] {
        let pkg = build_with(&signer(name), BuildOptions::default());
        assert!(dp::verify(Cursor::new(&pkg), &opts).is_err(), "{name}");
        let v = dp::verify_content(Cursor::new(&pkg), &opts).unwrap();
        assert_eq!(v.files.len(), 3, "{name}");
        assert!(!v.signer.chain_checked, "{name}");
    }
    // The signature and the digests are still checked.
    let other_cert = rezip(&build(), |items| {
        let cert = items
            .iter_mut()
            .find(|i| i.0 == "META-INFO/certificate.cer")
            .expect("certificate entry");
        cert.1 = pki("dp-nhi.pem");
    });
    let e = dp::verify_content(Cursor::new(&other_cert), &opts).unwrap_err();
    assert!(matches!(e, Error::BadSignature), "{e}");
    let tampered = rezip(&build(), |items| items[1].1[0] ^= 1);
    let e = dp::verify_content(Cursor::new(&tampered), &opts).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch(_)), "{e}");
}

#[test]
fn tampered_file_is_named() {
    let pkg = rezip(&build(), |items| items[1].1[0] ^= 1);
    let e = verify(&pkg).unwrap_err();
    assert!(
        matches!(e, Error::DigestMismatch(ref f) if f == "household.pdf"),
        "{e}"
    );
    assert_eq!(e.file(), Some("household.pdf"));
}

#[test]
fn extra_missing_and_duplicate_files() {
    let extra = rezip(&build(), |items| {
        items.insert(0, ("zzz.txt".into(), b"x".to_vec(), true))
    });
    assert!(matches!(verify(&extra).unwrap_err(), Error::ExtraFile(ref f) if f == "zzz.txt"));

    let missing = rezip(&build(), |items| {
        items.remove(2);
    });
    assert!(
        matches!(verify(&missing).unwrap_err(), Error::MissingFile(ref f) if f == "records/land.csv")
    );

    let d = "0".repeat(64);
    let dup = signed_with_manifest(
        &format!(
            "<files><file><filename>a</filename><digest>{d}</digest></file><file><filename>a</filename><digest>{d}</digest></file></files>"
        ),
        &[("a", b"")],
    );
    assert!(matches!(verify(&dup).unwrap_err(), Error::DuplicateEntry(ref f) if f == "a"));

    let no_meta = rezip(&build(), |items| {
        items.retain(|i| i.0 != "META-INFO/certificate.cer");
    });
    assert!(matches!(
        verify(&no_meta).unwrap_err(),
        Error::MissingMetadata("META-INFO/certificate.cer")
    ));
}

#[test]
fn bad_signatures() {
    let pkg = rezip(&build(), |items| {
        let sig = items
            .iter_mut()
            .find(|i| i.0.ends_with("sha256withrsa"))
            .unwrap();
        sig.1[10] ^= 0x40;
    });
    assert!(matches!(verify(&pkg).unwrap_err(), Error::BadSignature));
    // Manifest changed after signing.
    let pkg = rezip(&build(), |items| {
        let m = items
            .iter_mut()
            .find(|i| i.0.ends_with("manifest.xml"))
            .unwrap();
        m.1.extend_from_slice(b"<!-- -->");
    });
    assert!(matches!(verify(&pkg).unwrap_err(), Error::BadSignature));
    // Certificate of another DP.
    let pkg = rezip(&build(), |items| {
        let c = items
            .iter_mut()
            .find(|i| i.0.ends_with("certificate.cer"))
            .unwrap();
        c.1 = pki("dp-nhi.pem");
    });
    assert!(matches!(verify(&pkg).unwrap_err(), Error::BadSignature));
    // Garbage certificate.
    let pkg = rezip(&build(), |items| {
        let c = items
            .iter_mut()
            .find(|i| i.0.ends_with("certificate.cer"))
            .unwrap();
        c.1 = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
    });
    assert!(matches!(verify(&pkg).unwrap_err(), Error::Certificate(_)));
}

#[test]
fn signed_dtd_and_entities_are_refused() {
    let dtd = "<?xml version=\"1.0\"?><!DOCTYPE files [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><files><file><filename>&e;</filename><digest>0</digest></file></files>";
    assert!(matches!(
        verify(&signed_with_manifest(dtd, &[])).unwrap_err(),
        Error::XmlDtd
    ));
    let ent = "<files><file><filename>&e;</filename><digest>0</digest></file></files>";
    assert!(matches!(
        verify(&signed_with_manifest(ent, &[])).unwrap_err(),
        Error::XmlEntity(_)
    ));
}

#[test]
fn hostile_zips() {
    let meta = |items: &mut Vec<(String, Vec<u8>, bool)>, name: &str| {
        items.insert(0, (name.to_owned(), b"x".to_vec(), true))
    };
    for bad in [
        "../evil.json",
        "/etc/passwd",
        "C:/x",
        "a/../../b",
        "dir\\x.json",
    ] {
        let pkg = rezip(&build(), |items| meta(items, bad));
        let e = verify(&pkg).unwrap_err();
        assert!(matches!(e, Error::UnsafeEntryName { .. }), "{bad}: {e}");
        assert_eq!(e.file(), Some(bad));
    }
    let e = verify_limited(
        &build(),
        Limits {
            max_entries: 3,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::TooManyEntries { limit: 3 }));
    let e = verify_limited(
        &build(),
        Limits {
            max_total_bytes: 20,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    // 16 MiB of zeros deflates more than 1024:1.
    let bomb = rezip(&build(), |items| {
        items.insert(0, ("zeros.json".into(), vec![0u8; 16 << 20], true))
    });
    let e = verify(&bomb).unwrap_err();
    assert!(
        matches!(e, Error::ZipBomb { ref name, .. } if name == "zeros.json"),
        "{e}"
    );
    // Not a zip at all, and a truncated one.
    assert!(matches!(verify(b"not a zip").unwrap_err(), Error::Zip(_)));
    let pkg = build();
    assert!(verify(&pkg[..pkg.len() / 2]).is_err());
    // A small metadata limit.
    let e = verify_limited(
        &build(),
        Limits {
            max_certificate_bytes: 10,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}

#[test]
fn builder_refuses_bad_names_and_keys() {
    let s = signer("dp-moi");
    let mut b = DpPackageBuilder::new(Cursor::new(Vec::new()), &s, BuildOptions::default());
    for bad in ["../x", "META-INFO/manifest.xml", "dir/", ""] {
        assert!(
            matches!(
                b.add_file(bad, &mut &b"x"[..]),
                Err(Error::BadFileName { .. })
            ),
            "{bad}"
        );
    }
    b.add_file("a.json", &mut &b"{}"[..]).unwrap();
    assert!(matches!(
        b.add_file("a.json", &mut &b"{}"[..]),
        Err(Error::BadFileName { .. })
    ));
    // Key of one DP with the certificate of another.
    let e = DpSigner::from_pem(&pki("dp-moi.key"), &pki("dp-nhi.pem")).unwrap_err();
    assert!(matches!(e, Error::Signing(_)));
    // A 1024-bit key is refused.
    let small = openssl::rsa::Rsa::generate(1024).unwrap();
    let pem = openssl::pkey::PKey::from_rsa(small)
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    assert!(matches!(
        DpSigner::from_pem(&pem, &pki("dp-moi.pem")),
        Err(Error::Signing(_))
    ));
}

#[test]
fn streams_a_large_file() {
    // 48 MiB of pseudo-random (incompressible) bytes, stored: verified chunk by chunk.
    let mut data = vec![0u8; 48 << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let s = signer("dp-moi");
    let mut b = DpPackageBuilder::new(Cursor::new(Vec::new()), &s, BuildOptions::default());
    b.add_file("big.pdf", &mut data.as_slice()).unwrap();
    let pkg = b.finish().unwrap().into_inner();
    let v = verify(&pkg).unwrap();
    assert_eq!(v.data_bytes, 48 << 20);
    assert_eq!(v.files[0].size, 48 << 20);
}

fn sp_pkg(mode: PackagingMode, fail: bool) -> (Vec<u8>, sp::BuildSummary) {
    let a = build();
    let b = build_with(&signer("dp-nhi"), BuildOptions::default());
    let (mut ra, mut rb) = (a.as_slice(), b.as_slice());
    let ds = vec![
        Dataset {
            resource_id: "API.HOUSEHOLD1".parse().unwrap(),
            resource_name: "個人戶籍資料".into(),
            outcome: Outcome::Package(&mut ra),
        },
        Dataset {
            resource_id: "API.NODATA0001".parse().unwrap(),
            resource_name: "無資料".into(),
            outcome: Outcome::NoData,
        },
        Dataset {
            resource_id: "API.NHIDATA001".parse().unwrap(),
            resource_name: "健保".into(),
            outcome: if fail {
                Outcome::Failed(DatasetCode::DpSystemError)
            } else {
                Outcome::Package(&mut rb)
            },
        },
    ];
    let (w, s) = sp::build(Cursor::new(Vec::new()), mode, ds).unwrap();
    (w.into_inner(), s)
}

#[test]
fn sp_package_mode_a_and_b() {
    // All good: both packages ship, byte for byte, stored.
    let (pkg, sum) = sp_pkg(PackagingMode::A, false);
    assert!(!sum.withheld && sum.unable_to_deliver().is_empty());
    let inner = entries(&pkg);
    assert_eq!(inner[0].0, "API.HOUSEHOLD1.zip");
    assert_eq!(inner[0].1, build(), "a DP package ships byte for byte");
    let reports = sp::verify(Cursor::new(&pkg), &VerifyOptions::at(AT)).unwrap();
    assert_eq!(reports.len(), 3);
    assert!(reports.iter().all(|r| r.ok()));
    assert_eq!(reports[1].entry.code, 204);
    assert!(reports[1].package.is_none());

    // Mode A with a failure: nothing ships; the manifest keeps every code.
    let (pkg, sum) = sp_pkg(PackagingMode::A, true);
    assert!(sum.withheld);
    assert_eq!(sum.unable_to_deliver(), ["API.NHIDATA001"]);
    assert_eq!(entries(&pkg).len(), 1);
    let m = manifest::parse_sp(&entries(&pkg)[0].1).unwrap();
    let codes: Vec<u16> = m.iter().map(|l| l.code).collect();
    assert_eq!(codes, [200, 204, 504]);
    assert!(m.iter().all(|l| l.filename.is_empty()));

    // Mode B with a failure: the good one ships.
    let (pkg, sum) = sp_pkg(PackagingMode::B, true);
    assert!(!sum.withheld && sum.unable_to_deliver().is_empty());
    let reports = sp::verify(Cursor::new(&pkg), &VerifyOptions::at(AT)).unwrap();
    assert_eq!(reports[0].entry.filename, "API.HOUSEHOLD1.zip");
    assert!(reports[0].ok() && reports[0].package.is_some());
    assert_eq!(reports[2].entry.code, 504);
}

#[test]
fn sp_package_names_a_tampered_dataset() {
    let (pkg, _) = sp_pkg(PackagingMode::B, false);
    let tampered = rezip(&pkg, |items| {
        let inner = &mut items[1].1;
        let rebuilt = rezip(inner, |e| e[0].1[0] ^= 1);
        *inner = rebuilt;
        for i in items.iter_mut() {
            i.2 = false;
        }
    });
    let reports = sp::verify(Cursor::new(&tampered), &VerifyOptions::at(AT)).unwrap();
    assert!(reports[0].ok());
    let bad = reports[2].package.as_ref().unwrap().as_ref().unwrap_err();
    assert_eq!(bad.file(), Some("household.json"));
    assert!(bad.to_string().contains("API.NHIDATA001"), "{bad}");

    let extra = rezip(&pkg, |items| {
        items.push(("API.UNLISTED01.zip".into(), b"x".to_vec(), false))
    });
    assert!(matches!(
        sp::verify(Cursor::new(&extra), &VerifyOptions::at(AT)).unwrap_err(),
        Error::ExtraFile(_)
    ));
    let dup = sp::build(
        Cursor::new(Vec::new()),
        PackagingMode::B,
        vec![
            Dataset {
                resource_id: "API.HOUSEHOLD1".parse().unwrap(),
                resource_name: String::new(),
                outcome: Outcome::NoData,
            },
            Dataset {
                resource_id: "API.HOUSEHOLD1".parse().unwrap(),
                resource_name: String::new(),
                outcome: Outcome::NoData,
            },
        ],
    );
    assert!(matches!(dup, Err(Error::DuplicateResource(_))));
}

#[test]
fn empty_manifest_and_lenient_base64_signature() {
    let empty = signed_with_manifest("<files></files>", &[]);
    assert!(matches!(verify(&empty).unwrap_err(), Error::Manifest(_)));
    // A Base64 signature without its padding still verifies (spec D8).
    let s = signer("dp-moi");
    let pkg = build_with(
        &s,
        BuildOptions {
            signature: SignatureEncoding::Base64,
            ..BuildOptions::default()
        },
    );
    let unpadded = rezip(&pkg, |items| {
        let sig = items
            .iter_mut()
            .find(|i| i.0.ends_with("sha256withrsa"))
            .unwrap();
        while sig.1.last() == Some(&b'=') {
            sig.1.pop();
        }
        // And wrapped at 64 columns, as PEM-minded tools write it.
        let wrapped: Vec<u8> = sig
            .1
            .chunks(64)
            .flat_map(|c| c.iter().copied().chain(*b"\r\n"))
            .collect();
        sig.1 = wrapped;
    });
    assert_eq!(
        verify(&unpadded).unwrap().signature_encoding,
        SignatureEncoding::Base64
    );
}

#[test]
fn certificate_entry_may_carry_its_chain() {
    // certificate.cer = DP certificate + the sandbox root: the chain check uses both.
    let pkg = rezip(&build(), |items| {
        let c = items
            .iter_mut()
            .find(|i| i.0.ends_with("certificate.cer"))
            .unwrap();
        c.1.extend_from_slice(&pki("sandbox-root-ca.pem"));
    });
    assert!(verify(&pkg).is_ok());
    let roots = TrustAnchors::from_pem(&[&pki("sandbox-root-ca.pem")]).unwrap();
    let opts = VerifyOptions {
        at: AT,
        trust: Some(&roots),
        limits: Limits::default(),
    };
    assert!(dp::verify(Cursor::new(&pkg), &opts).is_ok());
}

#[test]
fn sp_manifest_lines_must_be_consistent() {
    let (pkg, _) = sp_pkg(PackagingMode::B, false);
    let bad = rezip(&pkg, |items| {
        let m = items
            .iter_mut()
            .find(|i| i.0 == "META-INFO/manifest.xml")
            .unwrap();
        let text = String::from_utf8(m.1.clone()).unwrap().replacen(
            "<code>200</code>",
            "<code>504</code>",
            1,
        );
        m.1 = text.into_bytes();
    });
    assert!(matches!(
        sp::verify(Cursor::new(&bad), &VerifyOptions::at(AT)).unwrap_err(),
        Error::Manifest(_)
    ));
}
