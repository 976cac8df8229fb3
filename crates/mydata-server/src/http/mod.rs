//! The actix-web server. Handlers stay thin: they parse, call [`Platform`], and map the result.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::error::{ServerError, ServerResult};
use crate::platform::Platform;

pub mod citizen;
pub mod connect;
pub mod errors;
pub mod mydata_api;
pub mod ops;
pub mod sandbox;
pub mod tls;

/// Shared state handed to handlers.
pub type State = web::Data<Platform>;

/// The source IP of a request (spec D26): the TCP peer (an IPv4 client of a dual-stack listener
/// as its IPv4 address), or behind a trusted proxy the right-most untrusted address in
/// `X-Forwarded-For`, or in RFC 7239 `Forwarded` when that is absent
/// ([`mydata_protocol::flow::source_ip`]). `None` without a peer address.
pub fn source_ip(p: &Platform, req: &actix_web::HttpRequest) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr()?.ip();
    if p.trusted_proxies.is_empty() {
        return Some(peer.to_canonical());
    }
    let header = |name: &str| -> Vec<&str> {
        req.headers()
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    // `X-Forwarded-For`, or when a proxy sends none, RFC 7239 `Forwarded` (D26).
    let mut forwarded = header("x-forwarded-for");
    if forwarded.is_empty() {
        forwarded = mydata_protocol::flow::forwarded_for(&header("forwarded"));
    }
    Some(mydata_protocol::flow::source_ip(
        peer,
        &forwarded,
        &p.trusted_proxies,
    ))
}

/// The MyData-API caller of a request: its [`source_ip`] and the client certificate its
/// connection presented, if any (spec D50).
pub fn caller(p: &Platform, req: &actix_web::HttpRequest) -> Option<crate::engine::Caller> {
    Some(crate::engine::Caller {
        ip: source_ip(p, req)?,
        cert_sha256: req.conn_data::<tls::PeerCert>().map(|c| c.sha256.clone()),
    })
}

/// Mounts every route of the platform.
pub fn configure(cfg: &mut web::ServiceConfig) {
    connect::configure(cfg);
    mydata_api::configure(cfg);
    citizen::configure(cfg);
}

/// Builds the HTTP server on an already bound listener.
pub fn server(platform: Arc<Platform>, listener: TcpListener) -> ServerResult<Server> {
    server_with(platform, listener, None)
}

/// [`server`], plus the sandbox clock hook (`POST /sandbox/clock`, [`sandbox`]) when
/// `sandbox_clock` is given: it must be the platform's own clock, and the platform must be in
/// sandbox mode with `sandbox_clock` set (refused otherwise).
pub fn server_with(
    platform: Arc<Platform>,
    listener: TcpListener,
    sandbox_clock: Option<crate::clock::OffsetClock>,
) -> ServerResult<Server> {
    if sandbox_clock.is_some() && !(platform.config.sandbox && platform.config.sandbox_clock) {
        return Err(ServerError::Config(
            "the sandbox clock needs sandbox and sandbox_clock".into(),
        ));
    }
    // Outside the sandbox, a DP package is trusted only when it chains to a configured anchor
    // (spec D35): without any, every package would fail, so the server does not start.
    if !platform.dp_trust.is_configured() {
        return Err(ServerError::Config(
            "dp_trust_anchors: required outside the sandbox (PEM files or directories of the CA \
             certificates that DP signing certificates chain to; MYDATA_DP_TRUST_ANCHORS)"
                .into(),
        ));
    }
    // Inbound connections are capped below the open-file limit, so that outgoing calls, the
    // database and package files always find descriptors (spec D48); beyond the cap,
    // connections wait in the listen backlog. actix-web counts per worker.
    let cap = crate::limits::connection_cap(&platform.config);
    let workers = cap.workers;
    let citizen = web::Data::new(crate::citizen::Citizen::from_config(&platform.config)?);
    // `/healthz`, `/readyz` and `/metrics` on the main listener, or on `admin_listen` only
    // (spec `operations.md`): one server with both listeners; which one a request came in on
    // decides what it may reach.
    let admin = match platform.config.admin_listen {
        Some(a) => {
            let l = TcpListener::bind(a)
                .map_err(|e| ServerError::Config(format!("admin_listen {a}: {e}")))?;
            let bound = l
                .local_addr()
                .map_err(|e| ServerError::Config(format!("admin_listen {a}: {e}")))?;
            Some((l, bound))
        }
        None => None,
    };
    let admin_addr = admin.as_ref().map(|(_, a)| *a);
    let metrics = platform.config.metrics;
    // HTTPS on the listener itself (spec D50); the watcher lives as long as the server's
    // factory holds it.
    let tls = tls::ListenerTls::from_config(&platform.config)?;
    let watcher = tls.as_ref().map(|(_, w)| {
        w.watch();
        w.clone()
    });
    // HSTS whenever citizens reach the platform over https (spec D50): one year, this host.
    let hsts = platform.config.public_url.starts_with("https://");
    let data = web::Data::from(platform);
    let server = HttpServer::new(move || {
        let _keep = watcher.clone();
        App::new()
            .app_data(data.clone())
            .app_data(citizen.clone())
            .wrap(actix_web::middleware::Condition::new(
                hsts,
                actix_web::middleware::DefaultHeaders::new().add((
                    actix_web::http::header::STRICT_TRANSPORT_SECURITY,
                    "max-age=31536000",
                )),
            ))
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service;
                let seen = ops::Seen::of(&req);
                let on_admin = admin_addr.map(|a| req.app_config().local_addr() == a);
                let ops_path = ops::PATHS.contains(&req.path());
                let misplaced = match on_admin {
                    None => false,
                    Some(true) => !ops_path,
                    Some(false) => ops_path,
                };
                let call = if misplaced {
                    Err(req.into_response(HttpResponse::NotFound().finish()))
                } else {
                    Ok(srv.call(req))
                };
                async move {
                    let res = match call {
                        Err(r) => r.map_into_right_body(),
                        Ok(f) => f.await?.map_into_left_body(),
                    };
                    seen.answered(&res);
                    Ok(res)
                }
            })
            .configure(configure)
            .configure(|cfg| ops::configure(cfg, metrics))
            .configure(|cfg| {
                if let Some(c) = &sandbox_clock {
                    sandbox::configure(cfg, c.clone());
                }
            })
    })
    .on_connect(tls::on_connect)
    .workers(workers)
    .max_connections(cap.per_worker);
    let mut srv = match tls {
        Some((acceptor, _)) => server.listen_openssl(listener, acceptor),
        None => server.listen(listener),
    }
    .map_err(|e| ServerError::Config(format!("listen: {e}")))?;
    if let Some((l, _)) = admin {
        srv = srv
            .listen(l)
            .map_err(|e| ServerError::Config(format!("admin_listen: {e}")))?;
    }
    Ok(srv.run())
}

/// A server running in the background on an ephemeral port of 127.0.0.1 (tests, examples, benches).
#[derive(Debug)]
pub struct Spawned {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Stops it.
    pub handle: ServerHandle,
    /// `http://127.0.0.1:{port}` (`https://` when the configuration sets `tls_cert`).
    pub url: String,
}

/// Starts `platform` on 127.0.0.1 with an ephemeral port in the current actix/tokio runtime,
/// with its DP heartbeat task ([`crate::engine::heartbeat::spawn`]).
pub fn spawn(platform: Arc<Platform>) -> ServerResult<Spawned> {
    spawn_with(platform, None)
}

/// [`spawn`] with the sandbox clock hook (see [`server_with`]).
pub fn spawn_with(
    platform: Arc<Platform>,
    sandbox_clock: Option<crate::clock::OffsetClock>,
) -> ServerResult<Spawned> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| ServerError::Config(format!("bind: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Config(format!("bind: {e}")))?;
    let scheme = platform.config.listen_scheme();
    let srv = server_with(platform.clone(), listener, sandbox_clock)?;
    let handle = srv.handle();
    actix_web::rt::spawn(srv);
    // The DP heartbeat (§9.4), as `mydata serve` runs it.
    crate::engine::heartbeat::spawn(platform);
    Ok(Spawned {
        addr,
        handle,
        url: format!("{scheme}://{addr}"),
    })
}
