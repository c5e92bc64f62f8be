//! placeholder: the matcher is being written; this type is its output contract.
use serde::{Deserialize, Serialize};

/// One registered work found inside a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// Id of the registered work (the id given to `works add`).
    pub work_id: String,
    /// Calibrated evidence score (higher is stronger); see `confident`.
    pub score: f64,
    /// Number of time-consistent hash hits supporting the match.
    pub hits: u32,
    /// Where the work sits in the submission (seconds).
    pub query_start_s: f64,
    pub query_end_s: f64,
    /// Which part of the reference recording it is (seconds).
    pub ref_start_s: f64,
    pub ref_end_s: f64,
    /// Reference seconds per submission second (>1: the submission plays faster).
    pub speed_factor: f64,
    /// Submission frequency / reference frequency (>1: pitched up).
    pub pitch_factor: f64,
    /// True when the score clears the confident threshold; weaker matches are
    /// still reported (policy flags them for human review).
    pub confident: bool,
}
