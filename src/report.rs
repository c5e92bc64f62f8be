//! Machine- and human-readable reports of identification results.

use serde::Serialize;

use crate::matcher::Match;

/// One line of `earmark identify --json`: a file and what was found in it.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub file: String,
    pub duration_s: Option<f64>,
    pub matches: Vec<Match>,
    pub error: Option<String>,
}

/// Formats seconds as `m:ss.s`.
pub fn clock(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    let minutes = (seconds / 60.0).floor();
    format!("{}:{:04.1}", minutes as u64, seconds - minutes * 60.0)
}

/// Human-readable lines for one file.
pub fn human(report: &FileReport) -> String {
    let mut out = String::new();
    match (&report.error, report.duration_s) {
        (Some(err), _) => out.push_str(&format!("{}: ERROR {err}\n", report.file)),
        (None, duration) => {
            let confident = report.matches.iter().filter(|m| m.confident).count();
            out.push_str(&format!(
                "{} ({}): {} match{}{}\n",
                report.file,
                clock(duration.unwrap_or(0.0)),
                confident,
                if confident == 1 { "" } else { "es" },
                match report.matches.len() - confident {
                    0 => String::new(),
                    weak => format!(", {weak} weak"),
                }
            ));
            for m in &report.matches {
                out.push_str(&format!(
                    "  {} {:<28} query {}–{}  ref {}–{}  score {:>4.0}  speed ×{:.3}  pitch ×{:.3}\n",
                    if m.confident { "MATCH" } else { "weak " },
                    m.work_id,
                    clock(m.query_start_s),
                    clock(m.query_end_s),
                    clock(m.ref_start_s),
                    clock(m.ref_end_s),
                    m.score,
                    m.speed_factor,
                    m.pitch_factor,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_formats() {
        assert_eq!(clock(0.0), "0:00.0");
        assert_eq!(clock(75.25), "1:15.2");
    }

    #[test]
    fn json_has_contract_fields() {
        let r = FileReport {
            file: "a.ogg".into(),
            duration_s: Some(1.0),
            matches: vec![],
            error: None,
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in ["file", "duration_s", "matches", "error"] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}
