//! Results of a suite run: one [`CheckResult`] per check, a readable summary and JUnit XML.

use std::time::Duration;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

/// What a check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The implementation behaved as the rule requires.
    Pass,
    /// The implementation broke the rule; the message says what was expected and what came.
    Fail(String),
    /// The check could not run here (a hook or a profile entry it needs is absent); the
    /// message says which.
    Skip(String),
}

impl Outcome {
    /// Whether this outcome is a failure.
    pub fn is_fail(&self) -> bool {
        matches!(self, Outcome::Fail(_))
    }
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Stable identifier, e.g. `platform.data.one_shot_ticket`.
    pub id: String,
    /// The rule checked, citing the spec, e.g. `protocol.md §9.5: a taken ticket answers 201`.
    pub rule: String,
    /// The conclusion.
    pub outcome: Outcome,
    /// How long the check took.
    pub duration: Duration,
}

/// The results of one suite run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The suite's name (`platform` or `sp`), used as the JUnit test-suite name.
    pub suite: String,
    /// The target checked (a URL).
    pub target: String,
    /// The results, in the order the checks ran.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// An empty report for `suite` run against `target`.
    pub fn new(suite: impl Into<String>, target: impl Into<String>) -> Self {
        Report {
            suite: suite.into(),
            target: target.into(),
            results: Vec::new(),
        }
    }

    /// Adds a result.
    pub fn push(
        &mut self,
        id: impl Into<String>,
        rule: impl Into<String>,
        outcome: Outcome,
        duration: Duration,
    ) {
        self.results.push(CheckResult {
            id: id.into(),
            rule: rule.into(),
            outcome,
            duration,
        });
    }

    /// Number of failed checks.
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_fail()).count()
    }

    /// Number of skipped checks.
    pub fn skipped(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skip(_)))
            .count()
    }

    /// Whether no check failed (skips do not fail a run).
    pub fn passed(&self) -> bool {
        self.failures() == 0
    }

    /// The result of the check `id`, if it ran.
    pub fn get(&self, id: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.id == id)
    }

    /// A readable summary: one line per check, then the totals.
    pub fn summary(&self) -> String {
        let mut out = format!("conformance {} against {}\n", self.suite, self.target);
        for r in &self.results {
            let (tag, why) = match &r.outcome {
                Outcome::Pass => ("PASS", String::new()),
                Outcome::Fail(m) => ("FAIL", format!("\n       {m}")),
                Outcome::Skip(m) => ("SKIP", format!("\n       {m}")),
            };
            out.push_str(&format!(
                "  {tag}  {:<44} {}{why}\n",
                r.id,
                r.rule.lines().next().unwrap_or("")
            ));
        }
        let total = self.results.len();
        out.push_str(&format!(
            "{} checks: {} passed, {} failed, {} skipped\n",
            total,
            total - self.failures() - self.skipped(),
            self.failures(),
            self.skipped()
        ));
        out
    }

    /// The report as JUnit XML (one `<testsuite>` inside `<testsuites>`; a failed check is a
    /// `<failure>`, a skipped one `<skipped>`), as CI systems read it.
    pub fn junit_xml(&self) -> String {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        let total_secs: f64 = self.results.iter().map(|r| r.duration.as_secs_f64()).sum();
        let tests = self.results.len().to_string();
        let failures = self.failures().to_string();
        let skipped = self.skipped().to_string();
        let time = format!("{total_secs:.3}");
        let name = format!("mydata-conformance.{}", self.suite);
        // Writing into a Vec cannot fail; the results are ignored on purpose.
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        // <testsuites> and its single <testsuite> carry the same totals.
        let totals = [
            ("name", name.as_str()),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", "0"),
            ("skipped", skipped.as_str()),
            ("time", time.as_str()),
        ];
        for element in ["testsuites", "testsuite"] {
            let _ = w.write_event(Event::Start(
                BytesStart::new(element).with_attributes(totals),
            ));
        }
        let _ = w.write_event(Event::Start(BytesStart::new("properties")));
        let _ =
            w.write_event(Event::Empty(BytesStart::new("property").with_attributes([
                ("name", "target"),
                ("value", self.target.as_str()),
            ])));
        let _ = w.write_event(Event::End(BytesEnd::new("properties")));
        for r in &self.results {
            let t = format!("{:.3}", r.duration.as_secs_f64());
            let case = BytesStart::new("testcase").with_attributes([
                ("classname", name.as_str()),
                ("name", r.id.as_str()),
                ("time", t.as_str()),
            ]);
            let _ = w.write_event(Event::Start(case));
            let _ = w.write_event(Event::Start(BytesStart::new("system-out")));
            let _ = w.write_event(Event::Text(BytesText::new(&r.rule)));
            let _ = w.write_event(Event::End(BytesEnd::new("system-out")));
            match &r.outcome {
                Outcome::Pass => {}
                Outcome::Fail(m) => {
                    let first = m.lines().next().unwrap_or("");
                    let _ = w.write_event(Event::Start(
                        BytesStart::new("failure")
                            .with_attributes([("message", first), ("type", "conformance")]),
                    ));
                    let _ = w.write_event(Event::Text(BytesText::new(m)));
                    let _ = w.write_event(Event::End(BytesEnd::new("failure")));
                }
                Outcome::Skip(m) => {
                    let _ = w.write_event(Event::Empty(
                        BytesStart::new("skipped").with_attributes([("message", m.as_str())]),
                    ));
                }
            }
            let _ = w.write_event(Event::End(BytesEnd::new("testcase")));
        }
        let _ = w.write_event(Event::End(BytesEnd::new("testsuite")));
        let _ = w.write_event(Event::End(BytesEnd::new("testsuites")));
        let mut s = String::from_utf8(w.into_inner()).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("platform", "http://127.0.0.1:8080");
        r.push("a.pass", "rule A", Outcome::Pass, Duration::from_millis(5));
        r.push(
            "b.fail",
            "rule <B> & \"C\"",
            Outcome::Fail("expected 201, got 200 <oops>".into()),
            Duration::from_millis(7),
        );
        r.push(
            "c.skip",
            "rule C",
            Outcome::Skip("no clock hook".into()),
            Duration::ZERO,
        );
        r
    }

    #[test]
    fn counts_and_summary() {
        let r = sample();
        assert_eq!(r.failures(), 1);
        assert_eq!(r.skipped(), 1);
        assert!(!r.passed());
        let s = r.summary();
        assert!(s.contains("FAIL  b.fail"), "{s}");
        assert!(s.contains("3 checks: 1 passed, 1 failed, 1 skipped"), "{s}");
    }

    #[test]
    fn junit_is_escaped_and_counts() {
        let x = sample().junit_xml();
        assert!(
            x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
            "{x}"
        );
        assert!(
            x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""),
            "{x}"
        );
        assert!(
            x.contains("rule &lt;B&gt; &amp; &quot;C&quot;")
                || x.contains("rule &lt;B&gt; &amp; \"C\""),
            "{x}"
        );
        assert!(
            x.contains("message=\"expected 201, got 200 &lt;oops&gt;\""),
            "{x}"
        );
        assert!(x.contains("<skipped message=\"no clock hook\"/>"), "{x}");
        // Well-formed: every opened element closes, in order.
        let mut reader = quick_xml::Reader::from_str(&x);
        let mut depth = 0i32;
        loop {
            match reader.read_event().expect("well-formed JUnit XML") {
                Event::Start(_) => depth += 1,
                Event::End(_) => depth -= 1,
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(depth, 0);
    }
}
