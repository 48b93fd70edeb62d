//! Figures and the table.

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "a median of no values");
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs of a cell: 3 at every size. One run at 100k (as before 2026-12-01) swung a cell by
/// up to 1.8× between two full runs on the 2-core machine.
pub(crate) fn reps(_n: usize) -> usize {
    3
}

pub(crate) fn size_label(n: usize) -> String {
    if n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

pub(crate) fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn micros(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub(crate) fn verdict(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "met".into(),
        Some(false) => "**not met**".into(),
        None => "—".into(),
    }
}

/// Whether a per-item figure stays linear: largest size / smallest size ≤ [`LINEAR_GROWTH`].
pub(crate) fn growth(values: &[f64]) -> Option<f64> {
    match (values.first(), values.last()) {
        (Some(&a), Some(&b)) if values.len() > 1 && a > 0.0 => Some(b / a),
        _ => None,
    }
}

/// One group of figures: a Markdown heading, a note and a table.
pub(crate) struct Section {
    pub(crate) title: String,
    pub(crate) note: String,
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Section {
    pub(crate) fn new(title: &str, note: &str, header: Vec<String>) -> Section {
        Section {
            title: title.into(),
            note: note.into(),
            header,
            rows: Vec::new(),
        }
    }

    pub(crate) fn print(&self) {
        println!("## {}\n", self.title);
        if !self.note.is_empty() {
            println!("{}\n", self.note);
        }
        if self.header.is_empty() {
            return;
        }
        println!("| {} |", self.header.join(" | "));
        println!("|{}", "---|".repeat(self.header.len()));
        for row in &self.rows {
            println!("| {} |", row.join(" | "));
        }
        println!();
    }
}

/// A header: the leading columns, one per size, then the trailing ones.
pub(crate) fn header(lead: &[&str], sizes: &[usize], tail: &[&str]) -> Vec<String> {
    let mut h: Vec<String> = lead.iter().map(|s| s.to_string()).collect();
    h.extend(sizes.iter().map(|&n| size_label(n)));
    h.extend(tail.iter().map(|s| s.to_string()));
    h
}

/// A row: the leading cells, the figures, then the trailing cells.
pub(crate) fn row(lead: &[&str], figures: Vec<String>, tail: &[String]) -> Vec<String> {
    let mut r: Vec<String> = lead.iter().map(|s| s.to_string()).collect();
    r.extend(figures);
    r.extend(tail.iter().cloned());
    r
}
