//! Tables of the reports: Markdown and CSV rendering with stable number formatting, and
//! the verdict of a claim.

/// A verdict on a claim, by the rule stated under its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The measurement agrees with the claim by the stated rule.
    Holds,
    /// The measurement contradicts the claim by the stated rule.
    Fails,
    /// Neither (too few seeds, too wide intervals, or the rule's grey zone).
    Inconclusive,
}

impl Verdict {
    /// The word printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Fails => "fails",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// A number with 4 significant digits: fixed notation for `1e-3 <= |x| < 1e5`, scientific
/// otherwise; `-` for missing values. Deterministic (Rust's formatting is exact).
pub fn num(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if (1e-3..1e5).contains(&a) {
        let digits = 3 - a.log10().floor() as i32;
        format!("{:.*}", digits.max(0) as usize, x)
    } else {
        format!("{x:.3e}")
    }
}

/// [`num`] of an optional value, `-` when absent.
pub fn opt_num(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), num)
}

/// A full-precision number for CSV files (shortest round-trip form), empty when absent.
pub fn csv_num(x: Option<f64>) -> String {
    x.map_or_else(String::new, |v| format!("{v:?}"))
}

/// A table: a header and rows of cells.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// Rows (each as long as the header).
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with the given column names.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// GitHub Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("| {} |\n", self.header.join(" | ")));
        out.push_str(&format!(
            "|{}\n",
            self.header.iter().map(|_| "---|").collect::<String>()
        ));
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out
    }

    /// CSV (RFC 4180 quoting of cells with commas or quotes).
    pub fn csv(&self) -> String {
        let cell = |c: &String| {
            if c.contains(',') || c.contains('"') || c.contains('\n') {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        };
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            out.push_str(&r.iter().map(cell).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting_is_stable() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1.0), "1.000");
        assert_eq!(num(123.456), "123.5");
        assert_eq!(num(-0.012345), "-0.01235");
        assert_eq!(num(1.5e7), "1.500e7");
        assert_eq!(num(2.5e-5), "2.500e-5");
        assert_eq!(opt_num(None), "-");
        assert_eq!(csv_num(Some(0.1)), "0.1");
    }

    #[test]
    fn tables_render() {
        let mut t = Table::new(&["a", "b"]);
        t.push(vec!["1".into(), "x,y".into()]);
        assert_eq!(t.markdown(), "| a | b |\n|---|---|\n| 1 | x,y |\n");
        assert_eq!(t.csv(), "a,b\n1,\"x,y\"\n");
    }
}
