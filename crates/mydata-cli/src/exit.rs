//! Exit status of every command (spec sp-developers.md §4, README "Exit status"): 0 success,
//! 1 a verification or runtime failure, 2 a usage error.
//!
//! A command returns `Ok(status)` when it reached a verdict (a verified package: 0, a failed
//! check: 1), and `Err` when it could not go on; the error's type says which: [`Runtime`] (and
//! I/O, storage and upstream errors) exits 1, anything else (a refused flag or value, a
//! configuration that cannot work, clap's own errors) exits 2.

use std::error::Error;
use std::fmt;

use mydata_server::error::ServerError;

/// A failure while doing what was asked (a file that cannot be read, an address in use, a
/// platform that does not answer): exit status 1. The message names what failed.
#[derive(Debug)]
pub struct Runtime(pub String);

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Runtime {}

/// A [`Runtime`] error as the command layer's boxed error.
pub fn runtime(msg: impl Into<String>) -> Box<dyn Error> {
    Box::new(Runtime(msg.into()))
}

/// The exit status of a command that failed with `e`.
pub fn status_of(e: &(dyn Error + 'static)) -> i32 {
    if e.is::<Runtime>() || e.is::<std::io::Error>() {
        return 1;
    }
    if let Some(s) = e.downcast_ref::<ServerError>() {
        return match s {
            ServerError::Storage(_) | ServerError::Upstream(_) | ServerError::Internal(_) => 1,
            _ => 2,
        };
    }
    2
}

/// Whether `e` is a write to a closed standard output (`mydata … | head`): not an error, the
/// reader has what it wanted.
pub fn is_broken_pipe(e: &(dyn Error + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A conformance suite's end: the summary on standard output, JUnit XML to `junit` when given,
/// and the exit status (0 when no check failed, 1 otherwise).
pub fn report(
    report: &mydata_conformance::report::Report,
    junit: Option<&std::path::Path>,
) -> Result<i32, Box<dyn Error>> {
    {
        use std::io::Write as _;
        write!(std::io::stdout().lock(), "{}", report.summary())?;
    }
    if let Some(path) = junit {
        std::fs::write(path, report.junit_xml())
            .map_err(|e| runtime(format!("--junit {}: {e}", path.display())))?;
    }
    Ok(if report.passed() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let usage: Box<dyn Error> = "give --out".into();
        assert_eq!(status_of(usage.as_ref()), 2);
        assert_eq!(status_of(runtime("x: not a directory").as_ref()), 1);
        let io: Box<dyn Error> = Box::new(std::io::Error::other("disk"));
        assert_eq!(status_of(io.as_ref()), 1);
        let st: Box<dyn Error> = Box::new(ServerError::Storage("locked".into()));
        assert_eq!(status_of(st.as_ref()), 1);
        let inv: Box<dyn Error> = Box::new(ServerError::Invalid("return_url".into()));
        assert_eq!(status_of(inv.as_ref()), 2);
        let bp: Box<dyn Error> = Box::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(bp.as_ref()));
        assert!(!is_broken_pipe(io.as_ref()));
    }
}
