//! Packages as the platform builds them (DP packages signed with the sandbox DP keys, the SP
//! package of `package::sp::build`, the JWE of `jwe::encrypt_package`), opened by the SDK.

use std::io::Cursor;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mydata_protocol::codes::DatasetCode;
use mydata_protocol::date::UnixTime;
use mydata_protocol::ids::{ResourceId, SecretKey};
use mydata_protocol::jwe::{self, ContentIv, JweMode};
use mydata_protocol::package::dp::{
    BuildOptions, DpPackageBuilder, DpSigner, FileCompression, TrustAnchors,
};
use mydata_protocol::package::sp::{self, Dataset, Outcome, PackagingMode};
use mydata_sp::SpConfig;
use mydata_sp::package::{self, Expectations, PackageError, Verification};

const ROOT: &[u8] = include_bytes!("../../../fixtures/pki/sandbox-root-ca.pem");
const MOI_KEY: &[u8] = include_bytes!("../../../fixtures/pki/dp-moi.key");
const MOI_CERT: &[u8] = include_bytes!("../../../fixtures/pki/dp-moi.pem");
const UNTRUSTED_KEY: &[u8] = include_bytes!("../../../fixtures/pki/dp-untrusted.key");
const UNTRUSTED_CERT: &[u8] = include_bytes!("../../../fixtures/pki/dp-untrusted.pem");
/// 2027-01-01T00:00:00Z, inside every sandbox certificate's validity.
const AT: UnixTime = UnixTime(1_798_761_600);

fn sp_config(mode: JweMode) -> SpConfig {
    SpConfig::new(
        "http://127.0.0.1:8080",
        "CLI.SANDBOX001".parse().unwrap(),
        "SandboxSecret001".parse().unwrap(),
        "SandboxCbcIv0001".parse().unwrap(),
        "http://127.0.0.1:8090/return",
    )
    .with_mode(mode)
}

fn dp_package(key: &[u8], cert: &[u8], files: &[(&str, &[u8])]) -> Vec<u8> {
    dp_package_with(key, cert, files, BuildOptions::default())
}

fn dp_package_with(
    key: &[u8],
    cert: &[u8],
    files: &[(&str, &[u8])],
    opts: BuildOptions,
) -> Vec<u8> {
    let signer = DpSigner::from_pem(key, cert).unwrap();
    let mut b = DpPackageBuilder::new(Cursor::new(Vec::new()), &signer, opts);
    for (name, bytes) in files {
        b.add_file(name, &mut &bytes[..]).unwrap();
    }
    b.finish().unwrap().into_inner()
}

fn rid(s: &str) -> ResourceId {
    s.parse().unwrap()
}

/// Two datasets: the first delivered, the second delivered (or failed with `fail`).
fn sp_package(mode: PackagingMode, second: Option<DatasetCode>, dp2: &[u8]) -> Vec<u8> {
    let dp1 = dp_package(
        MOI_KEY,
        MOI_CERT,
        &[
            ("low_income.json", br#"{"status":"low_income"}"#),
            ("low_income.pdf", b"%PDF-1.4 fake"),
        ],
    );
    let mut r1 = &dp1[..];
    let mut r2 = dp2;
    let datasets = vec![
        Dataset {
            resource_id: rid("API.2RXHOGTXIC"),
            resource_name: "低收及中低收列冊資料".into(),
            outcome: Outcome::Package(&mut r1),
        },
        Dataset {
            resource_id: rid("API.5XQQ2IWD37"),
            resource_name: "身心障礙資格".into(),
            outcome: match second {
                None => Outcome::Package(&mut r2),
                Some(DatasetCode::NoData) => Outcome::NoData,
                Some(c) => Outcome::Failed(c),
            },
        },
    ];
    let (out, _) = sp::build(Cursor::new(Vec::new()), mode, datasets).unwrap();
    out.into_inner()
}

fn good_dp2() -> Vec<u8> {
    dp_package(
        MOI_KEY,
        MOI_CERT,
        &[("disability.json", b"{\"level\":\"mild\"}\n")],
    )
}

fn requested() -> Vec<ResourceId> {
    vec![rid("API.2RXHOGTXIC"), rid("API.5XQQ2IWD37")]
}

#[test]
fn cbc_and_gcm_packages_open_verify_and_expose_files() {
    let trust = TrustAnchors::from_pem(&[ROOT]).unwrap();
    let req = requested();
    for mode in [JweMode::Cbc, JweMode::Gcm] {
        let cfg = sp_config(mode).with_packaging_mode(PackagingMode::A);
        let key = SecretKey::generate().unwrap();
        let zip = sp_package(PackagingMode::A, None, &good_dp2());
        let compact = jwe::encrypt_package(
            &cfg.client_id,
            &zip,
            &key,
            mode,
            ContentIv::SpCbcIv(&cfg.cbc_iv),
        )
        .unwrap();
        let exp = Expectations::at(AT).trust(&trust).requested(&req);
        let d = cfg.open_package(&compact, &key, &exp).unwrap();
        assert!(d.verified());
        assert_eq!(d.datasets.len(), 2);
        let first = d.dataset(&rid("API.2RXHOGTXIC")).unwrap();
        assert_eq!(first.code, 200);
        assert_eq!(first.resource_name, "低收及中低收列冊資料");
        assert!(first.verification.is_verified());
        let names: Vec<&str> = first.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["low_income.json", "low_income.pdf"]);
        assert_eq!(first.files[0].bytes, br#"{"status":"low_income"}"#);
        assert_eq!(first.files[0].digest.len(), 64);
        match &first.verification {
            Verification::Verified(p) => {
                assert!(p.signer.chain_checked);
                assert!(
                    p.signer.subject.contains("Sandbox DP MOI"),
                    "{}",
                    p.signer.subject
                );
            }
            other => panic!("{other:?}"),
        }
        let second = &d.datasets[1];
        assert_eq!(second.files[0].bytes, b"{\"level\":\"mild\"}\n");
        // In mode CBC, the platform's content IV is the SP's cbc_iv and can be required.
        if mode == JweMode::Cbc {
            assert!(
                package::decrypt(&compact, &key, mode, &cfg.client_id, Some(&cfg.cbc_iv)).is_ok()
            );
        }
    }
}

#[test]
fn tampered_or_misdirected_jwe_is_a_typed_error() {
    let cfg = sp_config(JweMode::Cbc);
    let key = SecretKey::generate().unwrap();
    let zip = sp_package(PackagingMode::B, None, &good_dp2());
    let compact =
        jwe::encrypt_package(&cfg.client_id, &zip, &key, JweMode::Cbc, ContentIv::Random).unwrap();
    let exp = Expectations::at(AT);
    // Flip one ciphertext bit.
    let mut parts: Vec<String> = compact.split('.').map(str::to_owned).collect();
    let mut ct = URL_SAFE_NO_PAD.decode(&parts[3]).unwrap();
    ct[5] ^= 0x01;
    parts[3] = URL_SAFE_NO_PAD.encode(ct);
    let e = cfg.open_package(&parts.join("."), &key, &exp).unwrap_err();
    assert!(matches!(e, PackageError::Jwe(_)), "{e:?}");
    assert_eq!(e.kind(), "jwe");
    // Wrong key, wrong mode, wrong client_id, garbage.
    let other = SecretKey::generate().unwrap();
    assert!(matches!(
        cfg.open_package(&compact, &other, &exp),
        Err(PackageError::Jwe(_))
    ));
    assert!(matches!(
        sp_config(JweMode::Gcm).open_package(&compact, &key, &exp),
        Err(PackageError::Jwe(_))
    ));
    let mut foreign = sp_config(JweMode::Cbc);
    foreign.client_id = "CLI.SANDBOX002".parse().unwrap();
    let e = foreign.open_package(&compact, &key, &exp).unwrap_err();
    assert_eq!(e.kind(), "jwe_payload");
    assert!(matches!(
        cfg.open_package("not a jwe", &key, &exp),
        Err(PackageError::Jwe(_))
    ));
    // A random content IV is refused when the SP requires its cbc_iv.
    assert!(matches!(
        package::decrypt(
            &compact,
            &key,
            JweMode::Cbc,
            &cfg.client_id,
            Some(&cfg.cbc_iv)
        ),
        Err(PackageError::ContentIv)
    ));
}

/// A JWE sealed with the right key and the registered algorithms, valid in every other respect,
/// whose protected header carries `crit` (or `zip`) is refused at the JWE step with the JWE error
/// kind, in both modes (§12, D2; issue 20 item 6).
#[test]
fn jwe_with_crit_or_zip_header_is_refused() {
    use josekit::jwe::{A256GCMKW, A256KW, JweHeader, serialize_compact};
    let key = SecretKey::generate().unwrap();
    let kek = key.as_str().as_bytes();
    for mode in [JweMode::Cbc, JweMode::Gcm] {
        let cfg = sp_config(mode);
        let zip = sp_package(PackagingMode::B, None, &good_dp2());
        let payload = jwe::payload_json(&cfg.client_id, &zip);
        let seal = |extra: &[(&str, serde_json::Value)]| {
            let mut h = JweHeader::new();
            h.set_algorithm(mode.alg());
            h.set_content_encryption(mode.enc());
            for (k, v) in extra {
                h.set_claim(k, Some(v.clone())).unwrap();
            }
            match mode {
                JweMode::Cbc => serialize_compact(
                    payload.as_bytes(),
                    &h,
                    &A256KW.encrypter_from_bytes(kek).unwrap(),
                ),
                JweMode::Gcm => serialize_compact(
                    payload.as_bytes(),
                    &h,
                    &A256GCMKW.encrypter_from_bytes(kek).unwrap(),
                ),
            }
            .unwrap()
        };
        let exp = Expectations::at(AT);
        // Control: the same construction without either parameter opens.
        assert!(cfg.open_package(&seal(&[]), &key, &exp).unwrap().verified());
        let crit = [
            ("crit", serde_json::json!(["exp"])),
            ("exp", serde_json::json!(1_800_000_000)),
        ];
        for extra in [
            &crit[..],
            &crit[..1],
            &[("zip", serde_json::json!("DEF"))][..],
        ] {
            let compact = seal(extra);
            let e = cfg.open_package(&compact, &key, &exp).unwrap_err();
            assert!(
                matches!(e, PackageError::Jwe(_)),
                "{mode:?} {extra:?}: {e:?}"
            );
            assert_eq!(e.kind(), "jwe", "{mode:?} {extra:?}");
            let e = package::decrypt(&compact, &key, mode, &cfg.client_id, None).unwrap_err();
            assert_eq!(e.kind(), "jwe", "{mode:?} {extra:?}");
        }
    }
}

#[test]
fn untrusted_dp_is_reported_per_dataset() {
    let trust = TrustAnchors::from_pem(&[ROOT]).unwrap();
    let dp2 = dp_package(UNTRUSTED_KEY, UNTRUSTED_CERT, &[("d.json", b"{}")]);
    let zip = sp_package(PackagingMode::B, None, &dp2);
    let d = package::verify(&zip, &Expectations::at(AT).trust(&trust)).unwrap();
    assert!(!d.verified());
    assert!(d.datasets[0].verification.is_verified());
    assert_eq!(d.datasets[0].files.len(), 2);
    let e = d.datasets[1].verification.error().unwrap();
    assert_eq!(e.kind(), "untrusted_certificate");
    assert_eq!(e.resource_id(), Some("API.5XQQ2IWD37"));
    assert!(
        d.datasets[1].files.is_empty(),
        "no files from a failed package"
    );
    let e = d.into_verified().unwrap_err();
    assert!(matches!(e, PackageError::Dataset { .. }));
    // Without trust anchors the chain is not checked, and the same package verifies.
    let d = package::verify(&zip, &Expectations::at(AT)).unwrap();
    assert!(d.verified());
}

#[test]
fn tampered_inner_package_fails_its_dataset() {
    let opts = BuildOptions {
        compression: FileCompression::Store,
        ..BuildOptions::default()
    };
    let mut dp2 = dp_package_with(
        MOI_KEY,
        MOI_CERT,
        &[("disability.json", b"{\"level\":\"mild\"}\n")],
        opts,
    );
    // The file is stored: change its bytes in place.
    let p = dp2.windows(4).position(|w| w == b"mild").unwrap();
    dp2[p] = b'w';
    let zip = sp_package(PackagingMode::B, None, &dp2);
    let d = package::verify(&zip, &Expectations::at(AT)).unwrap();
    assert!(!d.verified());
    assert!(d.datasets[0].verification.ok());
    let e = d.datasets[1].verification.error().unwrap();
    // The zip CRC catches it before the digest does.
    assert!(matches!(e.kind(), "zip" | "digest_mismatch"), "{e:?}");
    assert!(d.datasets[1].files.is_empty());
}

#[test]
fn mode_a_withheld_and_mode_b_partial() {
    let req = requested();
    // Mode A with a failure: only the manifest, every filename empty.
    let zip = sp_package(PackagingMode::A, Some(DatasetCode::Timeout), &[]);
    let exp = Expectations::at(AT)
        .requested(&req)
        .packaging_mode(PackagingMode::A);
    let d = package::verify(&zip, &exp).unwrap();
    assert!(d.verified());
    assert_eq!(d.datasets[0].code, 200);
    assert!(matches!(
        d.datasets[0].verification,
        Verification::NotShipped
    ));
    assert!(d.datasets[0].files.is_empty());
    assert_eq!(d.datasets[1].dataset_code(), Some(DatasetCode::Timeout));
    assert!(d.datasets[1].is_failure());
    // The same manifest is inconsistent for mode B (code 200 without a file).
    let e = package::verify(&zip, &exp.packaging_mode(PackagingMode::B)).unwrap_err();
    assert!(
        matches!(
            e,
            PackageError::PackagingMode {
                mode: PackagingMode::B,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), "manifest");

    // Mode B with a failure ships the first dataset; that breaks the mode A rule.
    let zip = sp_package(PackagingMode::B, Some(DatasetCode::DpError), &[]);
    let exp_b = Expectations::at(AT)
        .requested(&req)
        .packaging_mode(PackagingMode::B);
    let d = package::verify(&zip, &exp_b).unwrap();
    assert_eq!(d.datasets[0].files.len(), 2);
    assert_eq!(d.datasets[1].code, 500);
    let e = package::verify(&zip, &exp_b.packaging_mode(PackagingMode::A)).unwrap_err();
    assert!(
        matches!(
            e,
            PackageError::PackagingMode {
                mode: PackagingMode::A,
                ..
            }
        ),
        "{e:?}"
    );

    // 204 is not a failure: in mode A the other dataset still ships.
    let zip = sp_package(PackagingMode::A, Some(DatasetCode::NoData), &[]);
    let d = package::verify(&zip, &exp).unwrap();
    assert_eq!(d.datasets[0].files.len(), 2);
    assert!(!d.datasets[1].is_failure());
}

#[test]
fn request_mismatch_and_broken_container() {
    let zip = sp_package(PackagingMode::B, None, &good_dp2());
    let reversed = vec![rid("API.5XQQ2IWD37"), rid("API.2RXHOGTXIC")];
    let e = package::verify(&zip, &Expectations::at(AT).requested(&reversed)).unwrap_err();
    assert!(matches!(e, PackageError::NotRequested { .. }), "{e:?}");
    let fewer = vec![rid("API.2RXHOGTXIC")];
    assert!(package::verify(&zip, &Expectations::at(AT).requested(&fewer)).is_err());
    let e = package::verify(b"PK\x03\x04 not really", &Expectations::at(AT)).unwrap_err();
    assert!(matches!(e, PackageError::Package(_)));
    assert_eq!(e.kind(), "zip");
    let e = package::verify(&zip[..zip.len() / 2], &Expectations::at(AT)).unwrap_err();
    assert!(matches!(e, PackageError::Package(_)));
}
