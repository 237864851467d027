//! Drill results: one row per scenario of the verification matrix, rendered as a table,
//! JSON or JUnit XML (so CI systems show each row).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not run here, with the reason in `observed` (e.g. remote-skipped: the log is on
    /// another host). Never counted as passed.
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub expected: String,
    pub observed: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub target: String,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn push(&mut self, scenario: &str, expected: &str, observed: String, pass: bool) {
        self.rows.push(Row {
            scenario: scenario.into(),
            expected: expected.into(),
            observed,
            outcome: if pass { Outcome::Pass } else { Outcome::Fail },
        });
    }

    pub fn skip(&mut self, scenario: &str, expected: &str, why: &str) {
        self.rows.push(Row {
            scenario: scenario.into(),
            expected: expected.into(),
            observed: why.into(),
            outcome: Outcome::Skipped,
        });
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.rows.iter().filter(|r| r.outcome == outcome).count()
    }

    pub fn passed(&self) -> bool {
        self.count(Outcome::Fail) == 0
    }

    /// A fixed-width table for a terminal.
    pub fn table(&self) -> String {
        let width = |f: &dyn Fn(&Row) -> &str, title: &str| {
            self.rows
                .iter()
                .map(|r| f(r).chars().count())
                .chain([title.len()])
                .max()
                .unwrap_or(0)
        };
        let w1 = width(&|r| &r.scenario, "scenario");
        let w2 = width(&|r| &r.expected, "expected");
        let w3 = width(&|r| &r.observed, "observed").min(70);
        let mut out = format!(
            "{:<w1$}  {:<w2$}  {:<w3$}  result\n",
            "scenario", "expected", "observed"
        );
        out.push_str(&format!(
            "{}  {}  {}  ------\n",
            "-".repeat(w1),
            "-".repeat(w2),
            "-".repeat(w3)
        ));
        for row in &self.rows {
            let observed: String = row.observed.chars().take(70).collect();
            let result = match row.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skipped => "SKIP",
            };
            out.push_str(&format!(
                "{:<w1$}  {:<w2$}  {:<w3$}  {result}\n",
                row.scenario, row.expected, observed
            ));
        }
        out.push_str(&format!(
            "drill against {}: {} passed, {} failed, {} skipped\n",
            self.target,
            self.count(Outcome::Pass),
            self.count(Outcome::Fail),
            self.count(Outcome::Skipped)
        ));
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn junit(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"sealkit drill\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
            self.rows.len(),
            self.count(Outcome::Fail),
            self.count(Outcome::Skipped)
        );
        for row in &self.rows {
            out.push_str(&format!(
                "  <testcase classname=\"verification-matrix\" name=\"{}\">\n",
                esc(&row.scenario)
            ));
            let detail = format!("expected: {}; observed: {}", row.expected, row.observed);
            match row.outcome {
                Outcome::Pass => {
                    out.push_str(&format!("    <system-out>{}</system-out>\n", esc(&detail)))
                }
                Outcome::Fail => {
                    out.push_str(&format!("    <failure message=\"{}\"/>\n", esc(&detail)))
                }
                Outcome::Skipped => {
                    out.push_str(&format!("    <skipped message=\"{}\"/>\n", esc(&detail)))
                }
            }
            out.push_str("  </testcase>\n");
        }
        out.push_str("</testsuite>\n");
        out
    }
}
