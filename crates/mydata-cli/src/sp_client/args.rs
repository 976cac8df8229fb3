//! The arguments of `mydata sp fetch` and `mydata sp verify`, and how they resolve to an SP configuration (flags, a saved registration, or a sandbox preset).

use super::*;

/// JWE algorithms of the registration.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum JweArg {
    /// A256KW + A256CBC-HS512 (and AES/CBC parameters).
    Cbc,
    /// A256GCMKW + A256GCM (and AES/GCM parameters).
    Gcm,
}

/// Packaging mode of the registration.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PackagingArg {
    /// One dataset fails, nothing is delivered.
    A,
    /// What succeeded is delivered, failures carry their codes.
    B,
}

/// The SP's registration and trust anchors, shared by `fetch` and `verify`.
#[derive(Args, Debug, Clone)]
pub struct Credentials {
    /// Preset everything for the public sandbox SP N (1: CLI.SANDBOX001, mode A, JWE CBC;
    /// 2: CLI.SANDBOX002, mode B, JWE GCM): credentials, API key, platform
    /// http://127.0.0.1:8080 and the sandbox root CA. Other flags override the presets.
    #[arg(long = "sandbox-sp", alias = "sandbox", value_name = "N", value_parser = clap::value_parser!(u8).range(1..=2))]
    pub sandbox: Option<u8>,
    /// The SP's client_id.
    #[arg(long)]
    pub client_id: Option<String>,
    /// The SP's client_secret (16 characters).
    #[arg(long)]
    pub client_secret: Option<String>,
    /// The SP's cbc_iv (16 characters).
    #[arg(long)]
    pub cbc_iv: Option<String>,
    /// The registered JWE / parameter encryption mode (default cbc).
    #[arg(long, value_enum, ignore_case = true)]
    pub jwe: Option<JweArg>,
    /// The registered packaging mode; when given, its rules are checked (packages.md §5.2).
    #[arg(long, value_enum, ignore_case = true)]
    pub packaging: Option<PackagingArg>,
    /// The SP-API key the platform sends (checked on SP-API bodies).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The platform's base URL (default http://127.0.0.1:8080 with --sandbox-sp).
    #[arg(long, alias = "platform-url")]
    pub platform: Option<String>,
    /// A trust anchor for the DP signing certificates (PEM; repeat). Required unless
    /// --sandbox-sp.
    #[arg(
        long = "trust",
        alias = "trust-anchors",
        alias = "trust-anchor",
        value_name = "PEM"
    )]
    pub trust: Vec<PathBuf>,
}

/// `mydata sp fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub(super) creds: Credentials,
    /// The permission_ticket (with --tx-id and --secret-key).
    #[arg(long)]
    pub(super) ticket: Option<String>,
    /// The SP's tx_id of the transaction (with --ticket).
    #[arg(long)]
    pub(super) tx_id: Option<String>,
    /// The secret_key as the SP-API call carried it, still encrypted (with --ticket).
    #[arg(long)]
    pub(super) secret_key: Option<String>,
    /// A saved SP-API body (JSON: tx_id, apiKey, permission_ticket, secret_key or
    /// unable_to_deliver).
    #[arg(long, value_name = "FILE")]
    pub(super) delivery: Option<PathBuf>,
    /// Play the SP for one transaction: listen on ADDR (e.g. 127.0.0.1:8090) for POST /sp-api
    /// and GET /return, print the redirect URL to open in a browser, then poll.
    #[arg(long, value_name = "ADDR")]
    pub(super) listen: Option<SocketAddr>,
    /// With --listen: the citizen's national ID (or business number).
    #[arg(long)]
    pub(super) pid: Option<String>,
    /// With --listen: a dataset to request (repeat, in request order).
    #[arg(
        long = "dataset",
        alias = "resource",
        alias = "datasets",
        value_name = "RESOURCE_ID"
    )]
    pub(super) resources: Vec<String>,
    /// With --listen: the registered return URL (default http://ADDR/return).
    #[arg(long)]
    pub(super) return_url: Option<String>,
    /// Where to unpack the datasets (created; must be empty unless --force).
    #[arg(long)]
    pub(super) out: PathBuf,
    /// Overwrite files already in --out.
    #[arg(long)]
    pub(super) force: bool,
    /// Give up after this many seconds in all.
    #[arg(long, value_name = "SECS", default_value_t = 5400)]
    pub(super) deadline: u64,
    /// Never wait longer than this many seconds between two polls, whatever Retry-After says.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub(super) max_wait: u64,
    /// Print one JSON object on standard output, nothing else.
    #[arg(long)]
    pub(super) json: bool,
}

/// `mydata sp verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub(super) creds: Credentials,
    /// The saved package: the MyData-API JWE body, or the decrypted SP package zip.
    #[arg(long, value_name = "FILE")]
    pub(super) package: PathBuf,
    /// For a JWE: the secret_key as the SP-API call carried it, still encrypted.
    #[arg(long)]
    pub(super) secret_key: Option<String>,
    /// For a JWE: the transaction's tx_id (reported only).
    #[arg(long)]
    pub(super) tx_id: Option<String>,
    /// For a JWE: the saved SP-API body that carried the secret_key.
    #[arg(long, value_name = "FILE")]
    pub(super) delivery: Option<PathBuf>,
    /// Unpack the datasets here (created; must be empty unless --force).
    #[arg(long)]
    pub(super) out: Option<PathBuf>,
    /// Overwrite files already in --out.
    #[arg(long)]
    pub(super) force: bool,
    /// Print one JSON object on standard output.
    #[arg(long)]
    pub(super) json: bool,
}

/// The credentials once presets and flags are merged.
pub(super) struct Resolved {
    /// The SP configuration, when client_id, client_secret and cbc_iv are all known.
    pub(super) sp: Option<SpConfig>,
    /// The client_id alone (enough to decrypt a JWE whose key is known).
    pub(super) client_id: Option<ClientId>,
    pub(super) jwe: JweMode,
    pub(super) packaging: Option<PackagingMode>,
    pub(super) trust: TrustAnchors,
}

impl Resolved {
    /// The SP configuration, or a usage error naming what is missing.
    pub(super) fn sp(&self) -> CliResult<&SpConfig> {
        self.sp.as_ref().ok_or_else(|| {
            "give --client-id, --client-secret and --cbc-iv (or --sandbox-sp 1|2)".into()
        })
    }

    pub(super) fn expectations<'a>(
        &'a self,
        requested: Option<&'a [ResourceId]>,
    ) -> Expectations<'a> {
        let mut e = Expectations::now().trust(&self.trust);
        if let Some(m) = self.packaging {
            e = e.packaging_mode(m);
        }
        if let Some(r) = requested {
            e = e.requested(r);
        }
        e
    }
}

/// One sandbox SP of fixtures/sandbox.json (embedded in the server crate).
pub(super) fn sandbox_sp(n: u8) -> CliResult<Value> {
    let all: Value = serde_json::from_str(mydata_server::platform::SANDBOX_SPS)?;
    all["sps"]
        .get(usize::from(n).saturating_sub(1))
        .cloned()
        .ok_or_else(|| format!("--sandbox-sp {n}: no such sandbox SP").into())
}

pub(super) fn resolve(c: &Credentials, return_url: &str) -> CliResult<Resolved> {
    let preset = c.sandbox.map(sandbox_sp).transpose()?;
    let from_preset = |key: &str| -> Option<String> {
        preset
            .as_ref()
            .and_then(|p| p[key].as_str())
            .map(str::to_owned)
    };
    let pick = |flag: &Option<String>, key: &str| flag.clone().or_else(|| from_preset(key));
    let client_id: Option<ClientId> = pick(&c.client_id, "client_id")
        .map(|s| s.parse().map_err(|e| format!("--client-id: {e}")))
        .transpose()?;
    let secret: Option<ClientSecret> = pick(&c.client_secret, "client_secret")
        .map(|s| s.parse().map_err(|e| format!("--client-secret: {e}")))
        .transpose()?;
    let iv: Option<CbcIv> = pick(&c.cbc_iv, "cbc_iv")
        .map(|s| s.parse().map_err(|e| format!("--cbc-iv: {e}")))
        .transpose()?;
    let jwe = match c.jwe {
        Some(JweArg::Cbc) => JweMode::Cbc,
        Some(JweArg::Gcm) => JweMode::Gcm,
        None if from_preset("jwe_mode").as_deref() == Some("gcm") => JweMode::Gcm,
        None => JweMode::Cbc,
    };
    let packaging = match c.packaging {
        Some(PackagingArg::A) => Some(PackagingMode::A),
        Some(PackagingArg::B) => Some(PackagingMode::B),
        None => match from_preset("packaging_mode").as_deref() {
            Some("A") => Some(PackagingMode::A),
            Some("B") => Some(PackagingMode::B),
            _ => None,
        },
    };
    let api_key = pick(&c.api_key, "api_key");
    let platform = c
        .platform
        .clone()
        .or_else(|| preset.as_ref().map(|_| SANDBOX_PLATFORM.to_owned()));
    let mut pems: Vec<Vec<u8>> = Vec::new();
    for p in &c.trust {
        pems.push(
            std::fs::read(p)
                .map_err(|e| crate::exit::runtime(format!("--trust {}: {e}", p.display())))?,
        );
    }
    if pems.is_empty() {
        if preset.is_some() {
            pems.push(mydata_server::platform::SANDBOX_ROOT_CA.to_vec());
        } else {
            return Err(
                "give at least one --trust PEM (or --sandbox-sp 1|2): DP packages are \
                        verified against trust anchors"
                    .into(),
            );
        }
    }
    let trust = TrustAnchors::from_pem(&pems.iter().map(Vec::as_slice).collect::<Vec<_>>())
        .map_err(|e| format!("--trust: {e}"))?;
    let sp = match (&client_id, secret, iv) {
        (Some(id), Some(s), Some(v)) => {
            let mut sp = SpConfig::new(
                platform.clone().unwrap_or_default(),
                id.clone(),
                s,
                v,
                return_url,
            )
            .with_mode(jwe);
            if let Some(k) = api_key {
                sp = sp.with_api_key(k);
            }
            if let Some(m) = packaging {
                sp = sp.with_packaging_mode(m);
            }
            Some(sp)
        }
        _ => None,
    };
    Ok(Resolved {
        sp,
        client_id,
        jwe,
        packaging,
        trust,
    })
}
