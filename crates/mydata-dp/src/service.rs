//! The framework-free DP-API service: parse, authenticate, deduplicate, answer.
//!
//! ```text
//! RawRequest ─parse─▶ heartbeat? ──▶ 200/500 (Dataset::healthy)
//!                      │
//!                      ▼ call
//!            introspect token (cached) ─ inactive / wrong aud / other transaction ─▶ 401
//!                      │
//!            job store (transaction_uid) ─ final answer known ─▶ same answer again
//!                      │                 ─ another call running ─▶ 429
//!                      ▼
//!            [userinfo] ─▶ Dataset::answer ─▶ Ready → package + sign → 200
//!                                             Package → 200, NoData → 204,
//!                                             Pending → 429 + Retry-After, Forbidden → 403,
//!                                             Failed → 500 (or chosen status)
//! ```

use std::collections::HashMap;
use std::io::Cursor;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mydata_protocol::date::UnixTime;
use mydata_protocol::package::dp::{BuildOptions, DpPackageBuilder, DpSigner};

use crate::answer::{DataFile, Final, HttpAnswer, Outcome};
use crate::clock::{Clock, SystemClock};
use crate::introspect::{
    Audience, BoxFuture, CacheConfig, CachingIntrospector, HttpIntrospector, Introspection,
    Introspector, ResourceSecret, UserInfo,
};
use crate::jobs::{Claim, JobInfo, JobStore, JobStoreConfig};
use crate::request::{DpRequest, Method, Params, Parsed, RawRequest, TransactionUid};

/// Everything a dataset knows about one verified call.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// This dataset's `resource_id`.
    pub resource_id: String,
    /// The call series.
    pub transaction_uid: TransactionUid,
    /// GET or POST.
    pub method: Method,
    /// The platform's introspection answer (active, for this dataset).
    pub caller: Introspection,
    /// The userinfo claims, when the dataset asked for them ([`Dataset::wants_userinfo`]).
    pub userinfo: Option<UserInfo>,
    /// Template-provided query, header, form and JSON values.
    pub params: Params,
    /// The series so far (first call time, number of calls).
    pub job: JobInfo,
    /// The time of this call (from the service's clock).
    pub now: UnixTime,
}

impl CallContext {
    /// The citizen's identifier (`uid` of the token).
    pub fn uid(&self) -> Option<&str> {
        self.caller
            .uid
            .as_deref()
            .or_else(|| self.userinfo.as_ref().and_then(|u| u.uid()))
    }

    /// The citizen's opaque identifier at the platform.
    pub fn sub(&self) -> Option<&str> {
        self.caller.sub.as_deref()
    }

    /// The SP receiving the data (for the DP's transfer records).
    pub fn client_id(&self) -> Option<&str> {
        self.caller.client_id.as_deref()
    }

    /// Seconds since the first call of the series.
    pub fn elapsed(&self) -> i64 {
        self.now.0.saturating_sub(self.job.first_seen.0)
    }
}

/// What an agency implements: the data of one dataset.
pub trait Dataset: Send + Sync {
    /// Answers a verified call. Called once per call until a final answer (anything but
    /// [`Outcome::Pending`]); that answer is then repeated for the rest of the series.
    fn answer<'a>(&'a self, call: &'a CallContext) -> BoxFuture<'a, Outcome>;

    /// Whether the DP can serve now (the heartbeat's answer). Default: yes.
    fn healthy(&self) -> bool {
        true
    }

    /// Whether to fetch the userinfo claims before [`Dataset::answer`]. Default: no.
    fn wants_userinfo(&self) -> bool {
        false
    }
}

impl<T: Dataset + ?Sized> Dataset for Arc<T> {
    fn answer<'a>(&'a self, call: &'a CallContext) -> BoxFuture<'a, Outcome> {
        (**self).answer(call)
    }
    fn healthy(&self) -> bool {
        (**self).healthy()
    }
    fn wants_userinfo(&self) -> bool {
        (**self).wants_userinfo()
    }
}

/// A dataset from a synchronous function (see [`from_fn`]).
pub struct FnDataset<F>(F);

impl<F> std::fmt::Debug for FnDataset<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnDataset")
    }
}

/// A dataset answering with a quick synchronous function.
pub fn from_fn<F>(f: F) -> FnDataset<F>
where
    F: Fn(&CallContext) -> Outcome + Send + Sync,
{
    FnDataset(f)
}

impl<F> Dataset for FnDataset<F>
where
    F: Fn(&CallContext) -> Outcome + Send + Sync,
{
    fn answer<'a>(&'a self, call: &'a CallContext) -> BoxFuture<'a, Outcome> {
        let out = (self.0)(call);
        Box::pin(async move { out })
    }
}

enum Slot {
    Running,
    Done(Outcome, UnixTime),
}

/// A slow dataset: a blocking function run on its own thread.
///
/// The first call of a series starts the function and answers "pending"; later calls answer
/// "pending" until it returns, then its answer. A panic becomes a failure. At most
/// `max_running` functions run at once; beyond that, calls answer "pending" without starting
/// (the platform comes back later).
pub struct Deferred<F> {
    work: Arc<F>,
    retry_after: u32,
    max_running: usize,
    keep_secs: i64,
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

impl<F> std::fmt::Debug for Deferred<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("retry_after", &self.retry_after)
            .field("max_running", &self.max_running)
            .finish_non_exhaustive()
    }
}

impl<F> Deferred<F>
where
    F: Fn(CallContext) -> Outcome + Send + Sync + 'static,
{
    /// Runs `work` in the background, answering `Retry-After: retry_after` meanwhile;
    /// at most 16 at once.
    pub fn new(work: F, retry_after: u32) -> Self {
        Deferred {
            work: Arc::new(work),
            retry_after,
            max_running: 16,
            keep_secs: 7_200,
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Sets how many functions may run at once (at least 1).
    pub fn max_running(mut self, n: usize) -> Self {
        self.max_running = n.max(1);
        self
    }

    fn poll(&self, call: &CallContext) -> Outcome {
        let pending = Outcome::Pending {
            retry_after: self.retry_after,
        };
        let key = format!("{}/{}", call.resource_id, call.transaction_uid);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let keep = self.keep_secs;
        slots.retain(|_, s| match s {
            Slot::Running => true,
            Slot::Done(_, at) => call.now.0.saturating_sub(at.0) < keep,
        });
        match slots.remove(&key) {
            Some(Slot::Done(out, _)) => return out,
            Some(Slot::Running) => {
                slots.insert(key, Slot::Running);
                return pending;
            }
            None => {}
        }
        let running = slots
            .values()
            .filter(|s| matches!(s, Slot::Running))
            .count();
        if running >= self.max_running {
            return pending;
        }
        slots.insert(key.clone(), Slot::Running);
        drop(slots);
        let work = self.work.clone();
        let store = self.slots.clone();
        let ctx = call.clone();
        let own_key = key.clone();
        let started = std::thread::Builder::new()
            .name("mydata-dp-job".into())
            .spawn(move || {
                let now = ctx.now;
                let out = std::panic::catch_unwind(AssertUnwindSafe(|| work(ctx)))
                    .unwrap_or_else(|_| Outcome::failed());
                let mut slots = store.lock().unwrap_or_else(|e| e.into_inner());
                slots.insert(key, Slot::Done(out, now));
            });
        if started.is_err() {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.remove(&own_key);
        }
        pending
    }
}

impl<F> Dataset for Deferred<F>
where
    F: Fn(CallContext) -> Outcome + Send + Sync + 'static,
{
    fn answer<'a>(&'a self, call: &'a CallContext) -> BoxFuture<'a, Outcome> {
        let out = self.poll(call);
        Box::pin(async move { out })
    }
}

/// Packages and signs data files into a DP package.
pub fn build_package(
    signer: &DpSigner,
    files: &[DataFile],
    options: BuildOptions,
) -> mydata_protocol::Result<Vec<u8>> {
    let mut b = DpPackageBuilder::new(Cursor::new(Vec::new()), signer, options);
    for f in files {
        b.add_file(&f.name, &mut f.bytes.as_slice())?;
    }
    Ok(b.finish()?.into_inner())
}

/// A configuration mistake found by [`DpServiceBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required part is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// Both an introspector and platform credentials were given.
    #[error("give either an introspector or platform credentials, not both")]
    Conflict,
    /// The TLS settings toward the platform do not make a client context.
    #[cfg(feature = "tls")]
    #[error("TLS toward the platform: {0}")]
    Tls(#[from] crate::tls::ConnectorError),
}

/// Builds a [`DpService`].
pub struct DpServiceBuilder {
    resource_id: String,
    scopes: Vec<String>,
    dataset: Option<Arc<dyn Dataset>>,
    introspector: Option<Arc<dyn Introspector>>,
    platform: Option<(String, ResourceSecret)>,
    signer: Option<Arc<DpSigner>>,
    clock: Arc<dyn Clock>,
    jobs: JobStoreConfig,
    cache: CacheConfig,
    build: BuildOptions,
    timeout: Duration,
    #[cfg(feature = "tls")]
    platform_tls: Option<crate::tls::TlsConfig>,
}

impl std::fmt::Debug for DpServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpServiceBuilder")
            .field("resource_id", &self.resource_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl DpServiceBuilder {
    /// This dataset's scopes (used when an introspection answer has no `aud`).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The data.
    pub fn dataset(mut self, dataset: impl Dataset + 'static) -> Self {
        self.dataset = Some(Arc::new(dataset));
        self
    }

    /// The data, shared.
    pub fn dataset_arc(mut self, dataset: Arc<dyn Dataset>) -> Self {
        self.dataset = Some(dataset);
        self
    }

    /// Checks tokens at the platform at `platform_url` over HTTP, authenticating with this
    /// dataset's `resource_id` and `secret`, through a [`CachingIntrospector`].
    pub fn platform(mut self, platform_url: &str, secret: ResourceSecret) -> Self {
        self.platform = Some((platform_url.to_owned(), secret));
        self
    }

    /// HTTPS settings of the introspection and userinfo calls (with
    /// [`DpServiceBuilder::platform`]): an extra or pinned CA, a client certificate. Without
    /// it, an `https://` platform is verified against the system roots.
    #[cfg(feature = "tls")]
    pub fn platform_tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.platform_tls = Some(tls);
        self
    }

    /// Checks tokens with this introspector, as is (no cache is added).
    pub fn introspector(mut self, introspector: Arc<dyn Introspector>) -> Self {
        self.introspector = Some(introspector);
        self
    }

    /// The key and certificate that sign packages (needed for [`Outcome::Ready`]).
    pub fn signer(mut self, signer: Arc<DpSigner>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Job store bounds.
    pub fn jobs(mut self, config: JobStoreConfig) -> Self {
        self.jobs = config;
        self
    }

    /// Introspection cache settings (with [`DpServiceBuilder::platform`]).
    pub fn cache(mut self, config: CacheConfig) -> Self {
        self.cache = config;
        self
    }

    /// Timeout of the introspection and userinfo calls (with [`DpServiceBuilder::platform`];
    /// default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Package options (signature encoding, compression).
    pub fn build_options(mut self, options: BuildOptions) -> Self {
        self.build = options;
        self
    }

    /// The service.
    pub fn build(self) -> Result<DpService, ConfigError> {
        let dataset = self.dataset.ok_or(ConfigError::Missing("dataset"))?;
        let introspector: Arc<dyn Introspector> = match (self.introspector, self.platform) {
            (Some(_), Some(_)) => return Err(ConfigError::Conflict),
            (Some(i), None) => i,
            (None, Some((url, secret))) => {
                let http = HttpIntrospector::new(&url, &self.resource_id, secret)
                    .with_timeout(self.timeout);
                #[cfg(feature = "tls")]
                let http = match &self.platform_tls {
                    Some(tls) => http.with_tls(tls)?,
                    None => http,
                };
                Arc::new(CachingIntrospector::new(
                    http,
                    self.clock.clone(),
                    self.cache,
                ))
            }
            (None, None) => return Err(ConfigError::Missing("introspector or platform")),
        };
        Ok(DpService {
            audience: Audience {
                resource_id: self.resource_id,
                scopes: self.scopes,
            },
            dataset,
            introspector,
            signer: self.signer,
            clock: self.clock,
            jobs: JobStore::new(self.jobs),
            build: self.build,
        })
    }
}

/// The DP-API of one dataset, independent of any HTTP framework.
pub struct DpService {
    audience: Audience,
    dataset: Arc<dyn Dataset>,
    introspector: Arc<dyn Introspector>,
    signer: Option<Arc<DpSigner>>,
    clock: Arc<dyn Clock>,
    jobs: JobStore,
    build: BuildOptions,
}

impl std::fmt::Debug for DpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpService")
            .field("audience", &self.audience)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl DpService {
    /// A builder for the dataset `resource_id`.
    pub fn builder(resource_id: &str) -> DpServiceBuilder {
        DpServiceBuilder {
            resource_id: resource_id.to_owned(),
            scopes: Vec::new(),
            dataset: None,
            introspector: None,
            platform: None,
            signer: None,
            clock: Arc::new(SystemClock),
            jobs: JobStoreConfig::default(),
            cache: CacheConfig::default(),
            build: BuildOptions::default(),
            timeout: Duration::from_secs(10),
            #[cfg(feature = "tls")]
            platform_tls: None,
        }
    }

    /// This dataset's `resource_id`.
    pub fn resource_id(&self) -> &str {
        &self.audience.resource_id
    }

    /// The job store (for metrics and tests).
    pub fn jobs(&self) -> &JobStore {
        &self.jobs
    }

    /// Answers one HTTP request.
    pub async fn handle(&self, raw: &RawRequest<'_>) -> HttpAnswer {
        match DpRequest::parse(raw) {
            Err(r) => r.into(),
            Ok(Parsed::Heartbeat) => HttpAnswer::heartbeat(self.dataset.healthy()),
            Ok(Parsed::Call(req)) => self.call(req).await,
        }
    }

    /// Answers one parsed call.
    pub async fn call(&self, req: DpRequest) -> HttpAnswer {
        let caller = match self.introspector.introspect(req.token.as_str()).await {
            Ok(i) => i,
            Err(e) => {
                log::warn!("{}: introspection failed: {e}", self.audience.resource_id);
                return HttpAnswer::failed(500);
            }
        };
        if !self.audience.accepts(&caller) {
            return HttpAnswer::unauthorized(true);
        }
        if caller
            .transaction_uid
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case(req.transaction_uid.as_str()))
        {
            // The token belongs to another call series.
            return HttpAnswer::unauthorized(true);
        }
        let owner = caller
            .sub
            .clone()
            .or_else(|| caller.uid.clone())
            .unwrap_or_default();
        let now = self.clock.now();
        let guard = match self.jobs.claim(req.transaction_uid.as_str(), &owner, now) {
            Claim::Done(f) => return HttpAnswer::from(&f),
            Claim::Busy { retry_after } => return HttpAnswer::retry_after(retry_after),
            Claim::Conflict => return HttpAnswer::forbidden(),
            Claim::Run(g) => g,
        };
        let userinfo = if self.dataset.wants_userinfo() {
            match self.introspector.userinfo(req.token.as_str()).await {
                Ok(Some(u)) => {
                    if u.sub().is_some() && caller.sub.is_some() && u.sub() != caller.sub.as_deref()
                    {
                        return HttpAnswer::unauthorized(true);
                    }
                    Some(u)
                }
                Ok(None) => return HttpAnswer::unauthorized(true),
                Err(e) => {
                    log::warn!("{}: userinfo failed: {e}", self.audience.resource_id);
                    return HttpAnswer::failed(500);
                }
            }
        } else {
            None
        };
        let ctx = CallContext {
            resource_id: self.audience.resource_id.clone(),
            transaction_uid: req.transaction_uid,
            method: req.method,
            caller,
            userinfo,
            params: req.params,
            job: guard.info(),
            now,
        };
        let outcome = self.dataset.answer(&ctx).await;
        let fin = match outcome {
            Outcome::Pending { retry_after } => {
                guard.pending();
                return HttpAnswer::retry_after(retry_after);
            }
            Outcome::Ready(files) if files.is_empty() => Final::NoData,
            Outcome::Ready(files) => self.sign(&files),
            Outcome::Package(p) => Final::Package(p),
            Outcome::NoData => Final::NoData,
            Outcome::Forbidden => Final::Forbidden,
            Outcome::Failed { status } => Final::Failed(status),
        };
        let answer = HttpAnswer::from(&fin);
        guard.finish(fin);
        answer
    }

    fn sign(&self, files: &[DataFile]) -> Final {
        let Some(signer) = &self.signer else {
            log::error!("{}: no signer configured", self.audience.resource_id);
            return Final::Failed(500);
        };
        match build_package(signer, files, self.build) {
            Ok(p) => Final::Package(Arc::from(p)),
            Err(e) => {
                log::error!("{}: packaging failed: {e}", self.audience.resource_id);
                Final::Failed(500)
            }
        }
    }
}
